"""The packed engine (decoder.py, attention.py, refill.py) against transformers' own forward and generate."""

from __future__ import annotations

import pytest
import torch

from qwen_evals.backends.hf.attention import RowsAttention
from qwen_evals.backends.hf.backend import HFBackend
from qwen_evals.backends.hf.decoder import Decoder, unsupported_reason
from qwen_evals.backends.hf.refill import token_chooser
from qwen_evals.backends.precision import Precision
from qwen_evals.core.errors import EvalError
from qwen_evals.core.types import Decoding, Generate
from tests.test_hf_backend import PROMPTS, backend, few_shot_requests, loglik_requests

FACTS = ("text", "finish_reason", "stop", "prompt_tokens", "generated_tokens")


@pytest.fixture(scope="module", params=[True, False], ids=["onednn", "torch-linear"])
def packed(tiny_qwen2, request) -> HFBackend:
    """The packed engine with each of its linear kernels (`cpu_linear.py`), chosen here rather than by timing."""
    return backend(tiny_qwen2, max_batch_size=3, pack_linears=request.param)


@pytest.fixture(scope="module")
def padded(tiny_qwen2) -> HFBackend:
    return backend(tiny_qwen2, packed=False, generation_engine="static", max_batch_size=3)


def many_prompts() -> list[str]:
    """More prompts than slots, of very different lengths, so slots are refilled and compacted."""
    return PROMPTS + [f"Count with me: {' '.join(str(i) for i in range(n))}" for n in (3, 40, 11, 70)]


def facts(generations) -> list[list]:
    return [[getattr(g, f) for f in FACTS] for g in generations]


def test_the_tiny_model_runs_packed_and_refilled(packed, padded):
    assert packed.describe()["scoring_forward"] == "packed" and packed.generator.engine == "refill"
    assert padded.describe()["scoring_forward"] == "padded" and padded.generator.engine == "static"
    # The projections' kernel changes the last bits of every output: the run records the one it ran, per
    # request kind, and stored results are keyed by the setting that chose it.
    kernel = "onednn-packed" if packed.pack_linears else "torch"
    assert packed.describe()["linear_kernel"] == {"scoring": kernel, "generation": kernel}
    assert padded.describe()["linear_kernel"] == {"scoring": "torch", "generation": "torch"}
    assert packed.identity()["pack_linears"] is packed.pack_linears
    projections = [p for n, p in packed.model.named_parameters() if n.endswith("proj.weight")] + [packed.model.lm_head.weight]
    expected_bytes = sum(p.numel() * 4 for p in projections) if packed.pack_linears else 0
    assert packed.describe()["linear_packed_bytes"] == expected_bytes
    assert padded.describe()["linear_packed_bytes"] == 0


def test_packed_scores_equal_the_padded_transformers_forward(packed, padded):
    requests = loglik_requests() + few_shot_requests()
    ours, theirs = packed.loglikelihood(requests), padded.loglikelihood(requests)
    assert packed.stats["prefix_tokens_reused"] > 0
    for a, b in zip(ours, theirs):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
        assert (a.is_greedy, a.context_tokens) == (b.is_greedy, b.context_tokens)


@pytest.mark.parametrize("decoding", [Decoding(), Decoding(repetition_penalty=1.3)], ids=["greedy", "penalty"])
def test_refilled_slots_generate_what_transformers_generate_does(packed, padded, decoding):
    requests = [Generate(p, max_new_tokens=n, decoding=decoding) for p in many_prompts() for n in (5, 17)]
    ours, theirs = packed.generate(requests), padded.generate(requests)
    assert facts(ours) == facts(theirs)
    assert packed.stats["refill"]["slots"] == 3 and packed.stats["refill"]["prefills"] > 1  # refilled, not one static batch


def test_finished_sequences_stop_costing_compute(tiny_qwen2):
    engine = backend(tiny_qwen2, max_batch_size=4)
    made = engine.generate([Generate(p, max_new_tokens=n) for p, n in zip(many_prompts(), (2, 30, 9, 1, 25, 4, 13, 30))])
    # Each sequence is fed to a decoding step once per token it generated after the first: no padding,
    # no finished rows carried along.
    refill = engine.stats["refill"]
    assert refill["decoded_tokens"] == sum(g.generated_tokens - 1 for g in made)
    assert refill["decode_steps"] < refill["decoded_tokens"]


def test_sampling_with_top_k_1_is_greedy(packed):
    prompts = many_prompts()[:5]
    greedy = packed.generate([Generate(p, max_new_tokens=12) for p in prompts])
    sampled = packed.generate([Generate(p, max_new_tokens=12, decoding=Decoding(temperature=0.7, top_k=1)) for p in prompts])
    assert facts(sampled) == facts(greedy)


def test_greedy_choice_breaks_ties_at_the_first_index_as_argmax_does():
    logits = torch.tensor([[0.0, 2.0, 1.0, 2.0], [5.0, 5.0, 5.0, 5.0], [-1.0, -3.0, -0.5, -0.5]])
    chosen = token_chooser(Decoding())(logits, None)
    assert chosen.tolist() == logits.argmax(-1).tolist() == [1, 0, 2]


def test_stop_strings_end_refilled_sequences_early(packed):
    free = packed.generate([Generate(p, max_new_tokens=20) for p in many_prompts()])
    stop = free[1].text[3:5]
    cut = packed.generate([Generate(p, max_new_tokens=20, stop=(stop,)) for p in many_prompts()])
    for full, short in zip(free, cut):
        if stop in full.text:
            assert (short.text, short.finish_reason, short.stop) == (full.text[: full.text.index(stop)], "stop", stop)
            assert short.generated_tokens < full.generated_tokens
        else:
            assert facts([short]) == facts([full])


def test_the_short_element_wise_roads_are_taken_only_where_they_give_the_models_numbers(packed, tiny_qwen2, monkeypatch):
    """float32 rotary and RMSNorm run the shorter way; a model whose functions differ keeps its own."""
    assert packed.decoder._fast_rope and packed.decoder._fast_norm  # the scores above went through them
    model = packed.model
    with monkeypatch.context() as patch:
        patch.setattr(
            type(model.model.layers[0].self_attn).__module__ + ".apply_rotary_pos_emb",
            lambda q, k, cos, sin, unsqueeze_dim: (q.flip(-1) * cos[:, None], k * cos[:, None]),
        )
        other_rope = Decoder(model)
    assert not other_rope._fast_rope and other_rope._fast_norm
    norm = model.model.layers[1].post_attention_layernorm
    norm.forward = lambda x: x * norm.weight  # one layer's norm that does not normalise
    try:
        other_norm = Decoder(model)
    finally:
        del norm.forward
    assert other_norm._fast_rope and not other_norm._fast_norm
    bf16 = HFBackend(name="tiny", path=str(tiny_qwen2), precision=Precision("bf16", "bfloat16"), device_map=None)
    assert not (bf16.decoder._fast_rope or bf16.decoder._fast_norm)


def test_unsupported_layouts_fall_back_to_transformers(tiny_qwen2, tmp_path):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, use_sliding_window=True, sliding_window=8, max_window_layers=0,
    )  # fmt: skip
    model = Qwen2ForCausalLM(config)
    assert unsupported_reason(model) == "sliding-window attention"
    model.save_pretrained(tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((tiny_qwen2 / name).read_bytes())
    fallback = backend(tmp_path)
    assert (fallback.describe()["scoring_forward"], fallback.generator.engine) == ("padded", "static")
    with pytest.raises(EvalError, match="refill cannot run this model: sliding-window"):
        backend(tmp_path, generation_engine="refill")


def test_one_at_a_time_runs_one_slot(packed):
    requests = [Generate(p, max_new_tokens=6) for p in many_prompts()]
    with packed.one_at_a_time():
        before = dict(packed.stats["refill"])
        alone = packed.generate(requests)
        after = packed.stats["refill"]
        # One live sequence a step.
        assert after["decode_steps"] - before["decode_steps"] == after["decoded_tokens"] - before["decoded_tokens"]
    assert facts(alone) == facts(packed.generate(requests))


def test_prefix_keys_are_read_not_recomputed(tiny_qwen2):
    """A group's rows see the prefix through its cached keys: the same scores as whole contexts, fewer tokens run."""
    requests = few_shot_requests()
    reused = backend(tiny_qwen2)
    plain = backend(tiny_qwen2, reuse_prefix=False)
    a, b = reused.loglikelihood(requests), plain.loglikelihood(requests)
    assert [r.logprob for r in a] == pytest.approx([r.logprob for r in b], abs=1e-4)
    assert reused.stats["tokens"] + reused.stats["prefix_tokens_reused"] == plain.stats["tokens"]


def test_the_paged_cache_of_continuous_batching_is_sized_by_the_run_not_the_free_memory(packed):
    """Left to transformers, the CPU cache and its masks are sized from free RAM (a ~15 GB test process)."""
    generator = packed.generator
    small = generator._paged_cache_size([[1] * 40, [1] * 90], max_new=30)
    assert small.num_blocks * small.page_size >= 90 + 30  # the longest sequence fits
    assert small.num_blocks * small.page_size < 40 + 90 + 2 * 30 + small.page_size  # and not much more than all of them
    huge = generator._paged_cache_size([[1] * 500] * 10_000, max_new=256)
    assert huge.num_blocks * huge.page_size <= packed.batcher.max_batch_tokens + huge.page_size
    assert huge.max_batch_tokens <= packed.batcher.max_batch_tokens


def test_dynamic_rope_scaling_runs_on_transformers_forward():
    """Dynamic NTK scales positions by the longest sequence of a forward: packing would change a row's rope."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0},
    )  # fmt: skip
    assert unsupported_reason(LlamaForCausalLM(config)).startswith("dynamic RoPE scaling")


def test_bf16_rows_over_a_shared_prefix_score_as_transformers_does(tiny_qwen2):
    """The prefix and own-row attention are merged in float32 and handed back in the model's dtype."""
    bf16 = Precision("bf16", "bfloat16")
    requests = few_shot_requests()
    ours = HFBackend(name="tiny", path=str(tiny_qwen2), precision=bf16, device_map=None).loglikelihood(requests)
    theirs = HFBackend(name="tiny", path=str(tiny_qwen2), precision=bf16, device_map=None, packed=False).loglikelihood(requests)
    assert [r.logprob for r in ours] == pytest.approx([r.logprob for r in theirs], rel=0.02, abs=0.05)


def reference_attention(q, k, v, lengths, prefix):
    """float64 softmax attention of each packed row over the prefix and, causally, itself."""
    groups = q.shape[1] // k.shape[1]
    outputs, start = [], 0
    for length in lengths:
        keys = torch.cat([prefix[0].transpose(0, 1), k[start : start + length]]).double().repeat_interleave(groups, 1)
        values = torch.cat([prefix[1].transpose(0, 1), v[start : start + length]]).double().repeat_interleave(groups, 1)
        scores = torch.einsum("qhd,khd->hqk", q[start : start + length].double(), keys) / q.shape[-1] ** 0.5
        seen = prefix[0].shape[1]
        allowed = torch.arange(seen + length)[None, :] <= torch.arange(length)[:, None] + seen
        weights = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
        outputs.append(torch.einsum("hqk,khd->qhd", weights, values).reshape(length, -1))
        start += length
    return torch.cat(outputs)


@pytest.mark.parametrize("prefix_length", [0, 11])
@pytest.mark.parametrize("packed_rows", [True, False], ids=["packed-runs", "padded-grid"])
def test_rows_attend_causally_to_themselves_after_the_prefix(prefix_length, packed_rows):
    """Both layouts, rows of unsorted lengths with runs of equal ones, grouped-query heads, against float64."""
    lengths, heads, kv_heads, head_dim = [5, 9, 9, 3, 9, 1, 1], 6, 2, 16
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(sum(lengths), n, head_dim, generator=generator) for n in (heads, kv_heads, kv_heads))
    prefix = [tuple(torch.randn(kv_heads, prefix_length, head_dim, generator=generator) for _ in "kv")]
    attention = RowsAttention(lengths, torch.device("cpu"), torch.float32, prefix=prefix if prefix_length else None, packed=packed_rows)
    assert attention.runs == [(1, 5), (2, 9), (1, 3), (1, 9), (2, 1)]
    out = attention(0, q, k, v)
    assert out.shape == (sum(lengths), heads * head_dim)
    torch.testing.assert_close(out.double(), reference_attention(q, k, v, lengths, prefix[0]), atol=1e-5, rtol=1e-5)
