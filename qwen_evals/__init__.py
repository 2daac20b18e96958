"""qwen-evals: the Qwen-7B-Chat model-card evaluations for any Hugging Face causal LM.

The package is layered (ARCHITECTURE.md): `core` (contracts, runner, run
records), `scoring` (answer extraction, Rouge, sandboxes), `tasks` (one module
or package per benchmark), `backends` (transformers, vLLM, OpenAI-compatible
servers, the Qwen v1 converter), `analysis` (leaderboard, comparisons, gate)
and `cli` (the `qwen-evals` command). Importing the package imports nothing else.
"""

__version__ = "0.2.0"
