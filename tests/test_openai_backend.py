"""The openai backend against a real HTTP server on loopback serving a tiny HF model.

References are computed here, without the server: a greedy loop over full
forward passes for generation, one forward for log-likelihoods.
"""

from __future__ import annotations

import inspect
import json
import time

import pytest
import torch

from qwen_evals.backends.openai import OpenAIBackend
from qwen_evals.backends.resumable import ResumableBackend
from qwen_evals.core.errors import EvalError
from qwen_evals.core.store import RequestStore
from qwen_evals.core.types import Generate, LogLikelihood
from tests.conftest import CONF, texts
from tests.openai_stub_server import StubModel, StubServer

SERVED = "tiny-qwen2"
SYSTEM = "You are a helpful assistant."
END_TOKENS = ("<|endoftext|>", "<|im_end|>")

TEXT_PROMPTS = ["The capital of France is", "def fibonacci(n):", "中国的首都是"]
CHAT_PROMPTS = [
    [{"role": "user", "content": "Hello, who are you?"}],
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is 2+2?"}],
    [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another one?"},
    ],
]
PAIRS = [
    ("Question: What is 2+2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer:", " A"),
    ("Question: What is 2+2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer:", " B"),
    ("Question: What is 2+2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer:", " C"),
    ("The quick brown", " fox jumps over the lazy dog"),
    ("1, 2, 3,", " 4, 5, 6"),
    ("问题：中国的首都是哪里？\n答案：", "B"),
]


# ---- fixtures --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tiny_qwen2):
    with StubServer(StubModel(tiny_qwen2), SERVED) as running:
        yield running


@pytest.fixture(autouse=True)
def healthy(server):
    server.configure()
    yield


@pytest.fixture(scope="module")
def reference(server):
    """The served weights and tokenizer, run here by the test's own code."""
    return server.model.model, server.model.tokenizer


def make(server, **options) -> OpenAIBackend:
    settings = {"timeout_s": 30.0, "backoff_s": 0.01, "max_backoff_s": 0.05, "concurrency": 4, "show_progress": False}
    return OpenAIBackend(name="tiny", model=SERVED, base_url=server.base_url, **{**settings, **options})


@torch.inference_mode()
def greedy(reference, text: str, max_new: int, stop: tuple[str, ...] = ()) -> str:
    """Greedy decoding by full forward passes, stopping at end-of-turn tokens and stop strings."""
    model, tokenizer = reference
    ids = tokenizer.encode(text)
    end = {tokenizer.convert_tokens_to_ids(t) for t in END_TOKENS}
    new: list[int] = []
    for _ in range(max_new):
        token = int(model(torch.tensor([ids + new]), logits_to_keep=1).logits[0, -1].argmax())
        if token in end:
            break
        new.append(token)
    out = tokenizer.decode(new, skip_special_tokens=True)
    cuts = [out.find(s) for s in stop if s in out]
    return out[: min(cuts)] if cuts else out


def chatml(messages: list[dict[str, str]]) -> str:
    if messages[0]["role"] != "system":
        messages = [{"role": "system", "content": SYSTEM}, *messages]
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages) + "<|im_start|>assistant\n"


@torch.inference_mode()
def forward_loglikelihood(reference, context: str, continuation: str, bos: bool = False) -> tuple[float, bool]:
    """Sum of log-probs of the tokens of context+continuation after context's tokens, and all-argmax."""
    model, tokenizer = reference
    prefix = [tokenizer.convert_tokens_to_ids("<|endoftext|>")] if bos else []
    context_ids = prefix + tokenizer.encode(context)
    ids = prefix + tokenizer.encode(context + continuation)
    assert ids[: len(context_ids)] == context_ids, "pick a pair whose continuation tokenizes on its own"
    logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
    positions = range(len(context_ids), len(ids))
    total = sum(float(logp[p - 1, ids[p]]) for p in positions)
    return total, all(int(logp[p - 1].argmax()) == ids[p] for p in positions)


def loglikelihood_requests() -> list[LogLikelihood]:
    return [LogLikelihood(c, x) for c, x in PAIRS]


# ---- correctness ---------------------------------------------------------------------------


def test_generations_equal_direct_greedy_decoding(server, reference):
    backend = make(server)
    requests = [Generate(p, max_new_tokens=6) for p in TEXT_PROMPTS] + [
        Generate(m, max_new_tokens=6) for m in CHAT_PROMPTS
    ]
    outputs = texts(backend.generate(requests))
    expected = [greedy(reference, p, 6) for p in TEXT_PROMPTS] + [greedy(reference, chatml(m), 6) for m in CHAT_PROMPTS]
    assert outputs == expected
    assert any(outputs)
    paths = [r["path"] for r in server.received]
    assert paths.count("/v1/completions") == len(TEXT_PROMPTS) and paths.count("/v1/chat/completions") == len(
        CHAT_PROMPTS
    )
    # The system prompt goes in front of chat prompts without one, and only those.
    sent = [r["body"]["messages"] for r in server.received if r["path"] == "/v1/chat/completions"]
    assert all(m[0]["role"] == "system" and sum(t["role"] == "system" for t in m) == 1 for m in sent)
    assert {"content": "Answer briefly.", "role": "system"} in [m[0] for m in sent]
    assert all(r["body"]["temperature"] == 0.0 and r["body"]["max_tokens"] == 6 for r in server.received)
    info = backend.describe()
    assert info["requests"] == {"/v1/completions": 3, "/v1/chat/completions": 3} and info["retries"] == 0
    assert info["completion_tokens"] > 0 and info["tokens_per_second"] > 0


def test_stop_strings_are_sent_and_cut(server, reference):
    full = greedy(reference, TEXT_PROMPTS[0], 10)
    stop = next(full[i : i + 2] for i in range(len(full) // 2, len(full) - 1) if full[i : i + 2].strip())
    backend = make(server)
    [made] = backend.generate([Generate(TEXT_PROMPTS[0], max_new_tokens=10, stop=(stop,))])
    assert made.text == full[: full.find(stop)] and (made.finish_reason, made.stop) == ("stop", stop)
    assert server.received[0]["body"]["stop"] == [stop]


def test_duplicate_greedy_requests_are_sent_once_and_answered_in_order(server, reference):
    backend = make(server)
    requests = [Generate(p, max_new_tokens=4) for p in TEXT_PROMPTS] * 2
    outputs = texts(backend.generate(requests))
    assert outputs == [greedy(reference, p, 4) for p in TEXT_PROMPTS] * 2
    assert len(server.received) == 3


@pytest.mark.parametrize(
    "server_options, backend_options",
    [
        ({}, {}),
        ({}, {"loglikelihood_max_tokens": 0}),
        ({"usage": False, "offsets": False}, {}),  # prompt tokens found by offsets counted from token texts
        ({"prepend_bos": True}, {}),  # a BOS the server adds shifts every offset
    ],
    ids=["echo+1", "echo+0", "no-usage-no-offsets", "bos"],
)
def test_loglikelihoods_equal_a_direct_forward(server, reference, server_options, backend_options):
    server.configure(**server_options)
    backend = make(server, **backend_options)
    results = backend.loglikelihood(loglikelihood_requests())
    for (context, continuation), result in zip(PAIRS, results):
        logprob, is_greedy = forward_loglikelihood(
            reference, context, continuation, bos=server_options.get("prepend_bos", False)
        )
        assert result.logprob == pytest.approx(logprob, abs=1e-4)
        assert result.is_greedy == is_greedy
    assert all(r["body"]["echo"] is True and r["body"]["logprobs"] == 1 for r in server.received)
    assert {r["body"]["max_tokens"] for r in server.received} == {backend.loglikelihood_max_tokens}
    assert backend.describe()["boundary_merged_tokens"] == 0


def test_greedy_flag_is_true_for_the_models_own_continuation(server, reference):
    context = "The capital of France is"
    own = greedy(reference, context, 4)
    [result] = make(server).loglikelihood([LogLikelihood(context, own)])
    expected, is_greedy = forward_loglikelihood(reference, context, own)
    assert is_greedy and result.is_greedy and result.logprob == pytest.approx(expected, abs=1e-4)


def test_a_continuation_merged_into_the_last_context_token_is_scored_whole(server, reference):
    model, tokenizer = reference
    context, continuation = "Answer: ", "B"  # tokenizes as "Answer", ":", " B"
    ids = tokenizer.encode(context + continuation)
    assert tokenizer.decode(ids[-1:]) == " B"
    backend = make(server)
    [result] = backend.loglikelihood([LogLikelihood(context, continuation)])
    with torch.inference_mode():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
    assert result.logprob == pytest.approx(float(logp[-2, ids[-1]]), abs=1e-4)
    assert backend.describe()["boundary_merged_tokens"] == 1


def test_chat_prompts_for_loglikelihood_need_an_explicit_text_format(server, reference):
    messages = [{"role": "user", "content": "Pick a letter."}]
    with pytest.raises(EvalError, match="loglikelihood_chat_format=chatml"):
        make(server).loglikelihood([LogLikelihood(messages, "A")])
    assert server.received == []
    [result] = make(server, loglikelihood_chat_format="chatml").loglikelihood([LogLikelihood(messages, "A")])
    assert result.logprob == pytest.approx(forward_loglikelihood(reference, chatml(messages), "A")[0], abs=1e-4)


# ---- faults --------------------------------------------------------------------------------


def test_every_third_request_failing_is_retried_and_results_stay_in_order(server, reference):
    server.configure(fail_every=3)
    backend = make(server, concurrency=4)
    prompts = [f"Item {i}: the number after {i} is" for i in range(7)]
    outputs = texts(backend.generate([Generate(p, max_new_tokens=3) for p in prompts]))
    assert outputs == [greedy(reference, p, 3) for p in prompts]
    info = backend.describe()
    assert info["retries"] >= 2 and info["failures"] == {"HTTP 503": info["retries"]}
    assert info["http_requests"] == len(server.received) == 7 + info["retries"]
    server.configure(fail_every=3)
    scored = make(server).loglikelihood(loglikelihood_requests())
    server.configure()
    assert scored == make(server).loglikelihood(loglikelihood_requests())


def test_a_truncated_200_body_is_retried_like_a_5xx(server, reference):
    server.configure(broken_body=2)  # HTTP 200 with the first half of the JSON
    backend = make(server, concurrency=1)
    prompts = [f"Item {i}: the number after {i} is" for i in range(4)]
    outputs = texts(backend.generate([Generate(p, max_new_tokens=3) for p in prompts]))
    assert outputs == [greedy(reference, p, 3) for p in prompts]
    info = backend.describe()
    assert (info["retries"], info["failures"], len(server.received)) == (1, {"invalid JSON": 1}, 5)


def test_answers_are_stored_as_they_arrive_when_the_server_dies_mid_run(server, reference, tmp_path):
    server.configure(die_after=4)  # four answers, then every connection closes without a reply
    prompts = [f"Item {i}: the number after {i} is" for i in range(10)]
    requests = [Generate(p, max_new_tokens=3) for p in prompts]
    dying = ResumableBackend(make(server, concurrency=3, max_retries=1), RequestStore(tmp_path))
    with pytest.raises(EvalError, match=r"failed after 2 attempts; last: connection"):
        dying.generate(requests)
    assert len(RequestStore(tmp_path).results) == 4  # what another process finds: every answer given
    server.configure()
    again = ResumableBackend(make(server), RequestStore(tmp_path))
    assert texts(again.generate(requests)) == [greedy(reference, p, 3) for p in prompts]
    assert (again.reused, again.computed, len(server.received)) == (4, 6, 6)


def test_a_stalling_server_times_out_is_retried_then_fails_clearly(server):
    server.configure(stall_s=3.0)
    backend = make(server, timeout_s=0.3, max_retries=2, concurrency=2)
    start = time.perf_counter()
    with pytest.raises(EvalError) as caught:
        backend.generate([Generate(p, max_new_tokens=4) for p in TEXT_PROMPTS])
    elapsed = time.perf_counter() - start
    assert elapsed < 2.5
    message = str(caught.value)
    assert server.base_url + "/completions" in message and "3 attempts" in message and "timeout" in message
    assert len(server.received) == 3  # the first request alone, retried; the others never sent
    assert backend.describe()["failures"] == {"timeout": 3}


def test_retries_exhausted_on_5xx_name_the_url_and_status(server):
    server.configure(fail_every=1)
    with pytest.raises(EvalError, match=r"/v1/chat/completions failed after 2 attempts; last: HTTP 503"):
        make(server, max_retries=1).generate([Generate(CHAT_PROMPTS[0], max_new_tokens=4)])


def test_a_server_without_logprobs_fails_loglikelihood_after_one_request(server, reference):
    server.configure(logprobs=False)
    backend = make(server)
    with pytest.raises(EvalError, match="no prompt log-probs.*log-likelihood protocols"):
        backend.loglikelihood(loglikelihood_requests())
    assert len(server.received) == 1
    assert texts(backend.generate([Generate(TEXT_PROMPTS[0], max_new_tokens=4)])) == [greedy(reference, TEXT_PROMPTS[0], 4)]


def test_429_retry_after_is_honoured(server, reference):
    server.configure(rate_limit=1, retry_after="1")
    backend = make(server)
    start = time.perf_counter()
    [output] = texts(backend.generate([Generate(TEXT_PROMPTS[1], max_new_tokens=4)]))
    assert time.perf_counter() - start >= 0.95  # the backoff alone would be ~0.01 s
    assert output == greedy(reference, TEXT_PROMPTS[1], 4)
    assert backend.describe()["failures"] == {"HTTP 429": 1}


def test_client_errors_are_not_retried(server):
    backend = OpenAIBackend(name="x", model="not-served", base_url=server.base_url, show_progress=False)
    with pytest.raises(EvalError, match=r"HTTP 404 \(is model.model='not-served' served there\?\)"):
        backend.generate([Generate("hi", max_new_tokens=2)])
    assert len(server.received) == 1


def test_unreachable_server_fails_within_the_retry_budget():
    import socket

    with socket.socket() as probe:  # a loopback port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    backend = OpenAIBackend(
        name="x",
        model=SERVED,
        base_url=f"http://127.0.0.1:{port}/v1",
        max_retries=2,
        backoff_s=0.01,
        show_progress=False,
    )
    with pytest.raises(EvalError, match=rf"127.0.0.1:{port}/v1/completions failed after 3 attempts; last: connection"):
        backend.generate([Generate("hi", max_new_tokens=2)])


# ---- configuration and records ---------------------------------------------------------------


def test_api_key_comes_from_the_named_variable_and_is_never_recorded(server, monkeypatch):
    monkeypatch.setenv("STUB_API_KEY", "sk-stub-secret")
    backend = make(server, api_key_env="STUB_API_KEY")
    backend.generate([Generate("hi", max_new_tokens=2)])
    assert server.received[0]["headers"]["Authorization"] == "Bearer sk-stub-secret"
    records = json.dumps([backend.describe(), backend.identity()])
    assert "sk-stub-secret" not in records and "STUB_API_KEY" in records
    monkeypatch.delenv("STUB_API_KEY")
    make(server, api_key_env="STUB_API_KEY").generate([Generate("hi", max_new_tokens=2)])
    assert "Authorization" not in server.received[-1]["headers"]


def test_describe_and_identity(server):
    from qwen_evals.backends.precision import Precision

    backend = make(server, precision=Precision("bf16", "bfloat16"))
    info = backend.describe()
    assert (info["backend"], info["base_url"], info["model"], info["precision"]) == (
        "openai",
        server.base_url,
        SERVED,
        "bf16",
    )
    identity = backend.identity()
    assert identity["model"] == SERVED and "base_url" not in identity  # a moved server keeps the resume store


def test_system_prompt_and_decoding_are_sent_and_recorded(server):
    """The configured system prompt goes to the server's template as the system message; null sends none."""
    chat = [{"role": "user", "content": "What is 2+2?"}]
    for system in ("You are a helpful assistant.", None):
        backend = make(server)
        backend.system_prompt = system
        backend.generate([Generate(chat, max_new_tokens=2), Generate("text", max_new_tokens=3, stop=("\n",))])
        [sent] = [r["body"] for r in server.received[-2:] if r["path"] == "/v1/chat/completions"]
        expected = [{"role": "system", "content": system}] if system else []
        assert sent["messages"] == [*expected, *chat]
        assert backend.describe()["system_prompt"]["used"] == system
    greedy = {"temperature": 0.0, "top_p": 1.0, "top_k": -1, "repetition_penalty": 1.0, "n": 1}
    assert backend.describe()["generation"]["settings"] == [
        {"max_tokens": 2, **greedy}, {"max_tokens": 3, **greedy, "stop": ["\n"]},
    ]  # fmt: skip


def test_bad_settings_are_user_errors():
    for options in (
        {"base_url": "localhost:8000"},
        {"concurrency": 0},
        {"loglikelihood_max_tokens": 5},
        {"timeout_s": 0},
    ):
        with pytest.raises(EvalError, match="model\\."):
            OpenAIBackend(**{"name": "x", "model": "m", **options})


def test_model_config_composes_and_instantiates_with_precision():
    from hydra import compose, initialize_config_dir

    from qwen_evals.backends.precision import Precision
    from qwen_evals.cli.checks import RECORD_ONLY_KEYS
    from qwen_evals.cli.run import build_backend
    from qwen_evals.core.config import register_resolvers

    register_resolvers()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose(
            config_name="config", overrides=["model=openai", "precision=bf16", "model.base_url=http://127.0.0.1:9/v1"]
        )
    assert set(cfg.model) - {"_target_", *RECORD_ONLY_KEYS} <= set(inspect.signature(OpenAIBackend).parameters)
    backend = build_backend(cfg.model, cfg.precision)
    assert (
        isinstance(backend, OpenAIBackend)
        and isinstance(backend.precision, Precision)
        and backend.precision.name == "bf16"
    )
    assert backend.name == "Qwen-7B-Chat" and backend.base_url == "http://127.0.0.1:9/v1"


def test_mmlu_base_5shot_through_the_server_equals_the_hf_backend(server, tiny_qwen2, shared_data):
    from qwen_evals.backends.hf.backend import HFBackend
    from qwen_evals.backends.precision import Precision
    from qwen_evals.core.runner import evaluate
    from qwen_evals.tasks.mmlu import MMLU

    task = MMLU(protocol="base_5shot", split="test", data_dir=str(shared_data / "mmlu"), subjects=["abstract_algebra"])
    served = evaluate(task, make(server, concurrency=8), limit=1)
    local = evaluate(task, HFBackend("tiny", str(tiny_qwen2), Precision("fp32", "float32"), device_map=None), limit=1)
    assert list(served.records["prediction"]) == list(local.records["prediction"])
    for a, b in zip(served.records["output"], local.records["output"]):
        assert a.keys() == b.keys() and all(abs(a[k] - b[k]) < 1e-4 for k in a)
