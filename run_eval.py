"""Evaluate a model on a benchmark from a checkout: `python run_eval.py task=mmlu precision=bf16`.

The same as `qwen-evals run ...` (qwen_evals/cli/run.py).
"""

from qwen_evals.cli.run import main

if __name__ == "__main__":
    main()
