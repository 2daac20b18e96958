"""The transformers backend on a tiny random Qwen2: batching must not change results."""

from __future__ import annotations

import math
import sys
import types

import pytest
import torch

from qwen_evals.backends.chat_format import render_chatml
from qwen_evals.backends.hf.backend import HFBackend
from qwen_evals.backends.memory import weights_bytes
from qwen_evals.backends.precision import Precision
from qwen_evals.core.errors import EvalError
from qwen_evals.core.types import Generate, LogLikelihood
from tests.conftest import texts

FP32 = Precision("fp32", "float32")

PROMPTS = [
    "Question: What is 2 + 2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer:",
    "问题：中国的首都是哪里？\nA. 上海\nB. 北京\nC. 广州\nD. 深圳\n答案：",
    "Short",
    "The following are multiple choice questions (with answers) about astronomy. " * 6,
]


def backend(path, **kwargs) -> HFBackend:
    return HFBackend(name="tiny", path=str(path), precision=FP32, device_map=None, **kwargs)


@pytest.fixture(scope="module")
def batched(tiny_qwen2) -> HFBackend:
    return backend(tiny_qwen2, max_batch_size=8)


@pytest.fixture(scope="module")
def single(tiny_qwen2) -> HFBackend:
    return backend(tiny_qwen2, max_batch_size=1)


def loglik_requests() -> list[LogLikelihood]:
    return [LogLikelihood(p, c) for p in PROMPTS for c in (" A", " B", " Paris is nice", "北京")]


def test_loglikelihood_batched_equals_one_at_a_time(batched, single):
    requests = loglik_requests()
    together = batched.loglikelihood(requests)
    alone = single.loglikelihood(requests)
    assert max(batched.stats["batch_sizes"]) > 1
    for a, b in zip(together, alone):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
        assert a.is_greedy == b.is_greedy


def test_loglikelihood_matches_an_unpadded_full_forward(single):
    """Independent check: sum of log-softmax over the continuation of one plain forward."""
    tokenizer, model = single.tokenizer, single.model
    for request in loglik_requests()[:6]:
        context = tokenizer.encode(request.prompt)
        both = tokenizer.encode(request.prompt + request.continuation)
        assert both[: len(context)] == context
        with torch.no_grad():
            logits = model(torch.tensor([both])).logits[0].float()
        logprobs = torch.log_softmax(logits, -1)
        expected = sum(float(logprobs[i - 1, both[i]]) for i in range(len(context), len(both)))
        [result] = single.loglikelihood([request])
        assert result.logprob == pytest.approx(expected, abs=1e-4)


def test_greedy_flag_is_true_for_the_models_own_continuation(single):
    prompt = PROMPTS[0]
    [text] = texts(single.generate([Generate(prompt, max_new_tokens=3)]))
    assert text
    [own] = single.loglikelihood([LogLikelihood(prompt, text)])
    assert own.is_greedy


def test_generation_batched_equals_one_at_a_time(batched, single):
    requests = [Generate(p, max_new_tokens=12) for p in PROMPTS]
    chat = [Generate([{"role": "user", "content": p}], max_new_tokens=12) for p in PROMPTS[:2]]
    together, alone = batched.generate(requests + chat), single.generate(requests + chat)
    facts = ("text", "finish_reason", "stop", "prompt_tokens", "generated_tokens", "prompt_truncated", "rendered_prompt")
    assert [[getattr(g, f) for f in facts] for g in together] == [[getattr(g, f) for f in facts] for g in alone]
    assert all(g.finish_reason in ("eos", "length") and 0 < g.generated_tokens <= 12 for g in together)
    assert together[-1].rendered_prompt == batched.render(chat[-1].prompt)


def test_stop_strings_end_generation_in_a_batch(batched):
    free = texts(batched.generate([Generate(p, max_new_tokens=16) for p in PROMPTS]))
    # Stop at a piece of the first output; the other rows must be unaffected unless they contain it too.
    stop = free[0][4:7]
    assert stop
    made = batched.generate([Generate(p, max_new_tokens=16, stop=(stop,)) for p in PROMPTS])
    cut = texts(made)
    assert made[0].finish_reason == "stop" and made[0].stop == stop
    for full, short in zip(free, cut):
        assert stop not in short
        assert full.startswith(short)
        if stop in full:
            assert short == full[: full.index(stop)]
    assert cut[0] == free[0][: free[0].index(stop)]


def test_chat_prompts_use_chatml_with_qwen_system_prompt_when_no_template(single):
    messages = [{"role": "user", "content": "hi"}]
    assert single.chat_format == "chatml"
    assert single.render(messages) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert render_chatml(messages) == single.render(messages)


def test_long_prompts_keep_their_end_and_are_counted(tiny_qwen2):
    short = backend(tiny_qwen2, max_length=16)
    [result] = short.loglikelihood([LogLikelihood(PROMPTS[3], " A")])
    assert short.prompts.truncated == 1
    full = backend(tiny_qwen2)
    ids = full.tokenizer.encode(PROMPTS[3] + " A")[-16:]
    with torch.no_grad():
        logits = full.model(torch.tensor([ids])).logits[0].float()
    expected = float(torch.log_softmax(logits[-2], -1)[ids[-1]])
    assert result.logprob == pytest.approx(expected, abs=1e-4)


QUANTIZED = {"int8": ("Linear8bitLt", Precision("int8", "bfloat16", "int8")), "nf4": ("Linear4bit", Precision("nf4", "bfloat16", "nf4"))}


@pytest.fixture(scope="module")
def by_precision(tiny_qwen2) -> dict[str, HFBackend]:
    """The tiny model at fp32, bf16, and bitsandbytes int8 and NF4 (on the CPU here)."""
    precisions = {"fp32": FP32, "bf16": Precision("bf16", "bfloat16"), **{k: p for k, (_, p) in QUANTIZED.items()}}
    return {name: HFBackend(name="tiny", path=str(tiny_qwen2), precision=p) for name, p in precisions.items()}


@pytest.mark.parametrize("quantization", ["int8", "nf4"])
def test_int8_and_nf4_run_on_the_cpu_with_bitsandbytes_layers(by_precision, quantization):
    import bitsandbytes

    backend = by_precision[quantization]
    layer_class, _ = QUANTIZED[quantization]
    assert type(backend.model.model.layers[0].mlp.up_proj).__name__ == layer_class
    assert next(backend.model.parameters()).device.type == "cpu"
    assert backend.load_info["bitsandbytes"] == bitsandbytes.__version__
    scored = backend.loglikelihood(loglik_requests())
    reference = by_precision["bf16"].loglikelihood(loglik_requests())
    assert all(math.isfinite(r.logprob) and r.logprob < 0 for r in scored)
    assert scored != reference  # the quantized weights are what ran
    made = backend.generate([Generate(p, max_new_tokens=6) for p in PROMPTS])
    assert all(g.generated_tokens > 0 for g in made)
    memory = backend.describe()["memory"]
    assert memory["device"] == "cpu" and memory["measure"] == "rss_high_water"
    assert memory["peak_bytes"] >= memory["weights_bytes"] > 0 and memory["load_peak_bytes"] > 0


def test_weight_footprints_shrink_by_the_quantized_formats_own_sizes(by_precision):
    """fp32 > bf16 > int8 > NF4, and the decoder layers' bytes are exactly what each format stores."""
    totals = {name: backend.describe()["memory"]["weights_bytes"] for name, backend in by_precision.items()}
    assert totals["fp32"] > totals["bf16"] > totals["int8"] > totals["nf4"]
    layers = {name: weights_bytes(backend.model.model.layers) for name, backend in by_precision.items()}
    linear = [m for m in by_precision["bf16"].model.model.layers.modules() if isinstance(m, torch.nn.Linear)]
    weights, rows = sum(m.weight.numel() for m in linear), sum(m.out_features for m in linear)
    assert layers["fp32"] == 2 * layers["bf16"]
    # int8: 1 byte per weight instead of 2, plus one float32 scale per output row.
    assert layers["int8"] == layers["bf16"] - 2 * weights + weights + 4 * rows
    # NF4: half a byte per weight, an absmax per block of 64 (float32; bfloat16 once bitsandbytes has repacked
    # the layer for an AVX512-BF16 CPU at its first forward) and a 16-entry float32 code book per layer.
    states = [m.weight.quant_state for m in by_precision["nf4"].model.model.layers.modules() if hasattr(m, "weight")
              and hasattr(m.weight, "quant_state")]  # fmt: skip
    absmax = sum(s.absmax.element_size() * s.absmax.numel() for s in states)
    assert len(states) == len(linear) and absmax in (4 * weights // 64, 2 * weights // 64)
    assert layers["nf4"] == layers["bf16"] - 2 * weights + weights // 2 + absmax + 64 * len(linear)
    assert layers["nf4"] < 0.3 * layers["bf16"] and layers["int8"] < 0.55 * layers["bf16"]


def refuses_before_reading_weights(monkeypatch, path, quantization) -> pytest.ExceptionInfo:
    import transformers

    def must_not_load(*args, **kwargs):
        raise AssertionError("weights were read")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", must_not_load)
    with pytest.raises(EvalError) as error:
        HFBackend(name="tiny", path=str(path), precision=QUANTIZED[quantization][1])
    return error


@pytest.mark.parametrize("quantization", ["int8", "nf4"])
def test_a_bitsandbytes_without_a_cpu_backend_is_named_with_its_version(tiny_qwen2, monkeypatch, quantization):
    """bitsandbytes before 0.46 ran on CUDA only (and did not list its devices)."""
    old = types.ModuleType("bitsandbytes")
    old.__version__ = "0.45.5"
    monkeypatch.setitem(sys.modules, "bitsandbytes", old)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    error = refuses_before_reading_weights(monkeypatch, tiny_qwen2, quantization)
    assert f"precision={quantization}" in str(error.value)
    assert "bitsandbytes 0.45.5 has no cpu backend" in str(error.value) and "qwen-evals[quant]" in str(error.value)


def test_quantized_precision_without_bitsandbytes_says_how_to_get_it(tiny_qwen2, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import fails
    error = refuses_before_reading_weights(monkeypatch, tiny_qwen2, "nf4")
    assert "needs bitsandbytes: pip install 'qwen-evals[quant]'" in str(error.value)


def test_unreachable_hub_fails_fast_naming_the_model_and_the_fix(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(EvalError, match=r"'Qwen/Qwen-7B-Chat'.*model.path="):
        HFBackend(name="q", path="Qwen/Qwen-7B-Chat", precision=FP32)


def few_shot_requests() -> list[LogLikelihood]:
    header = "The following are multiple choice questions (with answers) about geography.\n\n"
    shots = "".join(f"Question: Which number is {i}?\nA. {i}\nB. {i + 1}\nC. {i + 2}\nD. {i + 3}\nAnswer: A\n\n" for i in range(5))
    questions = ["Which is a river?", "Which city is in France, and which of them is the largest?", "Pick one."]
    return [
        LogLikelihood(f"{header}{shots}Question: {q}\nA. Nile\nB. Paris\nC. Rome\nD. Alps\nAnswer:", f" {letter}")
        for q in questions
        for letter in "ABCD"
    ] + [LogLikelihood("Unrelated short prompt", " A")]


def test_prefix_reuse_and_single_forward_scoring_equal_the_plain_path(tiny_qwen2, batched):
    requests = few_shot_requests()
    plain = backend(tiny_qwen2, reuse_prefix=False)
    reused = batched.loglikelihood(requests)
    assert batched.stats.get("prefix_tokens_reused", 0) > 0
    expected = plain.loglikelihood(requests)
    assert "prefix_tokens_reused" not in plain.stats
    for a, b in zip(reused, expected):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
        assert a.is_greedy == b.is_greedy
    # The general multi-token path (continuation positions read one by one) agrees too.
    for request, result in zip(requests[:4], reused[:4]):
        context = plain.tokenizer.encode(request.prompt)
        with torch.no_grad():
            logits = plain.model(torch.tensor([context])).logits[0, -1].float()
        token = plain.tokenizer.encode(request.prompt + request.continuation)[-1]
        assert result.logprob == pytest.approx(float(torch.log_softmax(logits, -1)[token]), abs=1e-4)


def test_vllm_backend_without_vllm_or_gpu_says_how_to_get_it(monkeypatch):
    import builtins

    from qwen_evals.backends.vllm import VLLMBackend

    real_import = builtins.__import__

    def no_vllm(name, *args, **kwargs):
        if name == "vllm":
            raise ImportError("No module named 'vllm'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_vllm)
    with pytest.raises(EvalError, match=r"pip install 'qwen-evals\[vllm\]'"):
        VLLMBackend(name="v", path="Qwen/Qwen-7B-Chat", precision=FP32)
    with pytest.raises(EvalError, match="nf4 only"):
        VLLMBackend(name="v", path="Qwen/Qwen-7B-Chat", precision=Precision("int8", "bfloat16", "int8"))


def test_continuous_batching_engine_equals_static_generation(tiny_qwen2, batched):
    continuous = backend(tiny_qwen2, generation_engine="continuous")
    requests = [Generate(p, max_new_tokens=8) for p in PROMPTS[:3]]
    expected = texts(batched.generate(requests))
    assert texts(continuous.generate(requests)) == expected
    stop = expected[0][2:4]
    [cut] = texts(continuous.generate([Generate(PROMPTS[0], max_new_tokens=8, stop=(stop,))]))
    assert cut == expected[0][: expected[0].index(stop)]


def test_checkpoint_sampling_defaults_do_not_leak_into_greedy_decoding(tiny_qwen2, batched, tmp_path):
    """Qwen-7B-Chat ships do_sample, top_p 0.8 and repetition_penalty 1.1: a greedy protocol must not inherit them."""
    import shutil

    from transformers import GenerationConfig

    chat_defaults = shutil.copytree(tiny_qwen2, tmp_path / "with-chat-defaults")
    eos = batched.model.generation_config.eos_token_id
    GenerationConfig(do_sample=True, top_p=0.8, top_k=0, repetition_penalty=1.1, eos_token_id=eos).save_pretrained(
        chat_defaults
    )
    requests = [Generate(p, max_new_tokens=24) for p in PROMPTS]
    expected = texts(batched.generate(requests))
    leaky = backend(chat_defaults, max_batch_size=8)
    assert texts(leaky.generate(requests)) == expected
    overridden = leaky.describe()["generation"]["checkpoint_defaults_overridden"]
    assert {k: overridden[k] for k in ("do_sample", "top_p", "repetition_penalty")} == {
        "do_sample": True, "top_p": 0.8, "repetition_penalty": 1.1,
    }  # fmt: skip
    # The penalty does change this model's greedy replies, so the equality above means it was not applied.
    penalized = backend(tiny_qwen2, max_batch_size=8, generation_kwargs={"repetition_penalty": 1.1})
    assert texts(penalized.generate(requests)) != expected
    assert penalized.describe()["generation"]["user_overrides"] == {"repetition_penalty": 1.1}
