"""Reading an agent's reply (explanation, then code after `Answer:`) and scoring it as transformers 4.31 did."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qwen_evals.tasks.hfagent.tools import tools_in_code

REPLY_PREFIX = "I will use the following "
SPLIT_TOKEN = "Answer:"
FENCE_OPENINGS = ("```", "```py", "```python")


@dataclass(frozen=True)
class AgentReply:
    explanation: str
    code: str
    status: str
    """"answer" (one `Answer:`), "multiple_answers" (split at the first) or "no_answer"."""


def set_score(found: set[str], expected: set[str]) -> float:
    if found == expected:
        return 1.0
    return max(0.0, 1.0 - 0.25 * len(expected - found) - 0.25 * len(found - expected))


def _contains(values: list[Any], value: Any) -> bool:
    try:
        return any(value == v for v in values)
    except RecursionError:
        return False


def code_score(result: Any, references: list[Any]) -> float:
    if _contains(references, result):
        return 1.0
    if isinstance(result, dict) and any(_contains(references, v) for v in list(result.values())):
        return 0.75
    return 0.3


def expected_tools(result: Any, references: list[Any], answers: tuple[str, ...]) -> set[str]:
    """The tools of the reference program the agent matched (4.31's get_theoretical_tools)."""
    if len(answers) == 1:
        return tools_in_code(answers[0])
    if isinstance(result, dict):
        for reference, answer in zip(references, answers):
            if _contains(list(result.values()), reference):
                return tools_in_code(answer)
    for reference, answer in zip(references, answers):
        if _contains([result], reference):
            return tools_in_code(answer)
    return tools_in_code(answers[0])


def parse_reply(reply: str, stop: tuple[str, ...] = ()) -> AgentReply:
    """Explanation and code of a run-mode reply (4.31's clean_code_for_run)."""
    for s in stop:
        if s and reply.endswith(s):
            reply = reply[: -len(s)]
    text = REPLY_PREFIX + reply
    explanation, found, code = text.partition(SPLIT_TOKEN)
    if not found:
        return AgentReply(explanation.strip(), "", "no_answer")
    status = "multiple_answers" if SPLIT_TOKEN in code else "answer"
    lines = code.strip().split("\n")
    if lines[0] in FENCE_OPENINGS:
        lines = lines[1:]
    if lines and lines[-1] == "```":
        lines = lines[:-1]
    return AgentReply(explanation.strip(), "\n".join(lines), status)


def oracle_reply(answer: str) -> str:
    """What a perfect agent writes after "I will use the following": its tools, then the program."""
    names = sorted(tools_in_code(answer), key=answer.index)
    listing = ", ".join(f"`{n}`" for n in names)
    noun = "tool" if len(names) == 1 else "tools"
    return f"{noun}: {listing}.\n\n{SPLIT_TOKEN}\n```py\n{answer}\n```"
