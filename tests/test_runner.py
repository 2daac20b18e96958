"""The runner: one backend call per request kind, and the batch-invariance canary."""

from __future__ import annotations

from contextlib import contextmanager

from qwen_evals.backends.fake import FakeBackend
from qwen_evals.backends.hf.backend import HFBackend
from qwen_evals.backends.precision import Precision
from qwen_evals.backends.resumable import ResumableBackend
from qwen_evals.core.runner import evaluate
from qwen_evals.core.store import RequestStore
from qwen_evals.tasks.mmlu import MMLU


def test_all_requests_of_a_kind_go_in_one_call(shared_data):
    backend = FakeBackend()
    evaluate(MMLU("base_5shot", "val", str(shared_data / "mmlu")), backend, limit=3)
    assert backend.calls == [("loglikelihood", 57 * 3 * 4)]


class FlakyWhenAlone(FakeBackend):
    """Answers right in batches and wrong alone: the canary must notice."""

    @contextmanager
    def one_at_a_time(self):
        self.policy = "worst"
        yield
        self.policy = "oracle"


def test_canary_reports_samples_whose_answer_depends_on_batching(shared_data):
    task = MMLU("base_5shot", "val", str(shared_data / "mmlu"), subjects=["anatomy"])
    report = evaluate(task, FlakyWhenAlone(), canary=3)
    assert report.summary["batch_invariance"]["drifted"] == ["anatomy/0", "anatomy/1", "anatomy/2"]
    assert report.summary["metrics"]["accuracy"] == 1.0


def test_canary_finds_no_drift_on_the_hf_backend(shared_data, tiny_qwen2):
    backend = HFBackend(name="tiny", path=str(tiny_qwen2), precision=Precision("fp32", "float32"), device_map=None)
    task = MMLU("base_5shot", "val", str(shared_data / "mmlu"), subjects=["anatomy", "virology"])
    report = evaluate(task, backend, limit=4, canary=4)
    check = report.summary["batch_invariance"]
    assert check["n"] == 4 and check["drifted"] == [] and check["max_logprob_diff"] < 1e-4
    assert max(backend.stats["batch_sizes"]) > 1  # the production run batched; the canary's stats were not kept


def test_canary_recomputes_even_when_results_are_stored(shared_data, tmp_path):
    task = MMLU("base_5shot", "val", str(shared_data / "mmlu"), subjects=["anatomy"])
    backend = ResumableBackend(FlakyWhenAlone(), RequestStore(tmp_path))
    report = evaluate(task, backend, canary=2)
    assert report.summary["batch_invariance"]["drifted"] == ["anatomy/0", "anatomy/1"]
    assert backend.computed == 14 * 4  # the canary's requests were not stored


def test_the_protocol_decides_decoding_and_the_summary_records_it(shared_data):
    """Decoding is protocol data: every generate request carries the protocol's, whatever the builder set."""
    import dataclasses

    from qwen_evals.core.task import protocol_table
    from qwen_evals.core.types import Decoding

    sampled = Decoding(temperature=0.7, top_p=0.9)

    class SampledMMLU(MMLU):
        protocols = protocol_table(dataclasses.replace(MMLU.protocols["chat_0shot"], decoding=sampled))

    seen = []
    backend = FakeBackend(policy="script", script=lambda request: seen.append(request.decoding) or "A")
    report = evaluate(SampledMMLU("chat_0shot", "val", str(shared_data / "mmlu"), subjects=["anatomy"]), backend, limit=2)
    assert seen == [sampled, sampled]
    assert report.to_summary()["decoding"] == dataclasses.asdict(sampled)
    greedy = evaluate(MMLU("chat_0shot", "val", str(shared_data / "mmlu"), subjects=["anatomy"]), FakeBackend(), limit=1)
    assert greedy.to_summary()["decoding"] == {"temperature": 0.0, "top_p": 1.0, "top_k": 0, "repetition_penalty": 1.0}
    base = evaluate(MMLU("base_5shot", "val", str(shared_data / "mmlu"), subjects=["anatomy"]), FakeBackend(), limit=1)
    assert base.to_summary()["decoding"] is None  # log-likelihood protocols decode nothing


def test_the_canary_is_a_small_share_of_the_run(shared_data):
    task = MMLU("base_5shot", "val", str(shared_data / "mmlu"), subjects=["anatomy"])  # 14 samples
    backend = FakeBackend()
    report = evaluate(task, backend, canary=8, canary_share=0.1)
    assert report.summary["batch_invariance"]["n"] == 1  # 10% of 14 samples, at least one
    assert backend.calls == [("loglikelihood", 14 * 4), ("loglikelihood", 1 * 4)]
    big = evaluate(MMLU("base_5shot", "val", str(shared_data / "mmlu")), FakeBackend(), canary=8, canary_share=0.1)
    assert big.summary["batch_invariance"]["n"] == 8  # 10% of 1,531 samples, capped at 8
