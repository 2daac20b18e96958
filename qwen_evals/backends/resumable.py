"""A backend wrapper that stores every finished request and reuses stored ones.

Missing requests go to the wrapped backend in chunks; each chunk is on disk
before the next starts, so a killed run loses at most one chunk of work.
Within a chunk the wrapped backend still sorts and batches freely.

A stored result is reused only for the same request on the same `key_identity()`:
the wrapped backend's identity (weights sha256, precision, attention kernel, chat
template, generation overrides, converter version, ...) and the versions of the
libraries that can change an output (`OUTPUT_LIBRARIES`). Change any of them and
the rerun recomputes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from qwen_evals.core.backend import Backend
from qwen_evals.core.provenance import OUTPUT_LIBRARIES, package_version
from qwen_evals.core.store import RequestStore, request_key
from qwen_evals.core.types import Generate, Generation, LogLikelihood, LogLikelihoodResult, ModelTokenizer


class ResumableBackend:
    def __init__(self, backend: Backend, store: RequestStore, chunk_size: int = 256) -> None:
        self.backend = backend
        self.store = store
        self.chunk_size = chunk_size
        self.name = backend.name
        self.precision = backend.precision
        self.reused = 0
        self._bypass = False
        self.computed = 0

    def identity(self) -> dict[str, Any]:
        return self.backend.identity()

    def key_identity(self) -> dict[str, Any]:
        """What a stored result's key covers besides the request."""
        return {**self.backend.identity(), "libraries": {name: package_version(name) for name in OUTPUT_LIBRARIES}}

    def checkpoint(self) -> dict[str, Any]:
        return self.backend.checkpoint()

    def chat_template(self) -> dict[str, Any]:
        return self.backend.chat_template()

    def model_tokenizer(self) -> ModelTokenizer | None:
        return self.backend.model_tokenizer()

    @contextmanager
    def one_at_a_time(self) -> Iterator[None]:
        """The batch-invariance canary must recompute, not read back what the batched run stored."""
        with self.backend.one_at_a_time():
            self._bypass = True
            try:
                yield
            finally:
                self._bypass = False

    def loglikelihood(self, requests: Sequence[LogLikelihood]) -> list[LogLikelihoodResult]:
        stored = self._resolve(requests, self.backend.loglikelihood)
        return [LogLikelihoodResult(**item) for item in stored]

    def generate(self, requests: Sequence[Generate]) -> list[Generation]:
        return [Generation(**item) for item in self._resolve(requests, self.backend.generate)]

    def _resolve(self, requests: Sequence[Any], compute: Callable[[list[Any]], list[Any]]) -> list[dict[str, Any]]:
        """Each request's result as the dict the store holds (computed when missing)."""
        if self._bypass:
            return [dataclasses.asdict(out) for out in compute(list(requests))]
        keys = self._keys(requests)
        missing = [i for i, key in enumerate(keys) if key not in self.store.results]
        unique = list({keys[i]: i for i in missing}.values())
        self.reused += len(requests) - len(missing)
        for start in range(0, len(unique), self.chunk_size):
            chunk = unique[start : start + self.chunk_size]
            outputs = compute([requests[i] for i in chunk])
            self.store.append((keys[i], dataclasses.asdict(out)) for i, out in zip(chunk, outputs))
            self.computed += len(chunk)
        return [self.store.results[key] for key in keys]

    def _keys(self, requests: Sequence[Any]) -> list[str]:
        """Content keys; the k-th copy of a sampled request gets its own key (pass@k draws n samples).

        Copies of a greedy request share one key, so they are computed once.
        """
        identity = self.key_identity()
        seen: dict[str, int] = {}
        keys = []
        for request in requests:
            key = request_key(identity, request)
            if isinstance(request, Generate) and not request.decoding.greedy:
                seen[key] = seen.get(key, 0) + 1
                key = f"{key}#{seen[key]}"
            keys.append(key)
        return keys

    def describe(self) -> dict[str, Any]:
        return {
            **self.backend.describe(),
            "resume": {
                "store": str(self.store.folder),
                "reused": self.reused,
                "computed": self.computed,
                "dropped_partial_lines": self.store.dropped_partial_lines,
            },
        }
