"""The `qwen-evals` command and the Hydra entry point: the one layer that wires the others together."""
