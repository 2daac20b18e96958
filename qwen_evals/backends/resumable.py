"""A backend wrapper that stores every finished request and reuses stored ones.

A backend that reports each request as it is answered (`ReportsEachResult`: a
served model) gets every missing request in one call, and each answer is stored
the moment it arrives: a crash or an abort loses nothing that was answered.
Other backends get the missing requests in chunks; each chunk is on disk before
the next starts, so a killed run loses at most one chunk of work. Within a call
the wrapped backend still sorts and batches freely.

A stored result is reused only for the same request on the same `key_identity()`:
the wrapped backend's identity (weights sha256, precision, attention kernel, chat
template, generation overrides, converter version, ...) and the versions of the
libraries that can change an output (`OUTPUT_LIBRARIES`). Change any of them and
the rerun recomputes. A stored result is checked against the fields and types of
its kind before it is used: an entry of the wrong shape is an error naming its
file and line, never scored.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from qwen_evals.core.backend import Backend
from qwen_evals.core.errors import EvalError
from qwen_evals.core.provenance import OUTPUT_LIBRARIES, package_version
from qwen_evals.core.store import RequestStore, request_key
from qwen_evals.core.types import Generate, Generation, LogLikelihood, LogLikelihoodResult, ModelTokenizer

Result = TypeVar("Result", Generation, LogLikelihoodResult)


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
        return self._resolve(requests, self.backend.loglikelihood, LogLikelihoodResult)

    def generate(self, requests: Sequence[Generate]) -> list[Generation]:
        return self._resolve(requests, self.backend.generate, Generation)

    def _resolve(self, requests: Sequence[Any], compute: Callable[..., list[Any]], kind: type[Result]) -> list[Result]:
        """Each request's result (computed and stored when missing)."""
        if self._bypass:
            return list(compute(list(requests)))
        keys = self._keys(requests)
        missing = [i for i, key in enumerate(keys) if key not in self.store.results]
        unique = list({keys[i]: i for i in missing}.values())
        self.reused += len(requests) - len(missing)
        if getattr(self.backend, "reports_each_result", False):
            self._compute_each(unique, requests, keys, compute)
        else:
            for start in range(0, len(unique), self.chunk_size):
                chunk = unique[start : start + self.chunk_size]
                outputs = compute([requests[i] for i in chunk])
                self.store.append((keys[i], dataclasses.asdict(out)) for i, out in zip(chunk, outputs))
                self.computed += len(chunk)
        return [restore(kind, self.store.results[key], self.store.origin(key)) for key in keys]

    def _compute_each(
        self, chosen: list[int], requests: Sequence[Any], keys: list[str], compute: Callable[..., list[Any]]
    ) -> None:
        """One call for every missing request; each answer is stored as it arrives (synced to disk at the end)."""

        def store(position: int, output: Any) -> None:
            self.store.append([(keys[chosen[position]], dataclasses.asdict(output))], sync=False)

        try:
            outputs = compute([requests[i] for i in chosen], on_result=store)
        finally:
            self.store.sync()
        unreported = [
            (keys[i], dataclasses.asdict(out)) for i, out in zip(chosen, outputs) if keys[i] not in self.store.results
        ]
        self.store.append(unreported)
        self.computed += len(chosen)

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


def restore(kind: type[Result], item: Any, origin: str) -> Result:
    """A stored result as `kind`, or an EvalError (naming `origin`) when its fields or their types are not kind's."""
    hints = _field_types(kind)
    if not isinstance(item, dict):
        problems = [f"a {type(item).__name__}, not an object"]
    else:
        required = {f.name for f in dataclasses.fields(kind) if f.default is dataclasses.MISSING}
        problems = [f"no {name!r}" for name in sorted(required - set(item))]
        problems += [f"unknown field {name!r}" for name in sorted(set(item) - set(hints))]
        problems += [
            f"{name!r} is {type(value).__name__} {value!r:.40}, expected {_type_name(hints[name])}"
            for name, value in item.items()
            if name in hints and not _is_a(value, hints[name])
        ]
    if problems:
        raise EvalError(
            f"{origin}: the stored result is not a {kind.__name__} ({'; '.join(problems)}); delete it to recompute"
        )
    return kind(**item)


@functools.cache
def _field_types(kind: type) -> dict[str, Any]:
    return typing.get_type_hints(kind)


def _is_a(value: Any, hint: Any) -> bool:
    """JSON's view of a field type: an int is a float, a bool is no int."""
    for allowed in typing.get_args(hint) or (hint,):
        if isinstance(value, bool) and allowed is not bool:
            continue
        if isinstance(value, allowed) or (allowed is float and isinstance(value, int)):
            return True
    return False


def _type_name(hint: Any) -> str:
    return " or ".join(getattr(t, "__name__", str(t)) for t in typing.get_args(hint) or (hint,))
