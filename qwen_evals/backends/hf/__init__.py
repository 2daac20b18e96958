"""Local transformers models (`HFBackend`): loading, log-likelihood scoring, generation, batching, version shims."""

from qwen_evals.backends.hf.backend import HFBackend

__all__ = ["HFBackend"]
