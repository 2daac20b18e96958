"""The OpenAIBackend: evaluation requests to an OpenAI-compatible server (see the package docstring).

Requests become hashable items; identical ones are sent once, the rest run in a
bounded thread pool over `http.JsonClient`, and results come back in request order.
Each answer is also reported the moment it arrives (`on_result`), so the resume
store keeps it even if a later request fails and the call is aborted.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any
from urllib.parse import urlsplit

from tqdm import tqdm

from qwen_evals.backends.chat_format import QWEN_DEFAULT_SYSTEM, render_chatml, with_system
from qwen_evals.backends.openai.http import JsonClient, ServerError, attempt_stats
from qwen_evals.backends.openai.logprobs import continuation_tokens
from qwen_evals.backends.openai.replies import finish_reason, first_choice, sampling_fields
from qwen_evals.backends.precision import Precision
from qwen_evals.backends.prompting import split_at_stop
from qwen_evals.core.backend import OnResult
from qwen_evals.core.errors import EvalError
from qwen_evals.core.types import Generate, Generation, LogLikelihood, LogLikelihoodResult, Message, Prompt

CHAT_FORMATS = (None, "chatml")


class OpenAIBackend:
    reports_each_result = True
    """`generate` and `loglikelihood` call `on_result(i, result)` as each request is answered."""

    def __init__(
        self,
        name: str,
        model: str,
        base_url: str = "http://localhost:8000/v1",
        api_key_env: str | None = "OPENAI_API_KEY",
        concurrency: int = 16,
        timeout_s: float = 600.0,
        max_retries: int = 5,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        system_prompt: str | None = QWEN_DEFAULT_SYSTEM,
        loglikelihood_max_tokens: int = 1,
        loglikelihood_chat_format: str | None = None,
        extra_body: dict[str, Any] | None = None,
        precision: Precision | None = None,
        show_progress: bool = True,
    ) -> None:
        """
        Args:
            name: the label in result paths and tables.
            model: the model name the server serves (the request's "model" field).
            base_url: the server's OpenAI API root, e.g. http://host:8000/v1.
            api_key_env: environment variable holding the API key (sent as a Bearer
                token); unset or empty sends none (local servers need none).
            concurrency: requests in flight at once.
            timeout_s: per-request socket timeout (connect, and each wait for data).
            max_retries: retries after the first attempt on 429 / 408 / 5xx / timeouts.
            backoff_s, max_backoff_s: exponential backoff base and cap (jittered).
            system_prompt: the system message of every chat prompt that has none, sent to the
                server (which renders it with the model's template); null sends none, so the
                server's template writes its own default system turn, if any.
            loglikelihood_max_tokens: `max_tokens` of echo requests; 1 works everywhere,
                0 saves a decode step on servers that accept it (vLLM).
            loglikelihood_chat_format: how a log-likelihood request with a chat prompt is
                rendered to text for the completions endpoint: null refuses (the server's
                template cannot be applied to an echo request), `chatml` renders ChatML.
            extra_body: extra JSON fields for every request (e.g. {top_k: 1, seed: 0}).
            precision: what the runner was asked for; informational (the server decides).
            show_progress: a tqdm bar per call.
        """
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise EvalError(f"model.base_url={base_url!r} must be an http(s) URL such as http://localhost:8000/v1")
        if concurrency < 1:
            raise EvalError(f"model.concurrency={concurrency} must be at least 1")
        if max_retries < 0:
            raise EvalError(f"model.max_retries={max_retries} must be at least 0")
        if timeout_s <= 0:
            raise EvalError(f"model.timeout_s={timeout_s} must be positive")
        if loglikelihood_max_tokens not in (0, 1):
            raise EvalError(f"model.loglikelihood_max_tokens={loglikelihood_max_tokens} must be 0 or 1")
        if loglikelihood_chat_format not in CHAT_FORMATS:
            raise EvalError(
                f"model.loglikelihood_chat_format={loglikelihood_chat_format!r} is not one of {list(CHAT_FORMATS)}"
            )
        self.name = name
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.concurrency = concurrency
        self.timeout_s = float(timeout_s)
        self.max_retries = max_retries
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self.system_prompt = system_prompt
        self.loglikelihood_max_tokens = loglikelihood_max_tokens
        self.loglikelihood_chat_format = loglikelihood_chat_format
        self.extra_body = dict(extra_body or {})
        self.precision = precision
        self.show_progress = show_progress
        self.settings: list[dict[str, Any]] = []
        """Every distinct set of generation fields a request sent (recorded in summary.json)."""
        self._http = JsonClient(
            base_url,
            model=model,
            api_key=os.environ.get(api_key_env, "") if api_key_env else "",
            timeout_s=self.timeout_s,
            max_retries=max_retries,
            backoff_s=self.backoff_s,
            max_backoff_s=self.max_backoff_s,
            stats=_fresh_stats(),
        )

    @property
    def stats(self) -> dict[str, Any]:
        """Counters of this backend's calls; the HTTP client's own dict, so its attempts land here too."""
        return self._http.stats

    @stats.setter
    def stats(self, value: dict[str, Any]) -> None:
        self._http.stats = value

    # ---- prompts ---------------------------------------------------------------

    def messages(self, prompt: list[Message]) -> list[Message]:
        """Chat messages as sent: `system_prompt` first when there is no system turn."""
        return with_system(prompt, self.system_prompt)

    def _loglikelihood_text(self, prompt: Prompt) -> str:
        if isinstance(prompt, str):
            return prompt
        if self.loglikelihood_chat_format == "chatml":
            return render_chatml(prompt, self.system_prompt or QWEN_DEFAULT_SYSTEM)
        raise EvalError(
            "log-likelihood requests with chat prompts cannot be scored through an OpenAI-compatible server "
            "(the completions endpoint takes text and the chat endpoint returns no prompt log-probs); "
            "use a text-prompt protocol (task.protocol=base_5shot), a generation protocol, or "
            "model.loglikelihood_chat_format=chatml for ChatML models"
        )

    # ---- requests --------------------------------------------------------------

    def loglikelihood(
        self, requests: Sequence[LogLikelihood], on_result: OnResult | None = None
    ) -> list[LogLikelihoodResult]:
        """Sum of the continuation tokens' log-probs from echoed prompt log-probs."""
        items = []
        for request in requests:
            if not request.continuation:
                raise EvalError("empty continuation in a log-likelihood request")
            items.append((self._loglikelihood_text(request.prompt), request.continuation))
        return self._run_unique(items, self._score_one, "loglikelihood", on_result)

    def generate(self, requests: Sequence[Generate], on_result: OnResult | None = None) -> list[Generation]:
        # Sampled requests are each drawn (pass@k asks n copies); greedy copies are sent once.
        items = [
            (_freeze(r.prompt), r.max_new_tokens, tuple(r.stop), r.decoding, -1 if r.decoding.greedy else i)
            for i, r in enumerate(requests)
        ]
        return self._run_unique(items, self._generate_one, "generate", on_result)

    def _run_unique(
        self, items: list[Any], run: Callable[[Any], Any], label: str, on_result: OnResult | None
    ) -> list[Any]:
        unique = list(dict.fromkeys(items))
        if on_result is not None:
            run = _reporting(run, items, on_result)
        start = time.perf_counter()
        try:
            outputs = self._map(run, unique, label)
        finally:
            self._http.close_connections()
            with self._http.lock:
                self.stats["seconds"] += time.perf_counter() - start
        by_item = dict(zip(unique, outputs))
        return [by_item[item] for item in items]

    def _map(self, run: Callable[[Any], Any], items: list[Any], label: str) -> list[Any]:
        """`run` over `items` on at most `concurrency` threads; results in order, first error raised.

        The first item runs alone, so a server that cannot serve this kind of
        request (no log-probs, unknown model) fails after one request, not a pool's worth.
        """
        if not items:
            return []
        self._http.abort.clear()
        with tqdm(
            total=len(items),
            desc=f"{label} ({self.model})",
            unit="req",
            dynamic_ncols=True,
            disable=not self.show_progress,
        ) as bar:
            first = run(items[0])
            bar.update(1)
            if len(items) == 1:
                return [first]
            with ThreadPoolExecutor(
                max_workers=min(self.concurrency, len(items) - 1), thread_name_prefix="openai"
            ) as pool:
                futures = [pool.submit(run, item) for item in items[1:]]
                pending = set(futures)
                try:
                    while pending:
                        done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                        for future in done:
                            future.result()  # raises the worker's error
                        bar.update(len(done))
                except BaseException:
                    self._http.abort.set()  # running workers stop retrying; queued ones never start
                    for future in futures:
                        future.cancel()
                    raise
            return [first] + [future.result() for future in futures]

    def _generate_one(self, item: tuple) -> Generation:
        prompt, max_new, stop, decoding, _ = item
        settings: dict[str, Any] = {"max_tokens": max_new, "n": 1, **sampling_fields(decoding)}
        if stop:
            settings["stop"] = list(stop)
        with self._http.lock:
            if settings not in self.settings:
                self.settings.append(settings)
        body: dict[str, Any] = {"model": self.model, **settings}
        if isinstance(prompt, str):
            endpoint = "/completions"
            body["prompt"] = prompt
        else:
            endpoint = "/chat/completions"
            body["messages"] = self.messages(_thaw(prompt))
        start = time.perf_counter()
        reply = self._http.post(endpoint, {**self.extra_body, **body})
        seconds = time.perf_counter() - start
        choice = first_choice(reply, self._http.url(endpoint))
        text = choice.get("text") if endpoint == "/completions" else (choice.get("message") or {}).get("content")
        text, string = split_at_stop(text or "", stop)
        reason, ended = finish_reason(choice, stop, string)
        usage = reply.get("usage") or {}
        rendered = prompt if isinstance(prompt, str) else None  # the server applies its chat template
        return Generation(
            text, reason, ended, usage.get("prompt_tokens"), usage.get("completion_tokens"), None, rendered, seconds
        )

    def _score_one(self, item: tuple[str, str]) -> LogLikelihoodResult:
        context, continuation = item
        text = context + continuation
        body = {
            "model": self.model,
            "prompt": text,
            "max_tokens": self.loglikelihood_max_tokens,
            "temperature": 0.0,
            "echo": True,
            "logprobs": 1,
        }
        url = self._http.url("/completions")
        try:
            reply = self._http.post("/completions", {**self.extra_body, **body})
        except ServerError as error:
            if error.status in (401, 403, 404):
                raise
            raise EvalError(
                f"{error}\nlog-likelihood protocols (task.protocol=base_5shot) send completions requests with "
                f"echo=true, logprobs=1, max_tokens={self.loglikelihood_max_tokens} and need the prompt's "
                "log-probs back; this server may not support that (vLLM does; with max_tokens=0 refused, "
                "try model.loglikelihood_max_tokens=1)"
            ) from error
        span = continuation_tokens(
            reply, first_choice(reply, url), url, len(text), continuation, self.loglikelihood_max_tokens
        )
        if span.merged:
            with self._http.lock:
                self.stats["boundary_merged_tokens"] += 1
        return span.score()

    # ---- bookkeeping -------------------------------------------------------------

    @contextlib.contextmanager
    def one_at_a_time(self) -> Iterator[None]:
        """One request in flight (server-side batching can change answers); run stats are kept."""
        saved = (self.concurrency, json.loads(json.dumps(self.stats)))
        self.concurrency = 1
        try:
            yield
        finally:
            self.concurrency, self.stats = saved

    def model_tokenizer(self) -> None:
        """None: the server tokenizes, and there is no local tokenizer to count tokens with."""
        return None

    def checkpoint(self) -> dict[str, Any]:
        """A served model: the name it is served under; its weights are the server's and unseen here."""
        return {"path": self.model, "revision": None, "commit": None, "weights_sha256": None, "served_at": self.base_url}

    def chat_template(self) -> dict[str, Any]:
        return {"format": "server", "sha256": None, "system_prompt": self.system_prompt}

    def identity(self) -> dict[str, Any]:
        """What besides the request decides an output; the URL is left out (a server may move)."""
        return {
            "backend": "openai",
            "model": self.model,
            "precision": self.precision.name if self.precision else None,
            "system_prompt": self.system_prompt,
            "loglikelihood_chat_format": self.loglikelihood_chat_format,
            "extra_body": self.extra_body,
        }

    def describe(self) -> dict[str, Any]:
        stats = self.stats
        tokens = stats["prompt_tokens"] + stats["completion_tokens"]
        seconds = stats["seconds"]
        return {
            "backend": "openai",
            "base_url": self.base_url,
            "model": self.model,
            "api_key_env": self.api_key_env,
            "precision": self.precision.name if self.precision else None,
            "precision_note": "informational: the server decides the served model's precision",
            "concurrency": self.concurrency,
            "timeout_s": self.timeout_s,
            "max_retries": self.max_retries,
            "system_prompt": {
                "configured": self.system_prompt,
                "used": self.system_prompt,
                "source": "model.system_prompt" if self.system_prompt is not None
                else "the server's chat template default (not known here)",
            },
            "generation": {
                "settings": self.settings,
                "checkpoint_defaults_overridden": "every sampling field is sent, so the server's and the "
                "checkpoint's defaults apply to none of them",
                "extra_fields": self.extra_body,
                "stop_tokens": "the server's (its tokenizer's eos and the checkpoint's generation config)",
            },
            "extra_body": self.extra_body,
            **json.loads(json.dumps(stats)),
            "tokens": tokens,
            "tokens_per_second": tokens / seconds if seconds else None,
            "generated_tokens_per_second": stats["completion_tokens"] / seconds if seconds else None,
        }


def _reporting(run: Callable[[Any], Any], items: list[Any], on_result: OnResult) -> Callable[[Any], Any]:
    """`run`, also reporting each answer for every position of its item in `items` (copies are sent once)."""
    positions: dict[Any, list[int]] = {}
    for i, item in enumerate(items):
        positions.setdefault(item, []).append(i)

    def run_and_report(item: Any) -> Any:
        output = run(item)
        for i in positions[item]:
            on_result(i, output)
        return output

    return run_and_report


def _fresh_stats() -> dict[str, Any]:
    return {**attempt_stats(), "seconds": 0.0, "boundary_merged_tokens": 0}


def _freeze(prompt: Prompt) -> Any:
    return prompt if isinstance(prompt, str) else tuple(tuple(sorted(m.items())) for m in prompt)


def _thaw(prompt: Any) -> list[Message]:
    return [dict(m) for m in prompt]
