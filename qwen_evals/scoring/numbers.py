"""Numbers in free text, for math word problems (GSM8K).

Two readings of a reply, reported side by side:

- `strict_answer`: only the protocol's own answer cue, "The answer is N" (the
  few-shot exemplars' closing line) or "#### N" (GSM8K's gold format). The last
  cue in the text wins. A reply without a cue is unparsed.
- `last_number`: the last number anywhere in the text, the way Qwen's current
  GSM8K script reads replies (QwenLM/Qwen eval/evaluate_chat_gsm8k.py since
  e8e1596): an optional minus sign, thousands separators and decimals.

Both return the number as a `Decimal`, so "1,000", "1000" and "1000.00" are the
same answer; `same_number` compares with Qwen's absolute tolerance of 1e-4.

A third reading, `last_digit_run`, is the rule of Qwen's scripts at the card's
version (protocols.md, GSM8K, versions A and B): the last run of digits, as
text, for the reply and the gold alike ("1,000" reads as "000", "-3" as "3").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

# A minus sign counts only where it cannot be a hyphen or a subtraction:
# "-5" and "= -5" are negative, "3-5" ends in the number 5. Thousands groups
# need exactly three digits each ("1,000" yes; "1,2" is two numbers).
NUMBER = r"(?:(?<![\w.])[-\u2212])?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?"
NUMBER_RE = re.compile(NUMBER)
DIGIT_RUN_RE = re.compile(r"\d+")
STRICT_RE = re.compile(rf"(?:(?i:the answer is)|####)\s*:?\s*\$?\s*({NUMBER})")
TOLERANCE = Decimal("1e-4")


@dataclass(frozen=True)
class NumberMatch:
    value: Decimal
    text: str  # as written in the reply, e.g. "1,000"

    @property
    def canonical(self) -> str:
        """The value without separators or trailing zeros: "1,000.50" -> "1000.5"."""
        return format_number(self.value)


def parse_number(text: str) -> Decimal | None:
    """The number a token such as "1,000", "-5", "$3.50" or "18." stands for, else None."""
    cleaned = text.strip().replace(",", "").replace("\u2212", "-").lstrip("$").rstrip(".")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def format_number(value: Decimal) -> str:
    """Plain decimal notation without trailing zeros (never "1E+3")."""
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def _match(text: str) -> NumberMatch:
    value = parse_number(text)
    assert value is not None, text  # NUMBER only matches parseable text
    return NumberMatch(value, text)


def strict_answer(text: str) -> NumberMatch | None:
    """The number after the last "The answer is" / "####" cue."""
    found = list(STRICT_RE.finditer(text))
    return _match(found[-1].group(1)) if found else None


def last_number(text: str) -> NumberMatch | None:
    """The last number in the text."""
    found = list(NUMBER_RE.finditer(text))
    return _match(found[-1].group(0)) if found else None


def same_number(a: Decimal | None, b: Decimal | None) -> bool:
    return a is not None and b is not None and abs(a - b) <= TOLERANCE


def last_digit_run(text: str) -> str | None:
    """The last run of digits in the text, signs, separators and decimals ignored."""
    found = DIGIT_RUN_RE.findall(text)
    return found[-1] if found else None
