"""Qwen (v1) checkpoints (remote code, tiktoken) as native Qwen2 ones.

Modules: `checkpoint` (reading a v1 checkpoint), `convert` (the tensor mapping
and writing the Qwen2 copy), `cache` (hub downloads and the conversion cache a
backend loads from), `tokenizer` (qwen.tiktoken as a fast tokenizer) and `cli`
(`python -m qwen_evals.backends.qwen1.cli qwen1 SRC DST`).
"""
