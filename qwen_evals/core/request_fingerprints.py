"""What a run asked, as fingerprints that tell apart a data change, a prompt change and a decoding change.

- `data`: the samples' ids and gold answers (another benchmark version, another split or limit);
- `prompts`: every request's prompt, and a log-likelihood request's continuation;
- `generation`: every generation request's max_new_tokens, stop strings and decoding;
- `exam` (summary.json's `data_fingerprint`): data and prompts together; equal exams mean the
  same questions were asked the same way, so two runs' scores measure the same thing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from qwen_evals.core.types import Generate, Request, Sample


def generation_setting(request: Generate) -> dict[str, Any]:
    return {"max_new_tokens": request.max_new_tokens, "stop": list(request.stop), "decoding": asdict(request.decoding)}


def generation_settings(per_sample: Sequence[Sequence[Request]]) -> list[dict[str, Any]]:
    """The distinct settings of a run's generation requests, in the order first used."""
    found: list[dict[str, Any]] = []
    for requests in per_sample:
        for request in requests:
            if isinstance(request, Generate) and generation_setting(request) not in found:
                found.append(generation_setting(request))
    return found


def request_fingerprints(samples: Sequence[Sample], per_sample: Sequence[Sequence[Request]]) -> dict[str, str]:
    digests = {facet: hashlib.sha256() for facet in ("data", "prompts", "generation", "exam")}

    def add(facet: str, value: Any) -> None:
        digests[facet].update(json.dumps(value, ensure_ascii=False, default=str).encode() + b"\n")

    for sample, requests in zip(samples, per_sample):
        data = [sample.id, sample.target]
        prompts = [[r.prompt, getattr(r, "continuation", None)] for r in requests]
        add("data", data)
        add("prompts", prompts)
        add("exam", [data, prompts])
        add("generation", [generation_setting(r) if isinstance(r, Generate) else None for r in requests])
    return {facet: digest.hexdigest() for facet, digest in digests.items()}
