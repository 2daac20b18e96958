"""Models behind an OpenAI-compatible HTTP server (vLLM, SGLang, TGI, llama.cpp server).

Text prompts go to `{base_url}/completions`, chat prompts to
`{base_url}/chat/completions` (the server applies the model's chat template;
`system_prompt` is prepended when the messages have no system turn).
Log-likelihoods come from a completions request with `echo=true, logprobs=1`:
the server returns the log-prob of every prompt token, and the continuation's
tokens are found by their text offsets counted back from the end of the prompt
(the continuation is the prompt's last characters), so a BOS token or other
text the server puts in front does not shift the boundary. A token that spans
the boundary (the continuation merged into the last context token) is scored
whole and counted in `describe()["boundary_merged_tokens"]`.

Requests run concurrently in a bounded thread pool, each on a kept-alive
connection of its worker thread (http.client: no proxy is consulted, no extra
dependency). 429, 408, 5xx, timeouts and dropped connections are retried with
exponential backoff and jitter (a 429's Retry-After is honoured); other
errors, exhausted retries and a server that gives no prompt log-probs raise an
EvalError naming the URL. Results come back in request order. The API key is
read from the environment variable named by `api_key_env` and never recorded.

Modules: `backend` (OpenAIBackend: requests, the pool, records), `http` (the
JSON client: connections, retries, attempt stats), `logprobs` (reading echoed
prompt log-probs), `replies` (a request's sampling fields, a choice's finish reason).
"""

from qwen_evals.backends.openai.backend import OpenAIBackend
from qwen_evals.backends.openai.http import ServerError

__all__ = ["OpenAIBackend", "ServerError"]
