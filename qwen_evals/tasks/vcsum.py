"""VCSUM (Wu et al., ACL 2023, arXiv:2305.05280): summarise a long Chinese meeting transcript.

Protocol: LongBench's (THUDM/LongBench `config/dataset2prompt.json`,
`dataset2maxlen.json`, `pred.py`, `metrics.py`), the most likely source of the
Qwen-7B-Chat card's Rouge-L 16.6; see ../shared/docs/protocols.md, VCSUM
section (Qwen has no VCSUM script, so this is inferred, not confirmed):
- `chat_0shot`: LongBench's prompt `PROMPT` with the transcript, as one user
  turn in the model's chat format; greedy, at most 512 new tokens, no stop string.
- Truncation: a transcript longer than the model can read keeps its first and
  last halves, counted in the model's own tokens (qwen_evals/scoring/truncation.py), so that
  the prompt fits `max_input_tokens` (default: the model's context length minus
  `max_new_tokens`). Each sample records whether and how much was cut; the
  summary reports the truncated fraction. The task needs the model's tokenizer
  for this: `bind_tokenizer` (the runner's job, qwen_evals.scoring.truncation.bind_model_tokenizer);
  unbound (fake backend), nothing is cut and truncation is reported as not measured.
- Metric: Rouge-L F1 on jieba words, best over the references, averaged over
  meetings (`rouge_l`, a fraction; x100 is LongBench's number), scored by
  `rouge-score`; `rouge_l_char` is the same on characters; `rouge_l_longbench`
  is LongBench's own scorer (pltrdy `rouge`, distinct-word counting), the one
  to compare with LongBench-produced numbers such as the card's (qwen_evals/scoring/rouge.py
  explains and measures the gap).

Data:
- `data_dir`: the original VCSum release (../shared/data/vcsum, see SOURCES.md).
  Each dev/test meeting's transcript is rebuilt from `short_<split>.txt`:
  segments `<meeting>_<k>` in order of k (k may skip a number), one line per paragraph
  `发言人<speaker id>：<sentences joined>`; the reference is `long_<split>.txt`'s
  `summary`. The rebuilt paragraph count must equal the last `eos_index` + 1.
  22 dev and 26 test meetings, not LongBench's 200.
- hub: LongBench's `vcsum` subset (`context`, `answers`; 200 meetings, split
  `test`), pinned by `revision`. Known problem: THUDM/LongBench is a loading-script
  dataset, which `datasets` >= 4 refuses; `hub_id` can name a Parquet copy.

Known deviations: LongBench truncates the raw prompt (instruction included) to
its per-model `max_length` and wraps the chat format around it afterwards; here
only the transcript is cut and the budget counts the whole model input. The
speaker labels are ours (LongBench's transcripts come from its own rebuild).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from qwen_evals.core.datafiles import read_jsonl
from qwen_evals.core.errors import EvalError
from qwen_evals.core.hub import HubResource, load_hub_dataset
from qwen_evals.core.metrics import Metric, mean_stderr
from qwen_evals.core.task import EvalProtocol, Task, protocol_table
from qwen_evals.core.types import Generate, Message, ModelTokenizer, Output, Request, Sample
from qwen_evals.scoring.rouge import rouge_l, rouge_l_longbench
from qwen_evals.scoring.truncation import Cut, keep_head_and_tail

HUB_ID = "THUDM/LongBench"
LOCAL_DATA = "data_dir=<dir with VCSum's files>"
HUB_SUBSET = "vcsum"
SPLITS = ("test", "dev")
PROMPT = "下面有一段会议记录，请你阅读后，写一段总结，总结会议的内容。\n会议记录：\n{context}\n\n会议总结："
"""LongBench's vcsum prompt (dataset2prompt.json)."""
SPEAKER_LINE = "发言人{speaker}：{text}"
FIT_ATTEMPTS = 4
"""Re-cuts allowed when joining the pieces merges tokens differently than counted."""


@dataclass(frozen=True)
class Meeting:
    id: str
    transcript: str
    references: tuple[str, ...]
    n_paragraphs: int | None = None  # data_dir only


@dataclass(frozen=True)
class Fit:
    """A sample's transcript as it goes into the prompt."""

    cut: Cut | None  # None: no tokenizer bound, the transcript goes in whole
    input_tokens: int | None  # the whole prompt, as the bound encoder counts it
    budget: int | None


# ---- data ------------------------------------------------------------------------------


def rebuild_transcripts(short_rows: list[tuple[str, dict[str, Any]]]) -> dict[str, tuple[str, int]]:
    """meeting id -> (transcript, paragraph count), from the segments of a `short_*` file."""
    segments: dict[str, dict[int, tuple[str, dict[str, Any]]]] = defaultdict(dict)
    for where, row in short_rows:
        meeting, _, number = str(row.get("id", "")).partition("_")
        if not meeting or not number.isdigit():
            raise EvalError(f"{where}: segment id {row.get('id')!r} is not '<meeting>_<segment number>'")
        if int(number) in segments[meeting]:
            raise EvalError(f"{where}: segment {row['id']!r} appears twice")
        segments[meeting][int(number)] = (where, row)
    out = {}
    for meeting, parts in segments.items():
        # Numbers may skip (dev 20 and 153, test 97 and 110 have no segment 2 or 3), yet the
        # paragraph counts match eos_index: the gaps are in the numbering, not the text.
        lines = [line for k in sorted(parts) for line in _segment_lines(*parts[k])]
        out[meeting] = ("\n".join(lines), len(lines))
    return out


def _segment_lines(where: str, row: dict[str, Any]) -> list[str]:
    context, speakers = row.get("context"), row.get("speaker")
    if not isinstance(context, list) or not isinstance(speakers, list) or len(context) != len(speakers):
        raise EvalError(f"{where} (segment {row.get('id')!r}): needs 'context' and 'speaker' lists of equal length")
    lines = []
    for paragraph, speaker in zip(context, speakers):
        if not isinstance(paragraph, list) or not all(isinstance(s, str) for s in paragraph):
            raise EvalError(f"{where} (segment {row.get('id')!r}): a paragraph is not a list of sentences")
        lines.append(SPEAKER_LINE.format(speaker=speaker, text="".join(paragraph)))
    return lines


def read_release(folder: Path, split: str) -> list[Meeting]:
    """The meetings of one split of the original VCSum files, transcripts rebuilt and checked."""
    transcripts = rebuild_transcripts(read_jsonl(folder / f"short_{split}.txt"))
    meetings = []
    for where, row in read_jsonl(folder / f"long_{split}.txt"):
        meeting = str(row.get("id", ""))
        where = f"{where} (meeting {meeting!r})"
        summary = row.get("summary")
        if not isinstance(summary, str) or not summary.strip():
            raise EvalError(f"{where} has no reference 'summary'")
        if meeting not in transcripts or not transcripts[meeting][0].strip():
            raise EvalError(f"{where}: empty transcript, no segments in short_{split}.txt")
        transcript, n_paragraphs = transcripts.pop(meeting)
        eos = row.get("eos_index")
        if not isinstance(eos, list) or not eos or n_paragraphs != eos[-1] + 1:
            raise EvalError(f"{where}: rebuilt {n_paragraphs} paragraphs, but eos_index ends at {eos and eos[-1]!r}")
        meetings.append(Meeting(meeting, transcript, (summary,), n_paragraphs))
    if transcripts:
        raise EvalError(
            f"{folder / f'short_{split}.txt'}: segments of meetings {sorted(transcripts)} not in long_{split}.txt"
        )
    return meetings


def parse_hub_row(index: int, row: dict[str, Any], where: str) -> Meeting:
    context, answers = row.get("context"), row.get("answers")
    if not isinstance(context, str) or not context.strip():
        raise EvalError(f"{where}: empty transcript ('context')")
    if isinstance(answers, str):
        answers = [answers]
    if not isinstance(answers, list) or not answers or any(not isinstance(a, str) or not a.strip() for a in answers):
        raise EvalError(f"{where}: missing reference summary ('answers')")
    return Meeting(str(row.get("_id") or index), context, tuple(answers))


# ---- the task ---------------------------------------------------------------------------


class VCSUM(Task):
    name = "vcsum"

    def __init__(
        self,
        protocol: str = "chat_0shot",
        split: str = "test",
        data_dir: str | None = None,
        hub_id: str = HUB_ID,
        revision: str = "main",
        max_new_tokens: int = 512,
        max_input_tokens: int | None = None,
    ) -> None:
        super().__init__(protocol)
        if split not in SPLITS:
            raise EvalError(f"task.split={split!r} is not a vcsum split; choose one of {list(SPLITS)}")
        if data_dir is None and split != "test":
            raise EvalError(
                f"task.split={split!r}: LongBench's vcsum on the hub has only 'test'; use data_dir= for dev"
            )
        if max_input_tokens is not None and max_input_tokens <= 0:
            raise EvalError(f"task.max_input_tokens={max_input_tokens} must be positive (or null: from the model)")
        self.split = split
        self.data_dir = Path(data_dir) if data_dir else None
        self.hub_id = hub_id
        self.revision = revision
        self.max_new_tokens = max_new_tokens
        self.max_input_tokens = max_input_tokens
        self.model: ModelTokenizer | None = None
        self._fits: dict[str, Fit] = {}

    def bind_model(self, model: ModelTokenizer) -> None:
        """Count and cut in the model's tokens: the whole prompt as the model reads it, chat format included."""
        self.model = model
        self._fits.clear()

    def hub_resources(self) -> list[HubResource]:
        return [] if self.data_dir else [HubResource("dataset", self.hub_id, LOCAL_DATA)]

    def describe(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "split": self.split,
            "source": str(self.data_dir) if self.data_dir else f"hub:{self.hub_id}/{HUB_SUBSET}@{self.revision}",
            "max_new_tokens": self.max_new_tokens,
            "input_budget": {
                "truncation": "keep head and tail halves of the transcript (LongBench)",
                "max_input_tokens": self.max_input_tokens,
                "budget_tokens": self._budget() if self.model is not None else None,
                "counted_with": "model prompt encoder (chat format included)" if self.model else None,
            },
            "metric": {
                "rouge_l": "rouge-score rougeL F1 on jieba words, best over references",
                "rouge_l_char": "rouge-score rougeL F1 on characters",
                "rouge_l_longbench": "LongBench rouge_zh_score (pltrdy rouge)",
                "versions": {name: _version(name) for name in ("rouge-score", "jieba", "rouge")},
            },
        }

    # ---- data --------------------------------------------------------------------

    def read_meetings(self) -> list[Meeting]:
        if self.data_dir is not None:
            return read_release(self.data_dir, self.split)
        rows = load_hub_dataset(self.hub_id, HUB_SUBSET, self.split, self.revision, LOCAL_DATA)
        return [parse_hub_row(i, dict(row), f"{self.hub_id} {HUB_SUBSET} row {i + 1}") for i, row in enumerate(rows)]

    def read_samples(self, limit: int | None = None) -> list[Sample]:
        meetings = self.read_meetings()[:limit]
        return [Sample(id=m.id, target=m.references[0], metadata={"meeting": m}) for m in meetings]

    # ---- prompts and truncation -----------------------------------------------------

    @staticmethod
    def messages(transcript: str) -> list[Message]:
        return [{"role": "user", "content": PROMPT.format(context=transcript)}]

    def _count(self, prompt: list[Message]) -> int:
        assert self.model is not None
        return len(self.model.encode_prompt(prompt))

    def _budget(self) -> int:
        """Tokens the whole prompt may take."""
        assert self.model is not None
        context = self.model.context_length
        if self.max_input_tokens is not None:
            if context and self.max_input_tokens + self.max_new_tokens > context:
                raise EvalError(
                    f"task.max_input_tokens={self.max_input_tokens} + task.max_new_tokens={self.max_new_tokens} "
                    f"exceeds the model's context of {context} tokens"
                )
            return self.max_input_tokens
        if not context:
            raise EvalError("vcsum: the model's context length is unknown; set task.max_input_tokens")
        if context <= self.max_new_tokens:
            raise EvalError(
                f"task.max_new_tokens={self.max_new_tokens} leaves no room in a context of {context}"
            )
        return context - self.max_new_tokens

    def fit(self, sample: Sample) -> Fit:
        """The sample's transcript cut to the budget (cached; computed once per sample)."""
        if sample.id in self._fits:
            return self._fits[sample.id]
        meeting: Meeting = sample.metadata["meeting"]
        if self.model is None:
            if self.max_input_tokens is not None:
                raise EvalError(
                    "task.max_input_tokens needs the model's tokenizer, and none was bound to the task "
                    "(the backend exposes no tokenizer, or the runner did not call bind_tokenizer)"
                )
            fit = Fit(None, None, None)
        else:
            budget = self._budget()
            frame = self._count(self.messages(""))
            room = budget - frame
            for _ in range(FIT_ATTEMPTS):
                if room <= 0:
                    raise EvalError(f"vcsum: an input budget of {budget} tokens leaves no room for the transcript "
                                    f"(the prompt without it takes {frame})")  # fmt: skip
                cut = keep_head_and_tail(meeting.transcript, self.model.tokenizer, room)
                total = self._count(self.messages(cut.text))
                if total <= budget:
                    break
                room -= total - budget  # joined into the prompt, the pieces took more tokens than counted apart
            else:
                raise EvalError(f"meeting {meeting.id!r}: could not fit the prompt into {budget} tokens")
            fit = Fit(cut, total, budget)
        self._fits[sample.id] = fit
        return fit

    # ---- the Task contract ----------------------------------------------------------

    def metrics(self) -> Sequence[Metric]:
        return (
            Metric("rouge_l", "rouge_l", description="rouge-score rougeL F1 on jieba words, best over references"),
            Metric("rouge_l_char", "rouge_l_char", description="rouge-score rougeL F1 on characters"),
            Metric("rouge_l_longbench", "rouge_l_longbench", headline=True,
                   description="LongBench rouge_zh_score (pltrdy rouge): the scorer behind the card's 16.6"),
            Metric("empty_output_rate", "empty_output", higher_is_better=False),
            Metric("truncated_fraction", "truncated", description="share of transcripts cut to fit the model"),
        )  # fmt: skip

    def score(self, sample: Sample, outputs: list[Output]) -> dict[str, Any]:
        meeting: Meeting = sample.metadata["meeting"]
        output = str(outputs[0])
        words, chars = rouge_l(output, meeting.references, "word"), rouge_l(output, meeting.references, "char")
        longbench = rouge_l_longbench(output, meeting.references)
        fit = self.fit(sample)
        cut = fit.cut
        return {
            "output": output,
            "target": meeting.references[0],
            "references": list(meeting.references),
            "rouge_l": words.f1,
            "rouge_l_precision": words.precision,
            "rouge_l_recall": words.recall,
            "rouge_l_char": chars.f1,
            "rouge_l_longbench": longbench.f1,
            "rouge_l_longbench_error": longbench.error,
            "empty_output": not output.strip(),
            "transcript_chars": len(meeting.transcript),
            "n_paragraphs": meeting.n_paragraphs,
            "input_tokens": fit.input_tokens,
            "transcript_tokens": cut.original_tokens if cut else None,
            "truncated": cut.truncated if cut else None,
            "head_tokens": cut.head_tokens if cut else None,
            "tail_tokens": cut.tail_tokens if cut else None,
            "dropped_tokens": cut.dropped_tokens if cut else None,
            "dropped_fraction": cut.dropped_tokens / cut.original_tokens if cut and cut.original_tokens else None,
        }

    def summarize(self, records: pd.DataFrame, metrics: dict[str, Any]) -> dict[str, Any]:
        measured = records["truncated"].notna().all()
        truncation: dict[str, Any] = {"measured": bool(measured)}
        if measured:
            truncated = records[records["truncated"].astype(bool)]
            truncation.update(
                n_truncated=len(truncated),
                mean_dropped_fraction_of_truncated=float(truncated["dropped_fraction"].mean())
                if len(truncated)
                else 0.0,
                largest_input_tokens=int(records["input_tokens"].max()),
                mean_transcript_tokens=float(records["transcript_tokens"].mean()),
            )
        else:
            truncation["note"] = (
                "no tokenizer bound: transcripts went in whole; a backend keeps the last tokens of a prompt that does not fit"
            )
        tables = {"truncation": _by_truncation(records)} if measured else {}
        return {
            "truncation": truncation,
            "lengths": {"mean_transcript_chars": float(records["transcript_chars"].mean())},
            "longbench_scorer_errors": int(records["rouge_l_longbench_error"].notna().sum()),
            "tables": tables,
        }


def _chat_0shot(task: VCSUM, sample: Sample) -> list[Request]:
    meeting: Meeting = sample.metadata["meeting"]
    fit = task.fit(sample)
    transcript = fit.cut.text if fit.cut is not None else meeting.transcript
    return [Generate(task.messages(transcript), max_new_tokens=task.max_new_tokens, reference=meeting.references[0])]


VCSUM.protocols = protocol_table(
    EvalProtocol("chat_0shot", "generate", _chat_0shot, description="LongBench's vcsum prompt as one user turn"),
)


def _by_truncation(records: pd.DataFrame) -> list[dict[str, Any]]:
    rows = []
    for truncated, part in records.groupby(records["truncated"].astype(bool), sort=True):
        rouge, stderr = mean_stderr([float(v) for v in part["rouge_l"]])
        rows.append({"truncated": bool(truncated), "n": len(part), "rouge_l": rouge, "stderr": stderr})
    return rows


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None
