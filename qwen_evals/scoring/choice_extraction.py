"""Which of the options A-D a chat model chose, read from its free-text reply.

`extract_choice_en` (MMLU) and `extract_choice_zh` (C-Eval) reproduce the answer
extraction of Qwen's chat 0-shot evaluation scripts for Qwen-7B-Chat,
QwenLM/Qwen eval/evaluate_chat_mmlu.py and eval/evaluate_chat_ceval.py at commit
4864f7b27849398c975be8ea06024f0e313fc7f4 (2023-08-25): the same pre-processing,
the same regex cascade in the same order, and the same `thefuzz` fallback, so a
reply gets the letter those scripts would give it. `first_capital` is
OpenCompass's `first_capital_postprocess`, used for the chat 5-shot protocol.

Each result also says how the letter was found: "strict" for an explicit cue or
a reply that opens with the letter, "fallback" for the first standalone letter,
"fuzzy" for the closest option text, "unparsed" when there was nothing to read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from thefuzz import process

from qwen_evals.core.types import Extraction

UNPARSED = Extraction(None, "unparsed", "none")

# Each pattern captures the letter as group 1. The [^ABCD]{m,n}? gaps keep a cue
# from reaching across another letter; the n't/not and 不/非 look-aheads reject
# negated cues ("the answer is not", "答案不是"). Written with re.VERBOSE, so
# whitespace and comments outside character classes are not part of a pattern.

# "The answer is B" | "Answer: C" | "I would choose (C)"
EN_CHOICE_CUE = re.compile(
    r"""
    (?: [Cc]hoose
      | (?:[Aa]nswer|[Cc]hoice) (?![^ABCD]{0,20}?(?:n't|not))
        [^ABCD]{0,10}?\b(?:|is|:|be)\b   # the empty branch lets any word boundary close the cue
    )
    [^ABCD]{0,20}?\b([ABCD])\b
    """,
    re.VERBOSE,
)
# "Option B is correct" | "B is right", unless "B is not correct"
EN_CORRECT_CUE = re.compile(
    r"""
    \b([ABCD])\b
    (?![^ABCD]{0,8}?(?:n't|not)[^ABCD]{0,5}?(?:correct|right))
    [^ABCD]{0,10}?\b(?:correct|right)\b
    """,
    re.VERBOSE,
)
# "A. Paris" | "C" | "B, because ..."
EN_LEADING_LETTER = re.compile(r"^([ABCD])(?:[.,:]|$)")

# "答案是：C。" | "选项为D" | "我选择B选项" | "应该选A"
ZH_CHOICE_CUE = re.compile(
    r"""
    (?: (?:选|选择|选定)[：:]?\s*
      | (?:答案|选项) (?![^ABCD]{0,10}?[不非][^ABCD]{0,10}?[是选为：:】])
        [^ABCD]{0,10}?[是选为：:】][^ABCD]{0,10}?
    )
    ([ABCD])(?:选项)?
    (?:[)）。.，,．、：:ABCD]|$)   # the letter must end there: punctuation, a further letter or the end
    """,
    re.VERBOSE,
)
# "A选项正确" | "B项符合题意" | "C是对的", unless "A选项不正确"
ZH_CORRECT_CUE = re.compile(
    r"""
    ([ABCD])(?:选?项)?
    (?![^ABCD]{0,4}?[不非][^ABCD]{0,4}?(?:正确|对[的，。：]|符合))
    [^ABCD]{0,4}?(?:正确|对[的，。：]|符合)   # 对 only as a word: "对应" (corresponds) is no cue
    """,
    re.VERBOSE,
)
# "(A) 因为……" | "C. 这是因为" | "D"
ZH_LEADING_LETTER = re.compile(r"^[(（]?([ABCD])(?:[。)）.，,．：:]|$)")

# Shared last resort: a capital A-D that is not part of a Latin word ("DNA", "CO2"
# do not count); "=" after it is excluded so that "A=..." (a variable) does not count.
FIRST_LETTER = re.compile(r"(?<![a-zA-Z])([ABCD])(?![a-zA-Z=])")

# (rule, status, pattern) in the order the scripts try them; the first hit wins.
Cascade = tuple[tuple[str, str, re.Pattern[str]], ...]
EN_CASCADE: Cascade = (
    ("choice_cue", "strict", EN_CHOICE_CUE),
    ("correct_cue", "strict", EN_CORRECT_CUE),
    ("leading_letter", "strict", EN_LEADING_LETTER),
    ("first_letter", "fallback", FIRST_LETTER),
)
ZH_CASCADE: Cascade = (
    ("choice_cue", "strict", ZH_CHOICE_CUE),
    ("correct_cue", "strict", ZH_CORRECT_CUE),
    ("leading_letter", "strict", ZH_LEADING_LETTER),
    ("first_letter", "fallback", FIRST_LETTER),
)


def _longest_first(options: Mapping[str, str]) -> list[tuple[str, str]]:
    """(letter, text) pairs, longest text first, ties in letter order.

    Longest first so that an option contained in a longer one ("可靠" in
    "保证可靠") cannot break the longer one's text up before it is replaced.
    """
    return sorted(sorted(options.items()), key=lambda item: len(item[1]), reverse=True)


def _replaceable(option_text: str, single_letters: bool = False) -> bool:
    """Whether an option text may be rewritten as its letter.

    Deliberate deviation from Qwen's scripts, which rewrite every option: an
    empty text would put the letter between every two characters, and a text
    that is a single Latin letter ("c" for the speed of light, "C" for a
    capacitance, "B" in a logic question) rewrites the answer letter itself, so
    a correct "C" is read as another option. `single_letters=True` rewrites those
    too, as Qwen's script does (MMLU `task.option_rewrite=qwen`).

    Counted on the MMLU test files (14,042 questions): 39 have an option that is
    one ASCII letter (after stripping spaces): abstract_algebra/16, /91;
    college_chemistry/70, /95; college_computer_science/11; college_mathematics/19,
    /80, /94; college_physics/25, /71, /78; conceptual_physics/155;
    electrical_engineering/115, /138; formal_logic/9, /50, /51; high_school_biology/54;
    high_school_chemistry/4, /182, /184; high_school_computer_science/65, /83, /97;
    high_school_mathematics/29, /215, /239; high_school_physics/30, /47, /54, /73,
    /117, /143; high_school_psychology/25; miscellaneous/302, /358, /621, /677;
    professional_medicine/169 (0-based data rows). On 7 of them the two rules read
    at least one of the replies "The answer is A." .. "The answer is D." differently
    (9 replies in all): college_chemistry/70 (B: Qwen A), college_physics/25 (B: Qwen D),
    college_physics/71 (C: Qwen B), electrical_engineering/115 (C: Qwen D, the reply
    becoming "The answeB is D."), formal_logic/50 (B: Qwen C),
    high_school_computer_science/65 (A, B and C: Qwen D, through the chain a->B->C->D
    and "The Dnswer is D.") and high_school_physics/47 (D: Qwen C). For the gold
    letter only 3 differ: college_physics/71, electrical_engineering/115 and
    formal_logic/50, where Qwen's rule marks a correct reply wrong. None in C-Eval.
    """
    if not option_text:
        return False
    return single_letters or not (len(option_text) == 1 and option_text.isascii() and option_text.isalpha())


def _letters_for_options_en(response: str, options: Mapping[str, str], single_letters: bool = False) -> str:
    """Replace each option text quoted in the reply (any case, final "." dropped) by its letter."""
    for letter, text in _longest_first(options):
        body = text.rstrip(".")
        if _replaceable(body, single_letters):
            response = re.sub(re.escape(body), letter, response, flags=re.IGNORECASE)
    return response


def _letters_for_options_zh(response: str, question: str, options: Mapping[str, str]) -> str:
    """C-Eval pre-processing: rewrite an echoed question stem as 答案是, then option texts as letters.

    The model often answers a fill-in-the-blank question by restating it:
    "…的特性是____。" gets "…的特性是既保证可靠，也保证按序交付", which becomes "答案是D".
    Parts of 4 characters or fewer are left alone, as they would also match unrelated text.
    """
    parts = question.rstrip("。").split("。")[-1].split("_")
    before_blank, after_blank = parts[0], parts[-1]  # the same clause when there is no blank
    if len(before_blank.strip()) > 4:
        response = response.replace(before_blank, "答案是")
    if len(after_blank.strip()) > 4:
        response = response.replace(after_blank, "")
    for letter, text in _longest_first(options):
        body = text.rstrip("。")
        if _replaceable(body):
            response = response.replace(body, letter)
    return response


def _closest_option(text: str, options: Mapping[str, str]) -> Extraction:
    """The option whose text is most similar to the reply; with equal texts, the first letter."""
    letters = sorted(options)
    texts = [options[letter] for letter in letters]
    best_text, _score = process.extractOne(text, texts)
    return Extraction(letters[texts.index(best_text)], "fuzzy", "fuzzy")


def _run_cascade(text: str, cascade: Cascade, options: Mapping[str, str]) -> Extraction:
    for rule, status, pattern in cascade:
        match = pattern.search(text)
        if match:
            return Extraction(match.group(1), status, rule)
    # As in Qwen's scripts: only when no letter was found, on the rewritten text,
    # and the best match is taken however poor it is.
    return _closest_option(text, options)


def extract_choice_en(response: str, options: Mapping[str, str], *, rewrite_single_letters: bool = False) -> Extraction:
    """MMLU chat 0-shot: the letter Qwen's evaluate_chat_mmlu.py reads from `response`.

    `rewrite_single_letters`: rewrite one-letter option texts too, as Qwen's script
    does (see `_replaceable` for the questions where this changes the reading).
    """
    if not response.strip():
        return UNPARSED
    rewritten = _letters_for_options_en(response, options, rewrite_single_letters)
    return _run_cascade(rewritten, EN_CASCADE, options)


def extract_choice_zh(response: str, question: str, options: Mapping[str, str]) -> Extraction:
    """C-Eval chat 0-shot: the letter Qwen's evaluate_chat_ceval.py reads from `response`."""
    if not response.strip():
        return UNPARSED
    return _run_cascade(_letters_for_options_zh(response, question, options), ZH_CASCADE, options)


def first_capital(response: str) -> Extraction:
    """OpenCompass `first_capital_postprocess`: the first uppercase character, whatever it is."""
    for char in response:
        if char.isupper():
            return Extraction(char, "strict", "first_capital")
    return UNPARSED
