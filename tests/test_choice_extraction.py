"""Answer extraction from chat replies: each rule of the C-Eval and MMLU cascades, and first_capital."""

from __future__ import annotations

import pytest

from qwen_evals.core.errors import EvalError
from qwen_evals.scoring.choice_extraction import Extraction, extract_choice_en, extract_choice_zh, first_capital

# C-Eval: a fill-in-the-blank question whose stem the model tends to restate.
NET_Q = "关于传输层的面向连接服务的特性是____。"
NET = {
    "A": "既不保证可靠，也不保证按序交付",
    "B": "不保证可靠，但保证按序交付",
    "C": "保证可靠，但不保证按序交付",
    "D": "既保证可靠，也保证按序交付",
}
CAPITAL_Q = "中国的首都是____。"
CAPITAL = {"A": "上海", "B": "北京", "C": "广州", "D": "深圳"}
LAKE_Q = "____是我国最大的淡水湖。"
LAKE = {"A": "洞庭湖", "B": "鄱阳湖", "C": "太湖", "D": "洪泽湖"}
NESTED_Q = "下列说法正确的是____。"
NESTED = {"A": "可靠", "B": "保证可靠", "C": "不可靠", "D": "无法判断"}
ANIMAL_Q = "以下哪种动物属于哺乳动物"
ANIMAL = {"A": "鲨鱼", "B": "青蛙", "C": "鲸鱼。", "D": "鸡"}

ZH_CASES = [
    # (a) choice cue: 选/选择/选定, or 答案/选项 … 是/为/：/】, followed by the letter and a delimiter
    ("答案是：C。", NET_Q, NET, "C", "strict", "choice_cue"),
    ("我选择B选项", NET_Q, NET, "B", "strict", "choice_cue"),
    ("正确答案为 D", NET_Q, NET, "D", "strict", "choice_cue"),
    ("应该选A。", NET_Q, NET, "A", "strict", "choice_cue"),
    ("【答案】B", NET_Q, NET, "B", "strict", "choice_cue"),
    ("B项不正确，所以答案是C", NET_Q, NET, "C", "strict", "choice_cue"),
    # the negated cue 答案不是A is skipped; the later 选B is taken
    ("答案不是A，应该选B", NET_Q, NET, "B", "strict", "choice_cue"),
    # the restated stem becomes 答案是 and the restated option its letter: "答案是D"
    (
        "关于传输层的面向连接服务的特性是既保证可靠，也保证按序交付",
        NET_Q,
        NET,
        "D",
        "strict",
        "choice_cue",
    ),
    ("中国的首都是北京。", CAPITAL_Q, CAPITAL, "B", "strict", "choice_cue"),
    # (b) correct cue: letter, optional 选项/项, then 正确/对的/符合, not negated
    ("A选项正确", NET_Q, NET, "A", "strict", "correct_cue"),
    ("B项符合题意。", NET_Q, NET, "B", "strict", "correct_cue"),
    ("A选项不正确，B选项正确", NET_Q, NET, "B", "strict", "correct_cue"),
    # 对应 ("corresponds to") is no cue, 是对的 is
    ("A选项对应的说法不对，C是对的。", NET_Q, NET, "C", "strict", "correct_cue"),
    # faithful to Qwen: this rule has no Latin-word guard, so the A of "DNA" before 正确 fires it
    ("这道题考查DNA复制，正确的是C", NET_Q, NET, "A", "strict", "correct_cue"),
    # (c) the reply opens with the letter, optionally in brackets, then punctuation or the end
    ("(A) 因为面向连接的服务既不保证可靠……", NET_Q, NET, "A", "strict", "leading_letter"),
    ("C. 这是因为面向连接的服务需要建立连接", NET_Q, NET, "C", "strict", "leading_letter"),
    ("（B）", NET_Q, NET, "B", "strict", "leading_letter"),
    ("D", NET_Q, NET, "D", "strict", "leading_letter"),
    # the clause after the blank is deleted, the restated option becomes "B"
    ("鄱阳湖是我国最大的淡水湖", LAKE_Q, LAKE, "B", "strict", "leading_letter"),
    # (d) the first capital A-D that is not part of a Latin word
    ("根据题意，应该是D", NET_Q, NET, "D", "fallback", "first_letter"),
    ("这道题考查的是DNA的半保留复制，应该是C", NET_Q, NET, "C", "fallback", "first_letter"),
    ("首都当然是北京", CAPITAL_Q, CAPITAL, "B", "fallback", "first_letter"),
    # option text with its final 。 stripped before matching
    ("我认为是鲸鱼", ANIMAL_Q, ANIMAL, "C", "fallback", "first_letter"),
    # longest option first: 保证可靠 -> B, not 保证A
    ("应当保证可靠", NESTED_Q, NESTED, "B", "fallback", "first_letter"),
    # fuzzy: no letter anywhere, the closest option text wins
    ("既保证可靠又保证按序交付", NET_Q, NET, "D", "fuzzy", "fuzzy"),
    ("既不可靠，也不按序", NET_Q, NET, "A", "fuzzy", "fuzzy"),
    ("我觉得是北平", CAPITAL_Q, CAPITAL, "B", "fuzzy", "fuzzy"),
    # nothing to read
    ("", NET_Q, NET, None, "unparsed", "none"),
    ("  \n", NET_Q, NET, None, "unparsed", "none"),
]

CAPITALS = {"A": "Paris", "B": "London", "C": "Berlin", "D": "Madrid"}
TREND = {"A": "It increases.", "B": "It decreases.", "C": "It stays the same.", "D": "It oscillates."}
CELL = {"A": "the cell", "B": "the cell membrane", "C": "the nucleus", "D": "the cell wall"}
ORGANELLE = {"A": "mitochondria", "B": "nucleus", "C": "ribosome", "D": "golgi apparatus"}

EN_CASES = [
    # (a) choice cue: "choose", or "answer"/"choice" … is/:/be, not negated, then the letter
    ("The answer is B.", CAPITALS, "B", "strict", "choice_cue"),
    ("I would choose (C)", CAPITALS, "C", "strict", "choice_cue"),
    ("The correct answer is: D", CAPITALS, "D", "strict", "choice_cue"),
    ("Answer: C", CAPITALS, "C", "strict", "choice_cue"),
    ("B is not correct; the answer is A", CAPITALS, "A", "strict", "choice_cue"),
    # "the answer is not A" is skipped; the later "choose C" is taken
    ("The answer is not A, so I choose C.", CAPITALS, "C", "strict", "choice_cue"),
    # the article "A" at the start does not win over the cue later on
    ("A good way to see this is to recall the capitals, so the answer is D.", CAPITALS, "D", "strict", "choice_cue"),
    # the quoted option text becomes its letter: "The answer is A."
    ("The answer is Paris.", CAPITALS, "A", "strict", "choice_cue"),
    # (b) correct cue: letter … correct/right, not negated
    ("Option B is correct.", CAPITALS, "B", "strict", "correct_cue"),
    ("D is right because Madrid is the capital of Spain.", CAPITALS, "D", "strict", "correct_cue"),
    ("A is not correct, but C is correct.", CAPITALS, "C", "strict", "correct_cue"),
    # (c) the reply opens with the bare letter, then . , : or the end
    ("A. Paris", CAPITALS, "A", "strict", "leading_letter"),
    ("C", CAPITALS, "C", "strict", "leading_letter"),
    ("D: Madrid", CAPITALS, "D", "strict", "leading_letter"),
    # (d) the first capital A-D that is not part of a Latin word
    ("I think it is probably C", CAPITALS, "C", "fallback", "first_letter"),
    ("Both DNA and CO2 are irrelevant here, so I'd go with B", CAPITALS, "B", "fallback", "first_letter"),
    ("If A=3 then the sum is D", CAPITALS, "D", "fallback", "first_letter"),
    # option text matched in any case
    ("I believe it's paris", CAPITALS, "A", "fallback", "first_letter"),
    # option text with its final "." stripped before matching
    ("It decreases over time", TREND, "B", "fallback", "first_letter"),
    # longest option first: "the cell membrane" -> B, not "A membrane"
    ("It is the cell membrane.", CELL, "B", "fallback", "first_letter"),
    # fuzzy: no letter anywhere, the closest option text wins
    ("the powerhouse is the mitochondrion", ORGANELLE, "A", "fuzzy", "fuzzy"),
    ("it's the golgi body", ORGANELLE, "D", "fuzzy", "fuzzy"),
    # nothing to read
    ("", CAPITALS, None, "unparsed", "none"),
    (" \t\n", CAPITALS, None, "unparsed", "none"),
]

FIRST_CAPITAL_CASES = [
    ("B", "B"),
    ("答案：C", "C"),
    ("the answer is B", "B"),
    # any uppercase character counts, as in OpenCompass; outside A-D it is simply wrong
    ("I think it is A", "I"),
    ("Ｂ", "Ｂ"),
]


@pytest.mark.parametrize(("response", "question", "options", "answer", "status", "rule"), ZH_CASES)
def test_extract_choice_zh(response, question, options, answer, status, rule):
    assert extract_choice_zh(response, question, options) == Extraction(answer, status, rule)


@pytest.mark.parametrize(("response", "options", "answer", "status", "rule"), EN_CASES)
def test_extract_choice_en(response, options, answer, status, rule):
    assert extract_choice_en(response, options) == Extraction(answer, status, rule)


@pytest.mark.parametrize(("response", "answer"), FIRST_CAPITAL_CASES)
def test_first_capital(response, answer):
    assert first_capital(response) == Extraction(answer, "strict", "first_capital")


@pytest.mark.parametrize("response", ["", "答案是乙", "only lowercase here"])
def test_first_capital_none(response):
    assert first_capital(response) == Extraction(None, "unparsed", "none")


def test_option_order_does_not_matter():
    reversed_options = dict(reversed(list(NESTED.items())))
    expected = Extraction("B", "fallback", "first_letter")
    assert extract_choice_zh("应当保证可靠", NESTED_Q, reversed_options) == expected
    assert extract_choice_en("It is the cell membrane.", dict(reversed(list(CELL.items())))) == expected


def test_single_letter_option_texts_do_not_rewrite_the_answer_letter():
    # MMLU electrical_engineering/115: options L, R, 1/C, C; gold C.
    options = {"A": "L", "B": "R", "C": "1/C", "D": "C"}
    assert extract_choice_en("C", options) == Extraction("C", "strict", "leading_letter")
    assert extract_choice_en("The answer is 1/C.", options).answer == "C"


def test_qwens_rewrite_of_single_letter_options_is_an_option():
    options = {"A": "Error", "B": "a", "C": "b", "D": "c"}  # MMLU high_school_computer_science/65, gold D
    for letter in "ABC":  # Qwen's chain a->B->C->D turns every one of these replies into D
        reply = f"The answer is {letter}."
        assert extract_choice_en(reply, options).answer == letter
        assert extract_choice_en(reply, options, rewrite_single_letters=True).answer == "D"


def test_the_single_letter_counts_in_the_docstring_hold_on_the_data(shared_data):
    """39 MMLU test questions have a one-letter option; on 7 the two rules read "The answer is X." differently,
    on 3 for the gold letter (qwen_evals/scoring/choice_extraction.py, `_replaceable`)."""
    import re

    from qwen_evals.tasks.mmlu import MMLU

    task = MMLU("chat_0shot", "test", str(shared_data / "mmlu"))
    one_letter, differ, gold_differs = [], [], []
    for sample in task.load():
        question = sample.metadata["question"]
        if not any(re.fullmatch(r"[A-Za-z]", text.strip()) for text in question.options.values()):
            continue
        one_letter.append(sample.id)
        readings = {
            letter: (extract_choice_en(f"The answer is {letter}.", question.options).answer,
                     extract_choice_en(f"The answer is {letter}.", question.options, rewrite_single_letters=True).answer)
            for letter in "ABCD"
        }  # fmt: skip
        if any(ours != qwens for ours, qwens in readings.values()):
            differ.append(f"{question.subject}/{question.index}")
        if len(set(readings[question.answer])) > 1:
            gold_differs.append(f"{question.subject}/{question.index}")
    assert len(task.load()) == 14042 and len(one_letter) == 39
    assert differ == ["college_chemistry/70", "college_physics/25", "college_physics/71", "electrical_engineering/115",
                      "formal_logic/50", "high_school_computer_science/65", "high_school_physics/47"]  # fmt: skip
    assert gold_differs == ["college_physics/71", "electrical_engineering/115", "formal_logic/50"]
    qwens = MMLU("chat_0shot", "test", str(shared_data / "mmlu"), subjects=["formal_logic"], option_rewrite="qwen")
    [formal_logic_50] = [s.metadata["question"] for s in qwens.load() if s.id.endswith("/50")]
    assert qwens.extract_chat_0shot("The answer is B.", formal_logic_50).answer == "C"  # gold B, as Qwen reads it
    assert task.extract_chat_0shot("The answer is B.", formal_logic_50).answer == "B"
    assert qwens.describe()["option_rewrite"] == "qwen"
    with pytest.raises(EvalError, match="task.option_rewrite='all' is not one of"):
        MMLU("chat_0shot", "test", str(shared_data / "mmlu"), option_rewrite="all")
