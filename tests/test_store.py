"""The request store: content keys, partial lines, and reuse across runs."""

from __future__ import annotations

import pytest

from qwen_evals.backends.fake import FakeBackend
from qwen_evals.backends.resumable import ResumableBackend
from qwen_evals.core.errors import EvalError
from qwen_evals.core.store import RequestStore
from qwen_evals.core.types import Decoding, Generate, LogLikelihood


def test_second_run_computes_nothing_and_returns_the_same(tmp_path):
    requests = [LogLikelihood("q", " A", True), LogLikelihood("q", " B"), LogLikelihood("r", " A")]
    first = ResumableBackend(FakeBackend(), RequestStore(tmp_path), chunk_size=2)
    results = first.loglikelihood(requests)
    again = ResumableBackend(FakeBackend(), RequestStore(tmp_path))
    assert again.loglikelihood(requests) == results
    assert (first.computed, again.computed, again.reused) == (3, 0, 3)


def test_another_model_identity_does_not_reuse(tmp_path):
    requests = [Generate("q", reference="A")]
    ResumableBackend(FakeBackend(policy="oracle"), RequestStore(tmp_path)).generate(requests)
    other = ResumableBackend(FakeBackend(policy="worst"), RequestStore(tmp_path))
    assert [g.text for g in other.generate(requests)] == [""] and other.computed == 1


def test_sampled_copies_are_distinct_and_greedy_copies_computed_once(tmp_path):
    backend = ResumableBackend(FakeBackend(policy="oracle"), RequestStore(tmp_path))
    greedy = [Generate("q", reference="A")] * 3
    sampled = [Generate("q", decoding=Decoding(temperature=0.8), reference="A")] * 3
    backend.generate(greedy + sampled)
    assert backend.computed == 1 + 3


def test_partial_last_line_is_ignored_and_a_corrupt_line_is_an_error(tmp_path):
    ResumableBackend(FakeBackend(), RequestStore(tmp_path)).generate([Generate("q", reference="A")])
    [path] = tmp_path.glob("requests.*.jsonl")
    path.open("a").write('{"key": "abc", "res')
    store = RequestStore(tmp_path)
    assert store.dropped_partial_lines == 1 and "abc" not in store.results and len(store.results) == 1
    path.write_text('not json\n{"key": "k", "result": 1}\n')
    with pytest.raises(EvalError, match=r"requests\..*\.jsonl: line 1 is not a stored result"):
        RequestStore(tmp_path)
