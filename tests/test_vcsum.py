"""VCSUM: transcript rebuild, oracle scores, head+tail truncation in real tokens, long-context settings, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from qwen_evals.backends.chat_format import QWEN_DEFAULT_SYSTEM
from qwen_evals.backends.fake import FakeBackend
from qwen_evals.backends.hf.long_context import long_context_config_overrides
from qwen_evals.backends.prompting import PromptEncoder
from qwen_evals.core.datafiles import read_jsonl
from qwen_evals.core.errors import EvalError
from qwen_evals.core.runner import evaluate
from qwen_evals.core.types import ModelTokenizer
from qwen_evals.scoring.truncation import BOUNDARY_STEPS, keep_head_and_tail
from qwen_evals.tasks import vcsum
from qwen_evals.tasks.vcsum import PROMPT, VCSUM, read_release
from tests.conftest import qwen_tokenizer_files

N_MEETINGS = {"dev": 22, "test": 26}


@pytest.fixture(scope="module")
def qwen_tokenizer():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(qwen_tokenizer_files())
    tokenizer.chat_template = None  # Qwen-7B-Chat's: ChatML from the backend's fallback
    return tokenizer


@pytest.fixture(scope="module")
def test_meetings(shared_data):
    return {m.id: m for m in read_release(shared_data / "vcsum", "test")}


def bound_task(shared_data, tokenizer, context: int = 8192, **options) -> VCSUM:
    task = VCSUM(data_dir=str(shared_data / "vcsum"), **options)
    encoder = PromptEncoder(tokenizer, QWEN_DEFAULT_SYSTEM, context)
    task.bind_model(ModelTokenizer(tokenizer, context, encoder.encode))
    return task


# ---- data ------------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["dev", "test"])
def test_rebuilt_transcripts_have_every_paragraph_of_all_meetings(shared_data, split):
    folder = shared_data / "vcsum"
    meetings = read_release(folder, split)
    eos = {row["id"]: row["eos_index"] for _, row in read_jsonl(folder / f"long_{split}.txt")}
    assert len(meetings) == N_MEETINGS[split]
    for meeting in meetings:
        assert meeting.n_paragraphs == eos[meeting.id][-1] + 1
        lines = meeting.transcript.split("\n")
        assert len(lines) == meeting.n_paragraphs
        assert all(line.startswith("发言人") and "：" in line for line in lines)
    if split == "test":  # SOURCES.md: rebuilt test transcripts run from 4.2K to 44K characters, 13.4K on average
        text = [sum(len(line.partition("：")[2]) for line in m.transcript.split("\n")) for m in meetings]
        assert (round(min(text), -2), round(max(text), -3), round(sum(text) / len(text), -2)) == (4200, 44000, 13400)
    # Paragraph text in segment order, speaker ids kept (first segment of the file)
    first = next(row for _, row in read_jsonl(folder / f"short_{split}.txt"))
    meeting = next(m for m in meetings if m.id == first["id"].split("_")[0])
    expected = [f"发言人{s}：{''.join(p)}" for p, s in zip(first["context"], first["speaker"])]
    assert meeting.transcript.split("\n")[: len(expected)] == expected


@pytest.fixture(scope="module")
def oracle_run(shared_data, qwen_tokenizer):
    """The 26 test meetings, Qwen tokens, an 8K context: the task and its oracle report."""
    task = bound_task(shared_data, qwen_tokenizer, context=8192)
    return task, evaluate(task, FakeBackend(policy="oracle"))


def test_oracle_scores_one_on_the_real_test_meetings_and_empty_replies_zero(oracle_run):
    task, oracle = oracle_run
    metrics = oracle.summary["metrics"]
    assert len(oracle.records) == 26
    assert (metrics["rouge_l"], metrics["rouge_l_char"]) == (1.0, 1.0)
    assert metrics["rouge_l_longbench"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["empty_output_rate"] == 0.0
    worst = evaluate(task, FakeBackend(policy="worst"))
    assert worst.summary["metrics"]["rouge_l"] == 0.0 and worst.summary["metrics"]["rouge_l_char"] == 0.0
    assert worst.summary["metrics"]["empty_output_rate"] == 1.0
    assert worst.summary["longbench_scorer_errors"] == 26  # LongBench scores these 0 silently; we count them


def test_truncated_fraction_matches_the_records(oracle_run, qwen_tokenizer):
    task, report = oracle_run
    records, summary = report.records, report.summary
    budget = 8192 - 512
    assert (records["input_tokens"] <= budget).all()
    frame = len(PromptEncoder(qwen_tokenizer, QWEN_DEFAULT_SYSTEM, 8192).encode(task.messages("")))
    assert (records["truncated"] == (records["transcript_tokens"] > budget - frame)).all()
    assert 0 < summary["metrics"]["truncated_fraction"] < 1
    assert summary["metrics"]["truncated_fraction"] == records["truncated"].mean()
    assert summary["truncation"]["n_truncated"] == records["truncated"].sum()
    assert {row["truncated"] for row in summary["tables"]["truncation"]} == {False, True}
    kept = records[records["truncated"]]
    assert (kept["head_tokens"] + kept["tail_tokens"] + kept["dropped_tokens"] == kept["transcript_tokens"]).all()
    assert task.describe()["input_budget"]["budget_tokens"] == budget


def test_without_a_tokenizer_nothing_is_cut_and_truncation_is_not_measured(shared_data):
    report = evaluate(VCSUM(data_dir=str(shared_data / "vcsum")), FakeBackend(), limit=2)
    assert report.summary["metrics"]["truncated_fraction"] is None
    assert report.summary["truncation"]["measured"] is False
    assert report.records["truncated"].isna().all()
    assert report.summary["metric_notes"]["truncated_fraction"] == "2 of 2 samples have no 'truncated' value"
    assert FakeBackend().model_tokenizer() is None


def test_the_runner_binds_the_model_through_the_resumable_wrapper(shared_data, qwen_tokenizer, tmp_path):
    from qwen_evals.backends.resumable import ResumableBackend
    from qwen_evals.core.store import RequestStore

    model = ModelTokenizer(qwen_tokenizer, 1024, PromptEncoder(qwen_tokenizer, QWEN_DEFAULT_SYSTEM, 1024).encode)

    class Local(FakeBackend):
        def model_tokenizer(self) -> ModelTokenizer:
            return model

    task = VCSUM(data_dir=str(shared_data / "vcsum"))
    evaluate(task, ResumableBackend(Local(), RequestStore(tmp_path)), limit=1)
    assert task.model is model and task.fit(task.load(limit=1)[0]).budget == 1024 - 512


# ---- truncation --------------------------------------------------------------------------


@pytest.mark.parametrize("budget", [1000, 1001])
def test_truncation_keeps_exactly_head_and_tail_tokens(test_meetings, qwen_tokenizer, budget):
    text = test_meetings["21"].transcript  # 19K characters
    ids = qwen_tokenizer.encode(text, add_special_tokens=False)
    cut = keep_head_and_tail(text, qwen_tokenizer, budget)
    assert (cut.head_tokens, cut.tail_tokens) == (budget // 2, budget - budget // 2)
    assert (cut.original_tokens, cut.dropped_tokens, cut.truncated) == (len(ids), len(ids) - budget, True)
    head = qwen_tokenizer.decode(ids[: cut.head_tokens])
    tail = qwen_tokenizer.decode(ids[-cut.tail_tokens :])
    assert cut.text == head + tail and text.startswith(head) and text.endswith(tail)
    assert qwen_tokenizer.encode(head, add_special_tokens=False) == ids[: cut.head_tokens]
    assert qwen_tokenizer.encode(tail, add_special_tokens=False) == ids[-cut.tail_tokens :]


def test_text_that_fits_is_unchanged(test_meetings, qwen_tokenizer):
    text = test_meetings["23"].transcript
    n = len(qwen_tokenizer.encode(text, add_special_tokens=False))
    cut = keep_head_and_tail(text, qwen_tokenizer, n)
    assert (cut.text, cut.truncated, cut.head_tokens, cut.tail_tokens) == (text, False, n, 0)


def test_a_cut_never_splits_a_character(qwen_tokenizer):
    rare = "𠀀"  # three byte tokens in Qwen's vocabulary
    assert len(qwen_tokenizer.encode(rare, add_special_tokens=False)) == 3
    text = "甲" + rare * 20 + "乙"
    cut = keep_head_and_tail(text, qwen_tokenizer, 10)  # head 5 and tail 5 would each end inside a character
    assert "\ufffd" not in cut.text
    assert (cut.head_tokens, cut.tail_tokens) == (4, 4)
    assert cut.text == "甲" + rare + rare + "乙"
    assert 5 - BOUNDARY_STEPS <= cut.head_tokens


def test_prompt_fits_the_budget_with_instruction_and_cue_intact(shared_data, qwen_tokenizer):
    task = bound_task(shared_data, qwen_tokenizer, context=4096, max_input_tokens=1024, max_new_tokens=64)
    encoder = PromptEncoder(qwen_tokenizer, QWEN_DEFAULT_SYSTEM, 4096)
    for sample in task.load(limit=5):
        [request] = task.requests(sample)
        content = request.prompt[0]["content"]
        assert content.startswith(PROMPT.split("{context}")[0]) and content.endswith("\n\n会议总结：")
        assert len(encoder.encode(request.prompt)) == task.fit(sample).input_tokens <= 1024
        assert task.fit(sample).input_tokens >= 1024 - 2  # the budget is used, not wasted
        assert request.max_new_tokens == 64 and request.reference == sample.target


@pytest.mark.parametrize(
    "options, message",
    [
        (
            {"max_input_tokens": 4000, "max_new_tokens": 512},
            r"max_input_tokens=4000 \+ task.max_new_tokens=512 exceeds",
        ),
        ({"max_input_tokens": 20}, "leaves no room for the transcript"),
    ],
)
def test_impossible_budgets_are_errors(shared_data, qwen_tokenizer, options, message):
    task = bound_task(shared_data, qwen_tokenizer, context=4096, **options)
    with pytest.raises(EvalError, match=message):
        task.requests(task.load(limit=1)[0])


def test_a_budget_without_a_tokenizer_is_an_error(shared_data):
    task = VCSUM(data_dir=str(shared_data / "vcsum"), max_input_tokens=1024)
    with pytest.raises(EvalError, match="max_input_tokens needs the model's tokenizer"):
        task.requests(task.load(limit=1)[0])


# ---- long-context settings ------------------------------------------------------------------


def test_dynamic_ntk_reaches_a_qwen2_model_and_keeps_its_rope_theta(tiny_qwen2):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(tiny_qwen2)
    settings = long_context_config_overrides(config, dynamic_ntk=True, logn_attn=True, rope_factor=2.0)
    assert settings.unsupported == ("logn_attn",)  # transformers has no LogN scaling
    theta = config.rope_parameters["rope_theta"]
    assert settings.overrides["rope_parameters"] == {"rope_theta": theta, "rope_type": "dynamic", "factor": 2.0}
    plain = AutoModelForCausalLM.from_pretrained(tiny_qwen2, max_position_embeddings=16)
    scaled = AutoModelForCausalLM.from_pretrained(tiny_qwen2, max_position_embeddings=16, **settings.overrides)
    assert scaled.config.rope_parameters["rope_theta"] == theta
    short, long = torch.arange(1, 13)[None], torch.arange(1, 41)[None]
    with torch.no_grad():
        assert torch.equal(plain(short).logits, scaled(short).logits)  # within the training length: unchanged
        assert not torch.allclose(plain(long).logits, scaled(long).logits)  # past it: rescaled


def test_the_card_long_context_preset_reads_every_staged_transcript_whole(shared_data, qwen_tokenizer, tiny_qwen2):
    """model=qwen-7b-chat-long: dynamic NTK on, and a context that holds the longest transcript with its answer."""
    from hydra import compose, initialize_config_dir

    from qwen_evals.backends.hf.backend import HFBackend
    from qwen_evals.backends.precision import Precision
    from qwen_evals.core.config import register_resolvers
    from tests.conftest import CONF

    register_resolvers()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        preset = compose(config_name="config", overrides=["model=qwen-7b-chat-long", "task=vcsum"]).model
    assert (preset.path, preset.convert, preset.long_context.dynamic_ntk, preset.long_context.rope_factor) == (
        "Qwen/Qwen-7B-Chat", "qwen1", True, 2.0,
    )  # fmt: skip
    encoder = PromptEncoder(qwen_tokenizer, preset.system_prompt, preset.max_length)
    for split in ("test", "dev"):
        task = VCSUM(split=split, data_dir=str(shared_data / "vcsum"))
        task.bind_model(ModelTokenizer(qwen_tokenizer, preset.max_length, encoder.encode))
        assert not any(task.fit(sample).cut.truncated for sample in task.load()), split
    # What the preset asks of the converted (Qwen2) model reaches it, and the summary says so.
    backend = HFBackend("long", str(tiny_qwen2), Precision("fp32", "float32"), device_map=None,
                        long_context=dict(preset.long_context), max_length=preset.max_length)  # fmt: skip
    assert backend.describe()["long_context"] == {
        "applied": {"dynamic_ntk": {"rope_type": "dynamic", "factor": 2.0}}, "unsupported": ["logn_attn"],
    }  # fmt: skip
    assert backend.model.config.rope_parameters["rope_type"] == "dynamic" and backend.max_length == 32768


def test_dynamic_ntk_factor_below_one_is_refused():
    with pytest.raises(EvalError, match="rope_factor=0.5 must be >= 1"):
        long_context_config_overrides(
            SimpleNamespace(rope_parameters={"rope_theta": 1.0}), dynamic_ntk=True, rope_factor=0.5
        )


# ---- bad input ------------------------------------------------------------------------------


@pytest.fixture
def release_copy(shared_data, tmp_path) -> Path:
    folder = tmp_path / "vcsum"
    folder.mkdir()
    for name in ("long_test.txt", "short_test.txt"):
        shutil.copy(shared_data / "vcsum" / name, folder)
    return folder


def rewrite(path: Path, change) -> None:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in change(rows)), encoding="utf-8")


def test_missing_summary_names_the_line_and_meeting(release_copy):
    rewrite(release_copy / "long_test.txt", lambda rows: [{**r, "summary": ""} if r["id"] == "21" else r for r in rows])
    with pytest.raises(EvalError, match=r"long_test.txt: line 3 \(meeting '21'\) has no reference 'summary'"):
        read_release(release_copy, "test")


def test_meeting_without_segments_is_an_empty_transcript(release_copy):
    rewrite(release_copy / "short_test.txt", lambda rows: [r for r in rows if not r["id"].startswith("21_")])
    with pytest.raises(EvalError, match=r"line 3 \(meeting '21'\): empty transcript"):
        read_release(release_copy, "test")


def test_a_lost_paragraph_breaks_the_eos_index_check(release_copy):
    def drop(rows):
        row = next(r for r in rows if r["id"] == "21_1")
        row["context"], row["speaker"] = row["context"][1:], row["speaker"][1:]
        return rows

    rewrite(release_copy / "short_test.txt", drop)
    with pytest.raises(EvalError, match=r"meeting '21'\): rebuilt \d+ paragraphs, but eos_index ends at"):
        read_release(release_copy, "test")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: {**r, "id": "21-0"} if r["id"] == "21_0" else r, r"segment id '21-0' is not '<meeting>_<segment number>'"),
        (lambda r: {**r, "speaker": r["speaker"][:-1]} if r["id"] == "21_0" else r, r"segment '21_0'\): needs 'context' and 'speaker'"),
    ],
)  # fmt: skip
def test_malformed_segments_are_named(release_copy, change, message):
    rewrite(release_copy / "short_test.txt", lambda rows: [change(r) for r in rows])
    with pytest.raises(EvalError, match=message):
        read_release(release_copy, "test")


def test_hub_rows_are_checked_and_all_answers_are_references(monkeypatch):
    rows = [
        {"_id": "a1", "context": "发言人1：我们讨论预算。", "answers": ["预算讨论了。", "会议讨论了明年的预算。"]},
        {"_id": "a2", "context": "发言人1：散会。", "answers": ["散会。"]},
    ]
    calls = []
    monkeypatch.setattr(vcsum, "load_hub_dataset", lambda *args: calls.append(args) or rows)
    task = VCSUM(revision="abc123")
    samples = task.load()
    assert calls[0][:4] == ("THUDM/LongBench", "vcsum", "test", "abc123")
    assert [s.id for s in samples] == ["a1", "a2"]
    row = task.score(samples[0], ["会议讨论了明年的预算。"])
    assert row["rouge_l"] == 1.0 and row["references"] == rows[0]["answers"]
    rows[1] = {"_id": "a2", "context": " ", "answers": ["散会。"]}
    with pytest.raises(EvalError, match=r"THUDM/LongBench vcsum row 2: empty transcript"):
        task.load()
    rows[1] = {"_id": "a2", "context": "散会。", "answers": []}
    with pytest.raises(EvalError, match=r"row 2: missing reference summary"):
        task.load()


def test_offline_hub_says_how_to_use_local_files(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EvalError, match=r"THUDM/LongBench.*data_dir="):
        VCSUM().load()


def test_unknown_options_are_named():
    with pytest.raises(EvalError, match="task.split='train' is not a vcsum split"):
        VCSUM(split="train", data_dir=".")
    with pytest.raises(EvalError, match="has only 'test'; use data_dir= for dev"):
        VCSUM(split="dev")
    with pytest.raises(EvalError, match="task.protocol='base_0shot' is not a vcsum protocol"):
        VCSUM(protocol="base_0shot")


# ---- a real model ----------------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_summarises_one_truncated_meeting(shared_data, smollm2):
    task = VCSUM(data_dir=str(shared_data / "vcsum"), max_input_tokens=512, max_new_tokens=16)  # CPU: prefill dominates
    report = evaluate(task, smollm2, limit=1)  # the runner binds the model's tokenizer
    [row] = report.records.to_dict(orient="records")
    [request] = task.requests(task.load(limit=1)[0])
    assert len(smollm2.encode(request.prompt)) == row["input_tokens"] <= 512  # counted as the model reads it
    assert row["truncated"] and row["dropped_tokens"] > 0
    assert row["head_tokens"] + row["tail_tokens"] + row["dropped_tokens"] == row["transcript_tokens"]
    assert isinstance(row["output"], str) and row["output"].strip()
    assert 0.0 <= row["rouge_l"] <= 1.0 and 0.0 <= row["rouge_l_char"] <= 1.0
