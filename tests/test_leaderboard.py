"""The results store and its tables: leaderboard, quantization, card parity (qwen_evals.analysis.leaderboard, qwen_evals.analysis.card)."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qwen_evals.analysis.card import DEFAULT_CARD, load_card, parity
from qwen_evals.analysis.leaderboard import leaderboard, markdown_table, quantization
from qwen_evals.analysis.results import load_runs, main_metric
from qwen_evals.backends.fake import FakeBackend
from qwen_evals.backends.precision import Precision
from qwen_evals.core.errors import EvalError
from qwen_evals.core.metrics import Metric
from qwen_evals.core.runner import evaluate
from qwen_evals.core.types import Generate
from qwen_evals.scoring.numbers import strict_answer
from qwen_evals.tasks.gsm8k import GSM8K
from tests.conftest import REPO
from tests.test_compare import flipped, gpu_memory, run_fake_sweep, write_run


@pytest.fixture(scope="module")
def fake_results(tmp_path_factory, shared_data) -> Path:
    """Real run_eval.py outputs: oracle and worst on MMLU and C-Eval, then the card's precision sweep on MMLU."""
    root = tmp_path_factory.mktemp("results")
    out = f"output_dir={root}/${{model.name}}-${{precision.name}}/${{hydra:runtime.choices.task}}"
    for sweep in (["model.policy=oracle,worst", "task=mmlu,ceval"], ["task=mmlu", "precision=int8,nf4"]):
        run_fake_sweep(root, shared_data, *sweep, out)
    return root


def test_runs_are_identified_by_their_summaries_not_their_paths(fake_results, tmp_path):
    misleading = tmp_path / "ceval" / "qwen-7b-chat-nf4"
    shutil.copytree(fake_results / "fake-oracle-bf16" / "mmlu", misleading)
    (run,) = load_runs([tmp_path]).to_dict(orient="records")
    assert (run["task"], run["model"], run["precision"], run["protocol"]) == (
        "mmlu",
        "fake-oracle",
        "bf16",
        "chat_0shot",
    )
    assert run["metric"] == "accuracy" and run["score"] == 100.0 and run["n_samples"] == 57
    assert run["ci_low"] == run["ci_high"] == 100.0  # the bootstrap CI report.py wrote


def test_models_as_rows_and_tasks_as_columns_with_the_cards_row(fake_results):
    numeric, display = leaderboard(load_runs([fake_results]), load_card())
    assert list(display.columns) == ["model", "C-Eval", "C-Eval n", "MMLU", "MMLU n"]  # the card's column order
    rows = numeric.set_index(["model", "precision"])
    assert rows.loc[("fake-oracle", "bf16"), ["C-Eval", "MMLU"]].tolist() == [100.0, 100.0]
    assert rows.loc[("fake-worst", "bf16"), ["C-Eval", "MMLU"]].tolist() == [0.0, 0.0]
    assert math.isnan(rows.loc[("fake-oracle", "int8"), "C-Eval"]) and rows.loc[("fake-oracle", "nf4"), "MMLU"] == 100
    assert rows.loc[("Qwen/Qwen-7B-Chat", "bf16"), ["C-Eval", "MMLU"]].tolist() == [54.2, 53.9]
    # one question per subject: partial runs, marked, with their sample counts
    assert display.iloc[0].tolist() == ["fake-oracle (bf16)", "100.0 ± 0.0 (partial)", "52", "100.0 ± 0.0 (partial)", "57"]


def test_one_precision_sweep_gives_the_cards_quantization_table(fake_results):
    table = quantization(load_runs([fake_results]), load_card()).set_index("precision")
    assert list(table.index) == ["bf16", "int8", "nf4"]
    assert set(table["model"]) == {"fake-oracle"} and set(table["task"]) == {"MMLU"}
    assert set(table["reference"]) == {"bf16"} and table["delta"].tolist() == [0.0, 0.0, 0.0]
    assert table["card_score"].tolist() == [56.7, 52.8, 48.9]
    assert table["card_delta"].tolist() == pytest.approx([0.0, -3.9, -7.8])
    assert table["card_memory_gb"].tolist() == [16.2, 10.1, 7.4]
    assert table.loc["int8", "p"] == 1.0  # paired against the bf16 run: same answers
    assert table["peak_memory_gb"].isna().all()  # the fake backend measures no memory


def test_quantization_deltas_memory_and_paired_test_against_the_highest_precision(tmp_path):
    base = np.zeros(1000)
    base[:600] = 1
    runs = {"fp32": (base, 30.0), "bf16": (flipped(base, 2, 2), 16.4), "int8": (flipped(base, 30, 20), 10.2),
            "nf4": (flipped(base, 160, 10), 7.5)}  # fmt: skip
    for precision, (values, peak) in runs.items():
        write_run(tmp_path / precision, values.astype(bool).tolist(), model="ckpt", precision=precision,
                  memory=gpu_memory(peak))  # fmt: skip
    table = quantization(load_runs([tmp_path]), load_card()).set_index("precision")
    assert list(table.index) == ["fp32", "bf16", "int8", "nf4"] and set(table["reference"]) == {"fp32"}
    assert table["delta"].tolist() == pytest.approx([0.0, 0.0, -1.0, -15.0])
    assert math.isnan(table.loc["fp32", "p"]) and table.loc["bf16", "p"] == 1.0
    assert table.loc["int8", "p"] > 0.05 and table.loc["nf4", "p"] < 1e-6
    assert table["peak_memory_gb"].tolist() == pytest.approx([30.0, 16.4, 10.2, 7.5], abs=1e-6)
    assert table["weights_gb"].tolist() == pytest.approx([27.0, 14.76, 9.18, 6.75], abs=1e-6)
    assert table["peak_vs_reference"].tolist() == pytest.approx([1.0, 16.4 / 30, 10.2 / 30, 7.5 / 30])
    assert set(table["memory_device"]) == {"cuda"}
    # The card has no fp32 row: its scores show, its deltas to the same reference cannot.
    assert table["card_score"].tolist()[1:] == [56.7, 52.8, 48.9] and table["card_delta"].isna().all()


def test_cpu_runs_show_their_resident_memory_in_the_quantization_view(tmp_path):
    for precision, peak in (("fp32", 1.5), ("nf4", 0.9)):
        memory = {**gpu_memory(peak), "device": "cpu", "measure": "rss_high_water"}
        write_run(tmp_path / precision, [True, False] * 50, model="small", precision=precision, memory=memory)
    table = quantization(load_runs([tmp_path])).set_index("precision")
    assert set(table["memory_device"]) == {"cpu"} and table["peak_memory_gb"].tolist() == pytest.approx([1.5, 0.9])
    assert table.loc["nf4", "reference"] == "fp32" and table.loc["nf4", "n"] == 100


def test_card_parity_marks_runs_within_and_outside_the_tolerance(tmp_path):
    for name, right in (("close", 545), ("far", 560)):
        write_run(tmp_path / name, [i < right for i in range(1000)], model=name)
    runs = load_runs([tmp_path])
    view = parity(runs, load_card())
    mmlu = view[view["card"] == "mmlu / chat_0shot / test / accuracy"].set_index("run")
    assert mmlu.loc["close (bf16)", "delta"] == pytest.approx(0.6) and mmlu.loc["close (bf16)", "status"] == "within"
    assert mmlu.loc["far (bf16)", "delta"] == pytest.approx(2.1) and mmlu.loc["far (bf16)", "status"] == "outside"
    far = runs.set_index("model").loc["far"]
    assert mmlu.loc["far (bf16)", "delta_ci_low"] == pytest.approx(far["ci_low"] - 53.9)
    assert mmlu.loc["far (bf16)", "ci_reaches_band"]  # 1,000 questions cannot tell 2.1 from 1 point
    assert set(view[view["card"].str.startswith("ceval / chat_0shot / test")]["status"]) == {"no run"}
    quant = view[(view["card"] == "mmlu / accuracy") & (view["precision"] == "bf16")]
    assert set(quant["run"]) == {"close (bf16)", "far (bf16)"}  # the card's quantization row: any protocol
    wide = parity(runs, load_card(), tolerance=3.0)
    assert set(wide[wide["card"] == "mmlu / chat_0shot / test / accuracy"]["status"]) == {"within"}


def test_card_parity_of_a_category_row(tmp_path):
    card = tmp_path / "card.yaml"
    card.write_text(
        "model: m\ncard_revision: r\nsources: {s: somewhere}\nentries:\n"
        "  - {task: ceval, split: val, metric: accuracy, category: STEM, value: 50, source: s}\n"
    )
    run = write_run(tmp_path / "run", [True, False], task="ceval", split="val")
    summary = (
        (run / "summary.json")
        .read_text()
        .replace('"tables": {}', '"tables": {"category": [{"category": "STEM", "accuracy": 0.505, "stderr": 0.01}]}')
    )
    (run / "summary.json").write_text(summary)
    (row,) = parity(load_runs([run]), load_card(card)).to_dict(orient="records")
    assert row["delta"] == pytest.approx(0.5) and row["status"] == "within"
    assert row["delta_ci_high"] == pytest.approx(0.5 + 1.96)


def test_vcsum_card_parity_uses_only_runs_made_with_dynamic_ntk(tmp_path):
    """The card's 16.6 was read with dynamic NTK on 200 meetings: a newer run without it does not replace
    the one with it, and alone it is left out, saying why."""
    import json

    def vcsum_run(name: str, rouge: float, finished: str, long_context: dict | None) -> None:
        run = write_run(tmp_path / name, [rouge] * 200, task="vcsum", model="qwen-7b-chat", protocol="chat_0shot",
                        column="rouge_l_longbench", metric="rouge_l_longbench", finished_at=finished)  # fmt: skip
        summary = json.loads((run / "summary.json").read_text())
        summary["backend"] = {"backend": "hf", **({"long_context": long_context} if long_context else {})}
        (run / "summary.json").write_text(json.dumps(summary))

    ntk = {"applied": {"dynamic_ntk": {"rope_type": "dynamic", "factor": 2.0}}, "unsupported": ["logn_attn"]}
    vcsum_run("with-ntk", 0.166, "2026-01-01T00:00:00+00:00", ntk)
    vcsum_run("without", 0.10, "2026-02-01T00:00:00+00:00", None)
    view = parity(load_runs([tmp_path]), load_card())
    [row] = view[view["card"] == "vcsum / rouge_l_longbench"].to_dict(orient="records")
    assert row["run_dir"].endswith("with-ntk") and row["delta"] == pytest.approx(0.0) and row["status"] == "within"
    (tmp_path / "with-ntk" / "summary.json").unlink()
    view = parity(load_runs([tmp_path]), load_card())
    [status] = view[view["card"] == "vcsum / rouge_l_longbench"]["status"]
    assert status.startswith("left out: another setting")


def test_the_card_file_holds_every_number_with_its_source():
    card = load_card(DEFAULT_CARD)
    assert (card.model, card.card_revision, card.tolerance) == ("Qwen/Qwen-7B-Chat", "v1.0", 1.0)
    values = sorted(e.value for e in card.entries)
    expected = [54.2, 54.6, 47.8, 67.6, 59.3, 50.6, 53.9, 24.4, 41.1, 43.5, 16.6, 99, 89, 9.7, 90.74, 92.59, 74.07,
                56.7, 52.8, 48.9]  # fmt: skip
    assert values == pytest.approx(sorted(expected))
    assert all(e.source in card.sources for e in card.entries)
    memory = {e.precision: e.memory_gb for e in card.entries if e.table == "quantization"}
    assert memory == {"bf16": 16.2, "int8": 10.1, "nf4": 7.4}


def test_a_bad_card_is_a_clear_error(tmp_path):
    card = tmp_path / "card.yaml"
    card.write_text("model: m\nentries:\n  - {task: mmlu, metric: accuracy, value: 0.5, units: percent}\n")
    with pytest.raises(EvalError, match="units 'percent'"):
        load_card(card)


def test_other_tasks_bring_their_own_main_metric(tmp_path):
    rng = np.random.default_rng(0)
    write_run(tmp_path / "vcsum", rng.uniform(0, 0.3, 50).tolist(), task="vcsum", protocol="longbench",
              column="rouge_l", metric="rouge_l")  # fmt: skip
    write_run(tmp_path / "gsm8k", [True, False, False, True], task="gsm8k")
    runs = load_runs([tmp_path]).set_index("task")
    assert runs.loc["vcsum", ["metric", "metric_column"]].tolist() == ["rouge_l", "rouge_l"]
    assert runs.loc["gsm8k", ["metric", "metric_column", "score"]].tolist() == ["accuracy", "correct", 50.0]
    _, display = leaderboard(load_runs([tmp_path]), load_card())
    assert list(display.columns) == ["model", "GSM8K", "GSM8K n", "VCSUM", "VCSUM n"]


def test_metrics_come_from_the_summary_declarations_only(tmp_path):
    declared = [Metric("f1", "f1_column", headline=True).to_dict(), Metric("miss_rate", "miss", higher_is_better=False,
                                                                          compared=True).to_dict()]  # fmt: skip
    assert main_metric({"main_metric": "f1", "metric_declarations": declared}).column == "f1_column"
    with pytest.raises(EvalError, match="no metric declarations"):
        main_metric({"task": "humaneval", "main_metric": "pass@1"}, "old/summary.json")
    with pytest.raises(EvalError, match="main_metric 'f2' is not among"):
        main_metric({"main_metric": "f2", "metric_declarations": declared})


def test_markdown_tables_escape_and_round():
    frame = pd.DataFrame({"a": ["x|y", None], "b": [1.23456, math.nan]})
    assert markdown_table(frame) == "| a | b |\n|---|---|\n| x\\|y | 1.2 |\n|  |  |\n"


def test_leaderboard_cli_writes_the_tables_and_the_page(fake_results, tmp_path):
    out = tmp_path / "board"
    done = subprocess.run([sys.executable, "-m", "qwen_evals.analysis.leaderboard", str(fake_results), "--out", str(out)],
                          check=False, cwd=REPO, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "| fake-worst (bf16) | 0.0 ± 0.0 (partial) | 52 | 0.0 ± 0.0 (partial) | 57 |" in done.stdout
    for name in ("leaderboard.md", "leaderboard.csv", "quantization.csv", "card_parity.csv", "categories.csv",
                 "runs.csv", "index.html"):  # fmt: skip
        assert (out / name).is_file(), name
    assert len(list((out / "samples").glob("*.html"))) == 6
    assert pd.read_csv(out / "runs.csv").shape[0] == 6
    empty = subprocess.run([sys.executable, "-m", "qwen_evals.analysis.leaderboard", str(tmp_path / "nothing")],
                           check=False, cwd=REPO, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert empty.returncode == 2 and "error:" in empty.stderr


def test_gsm8k_parity_compares_the_card_era_reading(shared_data, tmp_path):
    """The card's GSM8K numbers were read as the last run of digits: parity uses that reading, the column stays."""

    def with_thousands_separators(request: Generate) -> str:
        return f"The answer is {int(strict_answer(request.reference).value):,}"

    task = GSM8K("chat_0shot", data_dir=str(shared_data / "gsm8k"))
    backend = FakeBackend(policy="script", script=with_thousands_separators, precision=Precision("bf16", "bfloat16"))
    report = evaluate(task, backend)  # the whole test split: a partial run gets no parity
    report.save(tmp_path / "run")
    metrics = report.summary["metrics"]
    assert metrics["accuracy"] == 1.0 and 0.5 < metrics["card_rule_accuracy"] < 1.0  # "1,600" reads as "600"
    view = parity(load_runs([tmp_path]), load_card())
    (row,) = view[view["card"] == "gsm8k / chat_0shot / test / accuracy"].to_dict(orient="records")
    assert row["run_metric"] == "card_rule_accuracy"
    assert row["run_value"] == pytest.approx(100 * metrics["card_rule_accuracy"])
    assert load_card().headline("gsm8k", "chat_0shot", "test", "accuracy") == 41.1


# ---- a leaderboard you can trust: smoke runs, repeats, data the card was measured on ---------------------


def test_a_smoke_run_never_hides_a_complete_run_nor_stands_beside_the_card(tmp_path):
    """A 2-questions-per-subject run (30.7 +- 8.8) was shown beside the card's 53.9 in place of the complete run."""
    write_run(tmp_path / "full", [i < 545 for i in range(1000)], model="ckpt", finished_at="2026-01-01T00:00:00+00:00")
    write_run(tmp_path / "smoke", [i < 35 for i in range(114)], model="ckpt", finished_at="2026-01-02T00:00:00+00:00",
              run={"partial": True, "limit": 2})  # fmt: skip
    runs = load_runs([tmp_path])
    numeric, display = leaderboard(runs, load_card())
    row = numeric.set_index("model").loc["ckpt"]
    assert (row["MMLU"], row["MMLU n"], row["MMLU partial"]) == (pytest.approx(54.5), 1000, False)
    assert display.set_index("model").loc["ckpt (bf16)", "MMLU n"] == "1000"
    view = parity(runs, load_card())
    (mmlu,) = view[view["card"] == "mmlu / chat_0shot / test / accuracy"].to_dict(orient="records")
    assert mmlu["run_value"] == pytest.approx(54.5)
    alone = load_runs([tmp_path / "smoke"])
    cell = leaderboard(alone)[1].set_index("model").loc["ckpt (bf16)", "MMLU"]
    assert cell.endswith("(partial)") and cell.startswith("30.7")
    (left_out,) = parity(alone, load_card()).query("card == 'mmlu / chat_0shot / test / accuracy'").to_dict("records")
    assert left_out["status"] == "left out: partial run" and left_out["run"] is None


def test_repeated_runs_of_one_measurement_are_aggregated_with_the_latest_shown(tmp_path):
    for day, right in ((1, 545), (2, 550), (3, 540)):
        write_run(tmp_path / f"day{day}", [i < right for i in range(1000)], model="ckpt",
                  finished_at=f"2026-01-0{day}T00:00:00+00:00")  # fmt: skip
    write_run(tmp_path / "other-weights", [i < 600 for i in range(1000)], model="ckpt",
              run={"model": {"label": "ckpt", "weights_sha256": "ab" * 32}})  # fmt: skip
    numeric, display = leaderboard(load_runs([tmp_path]))
    rows = numeric.set_index("checkpoint")
    assert rows.loc["ckpt", "MMLU"] == pytest.approx(54.0)  # the latest
    assert rows.loc["ckpt", ["MMLU runs", "MMLU mean", "MMLU sd"]].tolist() == pytest.approx([3, 54.5, 0.5])
    assert rows.loc["ckpt@abababab", ["MMLU", "MMLU runs"]].tolist() == pytest.approx([60.0, 1])  # another checkpoint
    assert display.set_index("model").loc["ckpt (bf16)", "MMLU"].endswith("; mean 54.5, sd 0.5 over 3 runs")


def test_card_parity_only_on_the_data_the_card_was_measured_on(tmp_path):
    """The suite's own ReAct exam was scored against the card's numbers, which the README says are not comparable."""
    react = {"task": "react", "protocol": "qwen_react", "split": None, "column": "tool_ok", "metric": "tool_selection_accuracy"}
    write_run(tmp_path / "own", [i < 160 for i in range(170)], model="own-exam", exam="qwen-evals react exam", **react)
    write_run(tmp_path / "qwen", [i < 168 for i in range(170)], model="qwen-exam", exam="qwen exam_plugin_v1", **react)
    view = parity(load_runs([tmp_path]), load_card())
    rows = view[view["card"] == "react / tool_selection_accuracy"]
    assert list(rows["run"]) == ["qwen-exam (bf16)"]
    assert rows.iloc[0]["run_value"] == pytest.approx(100 * 168 / 170)
    alone = parity(load_runs([tmp_path / "own"]), load_card())
    (left_out,) = alone[alone["card"] == "react / tool_selection_accuracy"].to_dict(orient="records")
    assert left_out["status"].startswith("left out: other data")
