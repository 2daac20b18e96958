"""Backends: transformers, vLLM, OpenAI-compatible servers, a fake for tests, and the request store wrapper.

Each implements `qwen_evals.core.backend.Backend`; selected by conf/model/*.yaml.
Imports the core layer only: never a task, never analysis.
"""
