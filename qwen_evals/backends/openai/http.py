"""JSON over HTTP to an OpenAI-compatible server, with retries.

Requests run on a kept-alive connection of the calling worker thread
(http.client: no proxy is consulted, no extra dependency). 429, 408, 5xx,
timeouts, dropped connections and a 200 whose body is not a JSON object
(truncated or malformed) are retried with exponential backoff and jitter (a
429's Retry-After is honoured); other 4xx raise `ServerError` at once, and
exhausted retries an EvalError naming the URL and the last failure. Every
attempt is counted in `stats`.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
from typing import Any
from urllib.parse import urlsplit

from qwen_evals.core.errors import EvalError

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 300.0
"""A server's Retry-After is honoured up to this many seconds."""


class ServerError(EvalError):
    """The server refused a request (4xx other than 408 / 429): retrying would not help."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def attempt_stats() -> dict[str, Any]:
    """The counters `JsonClient.post` keeps, all zero."""
    return {
        "requests": {},  # successful replies per endpoint
        "http_requests": 0,  # attempts, retries included
        "retries": 0,
        "failures": {},  # failed attempts by kind ("HTTP 503", "timeout", "connection")
        "prompt_tokens": 0,
        "completion_tokens": 0,
    }


class JsonClient:
    """POSTs JSON to endpoints under one API root, from any number of threads.

    `stats` is the caller's dict (it may hold more keys); `lock` guards it and the
    connection list, and `abort`, once set, makes every retry loop give up.
    """

    def __init__(
        self,
        base_url: str,
        *,
        model: str,
        api_key: str,
        timeout_s: float,
        max_retries: int,
        backoff_s: float,
        max_backoff_s: float,
        stats: dict[str, Any],
    ) -> None:
        parts = urlsplit(base_url)
        self.base_url = base_url.rstrip("/")
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port
        self._path = parts.path.rstrip("/")
        self.model = model  # named in the hint of a 404
        self._api_key = api_key
        self.timeout_s = float(timeout_s)
        self.max_retries = max_retries
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self.stats = stats
        self.lock = threading.Lock()
        self.abort = threading.Event()
        self._local = threading.local()
        self._connections: list[http.client.HTTPConnection] = []

    def url(self, endpoint: str) -> str:
        return self.base_url + endpoint

    # ---- connections -------------------------------------------------------------

    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            kind = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
            connection = kind(self._host, self._port, timeout=self.timeout_s)
            self._local.connection = connection
            with self.lock:
                self._connections.append(connection)
        return connection

    def close_connections(self) -> None:
        """Close every kept-alive connection (between calls a server may drop idle ones)."""
        with self.lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()
        self._local.connection = None

    def _drop_connection(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None
            with self.lock:
                if connection in self._connections:
                    self._connections.remove(connection)

    # ---- requests ----------------------------------------------------------------

    def post(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST JSON with retries; the parsed reply, or an EvalError naming the URL and the last failure."""
        url = self.url(endpoint)
        payload = json.dumps(body, ensure_ascii=False).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        last = ""
        for attempt in range(self.max_retries + 1):
            if self.abort.is_set():
                raise EvalError(f"{url}: cancelled after another request failed")
            if attempt:
                with self.lock:
                    self.stats["retries"] += 1
            with self.lock:
                self.stats["http_requests"] += 1
            try:
                return self._attempt(url, endpoint, payload, headers)
            except _Retryable as error:
                last = error.reason
                with self.lock:
                    failures = self.stats["failures"]
                    failures[error.reason.split(":")[0]] = failures.get(error.reason.split(":")[0], 0) + 1
                if attempt == self.max_retries:
                    break
                delay = self._backoff(attempt, error.retry_after)
                if self.abort.wait(delay):
                    raise EvalError(f"{url}: cancelled after another request failed") from None
        raise EvalError(f"{url} failed after {self.max_retries + 1} attempts; last: {last}")

    def _attempt(self, url: str, endpoint: str, payload: bytes, headers: dict[str, str]) -> dict[str, Any]:
        try:
            connection = self._connection()
            connection.request("POST", self._path + endpoint, body=payload, headers=headers)
            response = connection.getresponse()
            status = response.status
            data = response.read()
            retry_after = response.getheader("Retry-After")
            if response.getheader("Connection", "").lower() == "close":
                self._drop_connection()
        except TimeoutError as error:  # socket.timeout too
            self._drop_connection()
            raise _Retryable(f"timeout: no reply within model.timeout_s={self.timeout_s:g}s") from error
        except (ConnectionError, http.client.HTTPException, OSError) as error:
            self._drop_connection()
            raise _Retryable(f"connection: {type(error).__name__}: {error}") from error
        if status in RETRY_STATUSES or status >= 500:
            raise _Retryable(
                f"HTTP {status}: {_excerpt(data)}", _retry_after_seconds(retry_after) if status in (429, 503) else None
            )
        if status != 200:
            hint = " (check model.api_key_env)" if status in (401, 403) else ""
            hint = hint or (f" (is model.model={self.model!r} served there?)" if status == 404 else "")
            raise ServerError(f"{url} answered HTTP {status}{hint}: {_excerpt(data)}", status)
        try:
            reply = json.loads(data)
        except ValueError as error:  # a body cut short, or a proxy's page: the next attempt may be whole
            self._drop_connection()
            raise _Retryable(f"invalid JSON: HTTP 200 with {_excerpt(data)}") from error
        if not isinstance(reply, dict):
            raise _Retryable(f"invalid JSON: HTTP 200 with {_excerpt(data)} (not an object)")
        usage = reply.get("usage") or {}
        with self.lock:
            path = self._path + endpoint
            self.stats["requests"][path] = self.stats["requests"].get(path, 0) + 1
            self.stats["prompt_tokens"] += int(usage.get("prompt_tokens") or 0)
            self.stats["completion_tokens"] += int(usage.get("completion_tokens") or 0)
        return reply

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, MAX_RETRY_AFTER_S)
        ceiling = min(self.max_backoff_s, self.backoff_s * 2**attempt)
        return ceiling / 2 + random.uniform(0, ceiling / 2)  # "equal jitter"


def _excerpt(data: bytes, limit: int = 300) -> str:
    text = data.decode("utf-8", "replace").strip()
    return text if len(text) <= limit else text[:limit] + "..."


def _retry_after_seconds(value: str | None) -> float | None:
    """Retry-After in seconds (the HTTP-date form is not worth a parser here: back off instead)."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
