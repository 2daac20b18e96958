"""A small OpenAI-compatible server on 127.0.0.1 serving a local transformers model, for tests.

It implements the parts of `/v1/completions` and `/v1/chat/completions` the
openai backend uses, the way vLLM answers them: greedy generation with stop
strings and end-of-turn tokens, and for `echo=true, logprobs=N` the prompt's
tokens with their log-probs (null for the first), top log-probs (the argmax
and the token itself) and character offsets. Chat messages are rendered with
the tokenizer's chat template, or ChatML when it has none.

Fault modes, settable between requests (`server.configure(...)`):
`fail_every=k` answers every k-th request with 503, `stall_s` sleeps that long
before answering, `rate_limit=n` answers the first n requests with 429 and
`Retry-After`, `logprobs=False` returns `"logprobs": null`, `usage=False` and
`offsets=False` leave those fields out, `prepend_bos=True` puts an
<|endoftext|> token in front of every prompt (as Llama-style servers add BOS),
`broken_body=k` answers the k-th request with HTTP 200 and the first half of
its JSON body, `die_after=n` answers n requests and then closes every
connection without a reply, as a server that died would.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

END_TOKENS = ("<|endoftext|>", "<|im_end|>")

DEFAULTS: dict[str, Any] = {
    "fail_every": 0,
    "stall_s": 0.0,
    "rate_limit": 0,
    "retry_after": "1",
    "logprobs": True,
    "usage": True,
    "offsets": True,
    "prepend_bos": False,
    "broken_body": 0,
    "die_after": 0,
}


def render_chat(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    turns = [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages]
    return "".join(turns) + "<|im_start|>assistant\n"


class StubModel:
    """The served model: greedy generation and prompt log-probs, one request at a time."""

    def __init__(self, path: Path | str) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        vocab = self.tokenizer.get_vocab()
        self.end_ids = [vocab[t] for t in END_TOKENS if t in vocab]
        self.bos_id = vocab["<|endoftext|>"]
        self.lock = threading.Lock()

    @torch.inference_mode()
    def generate(self, text: str, max_new: int, stop: list[str]) -> tuple[str, int, int, str, str | None]:
        """(text, prompt tokens, generated tokens, finish reason, the stop string that matched) as vLLM reports them."""
        ids = self.tokenizer.encode(text)
        with self.lock:
            out = self.model.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones((1, len(ids)), dtype=torch.long),
                max_new_tokens=max_new,
                do_sample=False,
                eos_token_id=self.end_ids,
                pad_token_id=self.end_ids[0],
            )
        new = out[0, len(ids) :].tolist()
        generated = self.tokenizer.decode(new, skip_special_tokens=True)
        cuts = sorted((generated.find(s), s) for s in stop if s and s in generated)
        if cuts:
            return generated[: cuts[0][0]], len(ids), len(new), "stop", cuts[0][1]
        return generated, len(ids), len(new), "length" if len(new) == max_new else "stop", None

    @torch.inference_mode()
    def echo(self, text: str, max_tokens: int, prepend_bos: bool) -> tuple[dict[str, Any], str, int]:
        """OpenAI `logprobs` of the prompt (plus `max_tokens` greedy tokens), the full text, prompt length."""
        ids = ([self.bos_id] if prepend_bos else []) + self.tokenizer.encode(text)
        with self.lock:  # vocabulary-wide log-probs a chunk of positions at a time (long few-shot prompts)
            hidden = self.model.model(torch.tensor([ids])).last_hidden_state[0]
            rows = [torch.log_softmax(self.model.lm_head(h).float(), dim=-1) for h in hidden.split(128)]
        picked = [(float(row.max()), int(row.argmax())) for chunk in rows for row in chunk]
        targets = ids[1:] + ([picked[-1][1]] if max_tokens else [])
        chosen = [float(chunk[j, t]) for chunk, block in zip(rows, _blocks(targets, 128)) for j, t in enumerate(block)]
        if max_tokens:
            ids = ids + [picked[-1][1]]
        # Offsets as a server computes them: lengths of decoded prefixes (special tokens shown).
        decoded = [self.tokenizer.decode(ids[:i]) for i in range(len(ids) + 1)]
        offsets = [len(d) for d in decoded[:-1]]
        tokens = [decoded[i + 1][offsets[i] :] for i in range(len(ids))]
        token_logprobs: list[float | None] = [None]
        top: list[dict[str, float] | None] = [None]
        for i in range(1, len(ids)):
            best_logprob, best = picked[i - 1]
            top.append({self.tokenizer.decode([best]): best_logprob, tokens[i]: chosen[i - 1]})
            token_logprobs.append(chosen[i - 1])
        n_prompt = len(ids) - max_tokens
        logprobs = {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top, "text_offset": offsets}
        return logprobs, text + self.tokenizer.decode(ids[n_prompt:], skip_special_tokens=True), n_prompt


class StubServer:
    """`with StubServer(model, "tiny") as server:` serves on `server.base_url` (…/v1)."""

    def __init__(self, model: StubModel, served_name: str) -> None:
        self.model = model
        self.served_name = served_name
        self.options = dict(DEFAULTS)
        self.count = 0
        self.received: list[dict[str, Any]] = []  # {"path", "body", "headers"} of every request
        self.lock = threading.Lock()
        self.closing = threading.Event()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def configure(self, **options: Any) -> None:
        unknown = set(options) - set(DEFAULTS)
        assert not unknown, f"unknown stub server options {unknown}"
        with self.lock:
            self.options = {**DEFAULTS, **options}
            self.count = 0
            self.received = []

    def __enter__(self) -> StubServer:  # noqa: PYI034
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.closing.set()  # wakes stalled handlers
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    # ---- request handling ----------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real servers

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                try:
                    body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                    status, payload, headers, fault = server.answer(self.path, body, dict(self.headers))
                    if fault == "dead":
                        self.close_connection = True
                        return
                    data = json.dumps(payload).encode()
                    if fault == "broken":
                        data = data[: len(data) // 2]
                    self.send_response(status)
                    for key, value in {
                        **headers,
                        "Content-Type": "application/json",
                        "Content-Length": str(len(data)),
                    }.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    self.close_connection = True

        return Handler

    def answer(
        self, path: str, body: dict[str, Any], headers: dict[str, str]
    ) -> tuple[int, dict[str, Any], dict[str, str], str | None]:
        """(status, JSON body, headers, fault): the fault ("broken", "dead" or None) says how the reply is mangled."""
        with self.lock:
            self.count += 1
            number = self.count
            self.received.append({"path": path, "body": body, "headers": headers})
            options = dict(self.options)
        if options["die_after"] and number > options["die_after"]:
            return 0, {}, {}, "dead"
        fault = "broken" if number == options["broken_body"] else None
        return (*self._reply(path, body, options, number), fault)

    def _reply(
        self, path: str, body: dict[str, Any], options: dict[str, Any], number: int
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        if options["stall_s"]:
            self.closing.wait(options["stall_s"])
        if number <= options["rate_limit"]:
            return 429, _error("rate limited"), {"Retry-After": options["retry_after"]}
        if options["fail_every"] and number % options["fail_every"] == 0:
            return 503, _error("overloaded"), {}
        if body.get("model") != self.served_name:
            return 404, _error(f"The model `{body.get('model')}` does not exist."), {}
        if path == "/v1/completions":
            return 200, self._completion(body, options), {}
        if path == "/v1/chat/completions":
            return 200, self._chat(body), {}
        return 404, _error(f"no route {path}"), {}

    def _completion(self, body: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
        prompt, max_tokens = body["prompt"], int(body.get("max_tokens", 16))
        if body.get("echo"):
            logprobs, text, n_prompt = self.model.echo(prompt, max_tokens, options["prepend_bos"])
            if not options["offsets"]:
                del logprobs["text_offset"]
            usage = {"prompt_tokens": n_prompt, "completion_tokens": max_tokens}
            choice = {
                "index": 0,
                "text": text,
                "logprobs": logprobs if options["logprobs"] else None,
                "finish_reason": "length",
            }
        else:
            text, n_prompt, n_new, finish, matched = self.model.generate(prompt, max_tokens, _stops(body))
            usage = {"prompt_tokens": n_prompt, "completion_tokens": n_new}
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish, "stop_reason": matched}
        reply = {"id": "cmpl-stub", "object": "text_completion", "model": self.served_name, "choices": [choice]}
        if options["usage"]:
            reply["usage"] = {**usage, "total_tokens": sum(usage.values())}
        return reply

    def _chat(self, body: dict[str, Any]) -> dict[str, Any]:
        text = render_chat(self.model.tokenizer, body["messages"])
        reply, n_prompt, n_new, finish, matched = self.model.generate(text, int(body.get("max_tokens", 16)), _stops(body))
        message = {"role": "assistant", "content": reply}
        return {
            "id": "chatcmpl-stub",
            "object": "chat.completion",
            "model": self.served_name,
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "stop_reason": matched}],
            "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_new, "total_tokens": n_prompt + n_new},
        }


def _blocks(items: list[int], size: int) -> list[list[int]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _stops(body: dict[str, Any]) -> list[str]:
    stop = body.get("stop") or []
    return [stop] if isinstance(stop, str) else list(stop)


def _error(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "stub_error"}}
