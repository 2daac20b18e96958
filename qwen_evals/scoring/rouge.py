"""Rouge-L for Chinese text: on jieba words (LongBench's `rouge_zh_score`) and on characters.

Chinese has no spaces, so Rouge needs a segmentation first, and the choice
moves the score:
- `word`: jieba's accurate mode (`jieba.cut(text, cut_all=False)`), as LongBench
  scores VCSUM and DuReader. Punctuation marks are words; whitespace is not.
- `char`: every non-whitespace character, as many Chinese summarisation papers
  report it (comparable across segmenters).

Both are scored by Google's `rouge-score` (`rougeL`: longest common subsequence
over the whole text, F1 = 2PR / (P + R)), fed our units through a custom
tokenizer; text is not lower-cased or otherwise normalized.

LongBench's own number differs: it computes the F1 with the `rouge` package
(pltrdy, 1.0.1), whose Rouge-L is summary-level: both texts are split into
sentences at "." and lengths and the LCS union count *distinct* words (sets);
an exception (e.g. an empty prediction) scores 0. `rouge-score` counts every
occurrence, so texts that repeat words score differently (texts whose words are
all distinct score the same). The gap is large on real summaries: on the 26
VCSUM test meetings, another meeting's summary as the prediction scores 17.2
here and 8.3 with LongBench's scorer; the concatenated segment summaries score
35.3 and 38.8. `rouge_l_longbench` runs LongBench's scorer itself, for
comparisons with numbers produced by LongBench (the Qwen card's VCSUM).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from rouge_score import rouge_scorer, tokenizers

Unit = Literal["word", "char"]
UNITS: tuple[Unit, ...] = ("word", "char")


@dataclass(frozen=True)
class RougeL:
    precision: float
    recall: float
    f1: float


def jieba_words(text: str) -> list[str]:
    """jieba accurate-mode words, whitespace dropped (LongBench joins them with spaces, then splits)."""
    return [word for word in _jieba().cut(text, cut_all=False) if word.strip()]


def characters(text: str) -> list[str]:
    """Every character except whitespace."""
    return [char for char in text if not char.isspace()]


SEGMENTERS: dict[Unit, Callable[[str], list[str]]] = {"word": jieba_words, "char": characters}


def rouge_l(prediction: str, references: str | Sequence[str], unit: Unit = "word") -> RougeL:
    """Rouge-L of `prediction` against the best of `references` (highest F1).

    An empty prediction scores 0; references must be non-empty strings.
    """
    refs = [references] if isinstance(references, str) else list(references)
    if not refs or any(not isinstance(r, str) or not r.strip() for r in refs):
        raise ValueError("rouge_l needs at least one non-empty reference")
    score = _scorer(unit).score_multi(refs, prediction)["rougeL"]
    return RougeL(score.precision, score.recall, score.fmeasure)


@dataclass(frozen=True)
class LongBenchScore:
    f1: float
    error: str | None
    """Why the `rouge` package raised (LongBench then scores 0), e.g. "ValueError: Hypothesis is empty."."""


def rouge_l_longbench(prediction: str, references: str | Sequence[str]) -> LongBenchScore:
    """LongBench's `rouge_zh_score`, best over `references`: jieba words joined by spaces, `rouge.Rouge` Rouge-L F.

    Exceptions of the `rouge` package score 0 as in LongBench, and are reported.
    """
    refs = [references] if isinstance(references, str) else list(references)
    if not refs:
        raise ValueError("rouge_l_longbench needs at least one reference")
    hypothesis = " ".join(_jieba().cut(prediction, cut_all=False))
    scores = [_longbench_one(hypothesis, " ".join(_jieba().cut(r, cut_all=False))) for r in refs]
    return max(scores, key=lambda s: (s.f1, s.error is None))


def _longbench_one(hypothesis: str, reference: str) -> LongBenchScore:
    from rouge import Rouge

    try:
        return LongBenchScore(float(Rouge().get_scores([hypothesis], [reference], avg=True)["rouge-l"]["f"]), None)
    except Exception as error:  # noqa: BLE001 - LongBench's `except: return 0.0`, kept visible here
        return LongBenchScore(0.0, f"{type(error).__name__}: {error}")


class _Units(tokenizers.Tokenizer):
    """rouge-score's tokenizer interface over one of our segmenters."""

    def __init__(self, segment: Callable[[str], list[str]]) -> None:
        self.segment = segment

    def tokenize(self, text: str) -> list[str]:
        return self.segment(text)


@functools.cache
def _scorer(unit: Unit) -> rouge_scorer.RougeScorer:
    if unit not in SEGMENTERS:
        raise ValueError(f"unit must be one of {list(UNITS)}, got {unit!r}")
    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=_Units(SEGMENTERS[unit]))


@functools.cache
def _jieba():
    """jieba, imported on first use and quiet (it logs its dictionary loading to stderr)."""
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)
    return jieba
