"""Runs one request list through lm-evaluation-harness's HF backend (HFLM) and times it.

Invoked by throughput.py with the interpreter of the environment that has
lm-eval installed: `python lmeval_worker.py REQUESTS.json RESULTS.json`.
REQUESTS.json: {"model_dir", "device", "dtype", "batch_size", "threads", "kind": "loglikelihood" |
"generate_until", "requests": [[context, continuation]] or [[context, max_new_tokens]], "warmup": requests
run untimed first, in the same process}.
Generation passes no stop strings (`until: []`), so lm-eval stops at the model's end token or the limit.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main(spec_path: str, out_path: str) -> None:
    import torch
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    spec = json.load(open(spec_path, encoding="utf-8"))
    torch.set_num_threads(spec["threads"])
    lm = HFLM(pretrained=spec["model_dir"], device=spec["device"], dtype=spec["dtype"], batch_size=spec["batch_size"])

    def instances(requests: list) -> list:
        if spec["kind"] == "loglikelihood":
            return [Instance("loglikelihood", {}, (c, x), i) for i, (c, x) in enumerate(requests)]
        return [
            Instance("generate_until", {}, (c, {"until": [], "max_gen_toks": n, "do_sample": False}), i)
            for i, (c, n) in enumerate(requests)
        ]

    run = getattr(lm, spec["kind"])
    if spec.get("warmup"):
        run(instances(spec["warmup"]))
    start, cpu = time.perf_counter(), time.process_time()
    outputs = run(instances(spec["requests"]))
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    if spec["kind"] == "loglikelihood":
        outputs = [[float(logprob), bool(greedy)] for logprob, greedy in outputs]
    result = {"seconds": seconds, "cpu_seconds": cpu_seconds, "load_average": os.getloadavg()[0], "outputs": outputs}
    json.dump(result, open(out_path, "w", encoding="utf-8"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
