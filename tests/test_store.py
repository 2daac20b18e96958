"""The request store: content keys, partial lines, and reuse across runs."""

from __future__ import annotations

import json

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
    with pytest.raises(EvalError, match=r"requests\..*\.jsonl: line 1 \(byte 0\) is not a stored result"):
        RequestStore(tmp_path)


def stored_file(tmp_path, n: int = 3):
    requests = [Generate(f"question {i}", reference=f"answer {i}") for i in range(n)]
    ResumableBackend(FakeBackend(policy="oracle"), RequestStore(tmp_path)).generate(requests)
    [path] = tmp_path.glob("requests.*.jsonl")
    return requests, path


def test_undecodable_bytes_in_the_middle_name_the_file_line_and_byte(tmp_path):
    _, path = stored_file(tmp_path)
    lines = path.read_bytes().split(b"\n")
    at = len(lines[0]) + 1 + lines[1].index(b"answer")
    lines[1] = lines[1].replace(b"answer", b"\xff\xfenswer")
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(EvalError) as caught:
        RequestStore(tmp_path)
    message = str(caught.value)
    assert message.startswith(f"{path}: line 2 (byte {at}) is not a stored result")
    assert message.endswith("delete it to recompute") and "utf-8" in message


@pytest.mark.parametrize(
    "field, value, expected",
    [("text", 5, "'text' is int 5, expected str"), ("finish_reason", None, "'finish_reason' is NoneType None, expected str"),
     ("prompt_tokens", "12", "'prompt_tokens' is str '12', expected int or NoneType")],
)  # fmt: skip
def test_a_stored_result_of_the_wrong_type_is_rejected_not_scored(tmp_path, field, value, expected):
    requests, path = stored_file(tmp_path)
    lines = path.read_text().splitlines()
    record = json.loads(lines[1])
    record["result"][field] = value
    lines[1] = json.dumps(record)
    path.write_text("\n".join(lines) + "\n")
    again = ResumableBackend(FakeBackend(policy="oracle"), RequestStore(tmp_path))
    with pytest.raises(EvalError) as caught:
        again.generate(requests)
    assert str(caught.value) == (
        f"{path}: line 2: the stored result is not a Generation ({expected}); delete it to recompute"
    )


def test_a_stored_result_of_another_kind_is_rejected(tmp_path):
    requests, path = stored_file(tmp_path, n=1)
    record = json.loads(path.read_text())
    record["result"] = {"logprob": -1.0, "is_greedy": True}
    path.write_text(json.dumps(record) + "\n")
    with pytest.raises(EvalError, match=r"no 'finish_reason'; no 'text'; unknown field 'is_greedy'; unknown field"):
        ResumableBackend(FakeBackend(policy="oracle"), RequestStore(tmp_path)).generate(requests)
