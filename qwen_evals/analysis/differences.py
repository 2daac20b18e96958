"""What two paired runs differ in besides chance: data, prompts, generation settings, model identity.

Read from their records (`fingerprints`, `run`): a comparison names the facet that
changed, so a shorter `max_new_tokens` is not reported as a prompt change, nor a
prompt change as a model change. Records written before the run block (schema 1)
only have `data_fingerprint`, and are compared on that.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

MODEL_FIELDS = ("label", "step", "path", "commit", "weights_sha256", "converter_version")


def _changes(a: dict[str, Any], b: dict[str, Any], fields: tuple[str, ...] | None = None) -> list[str]:
    """`field: A -> B` for each field that differs (long values shortened)."""
    keys = fields or tuple(dict.fromkeys([*a, *b]))
    return [f"{key}: {_short(a.get(key))} -> {_short(b.get(key))}" for key in keys if a.get(key) != b.get(key)]


def _short(value: Any) -> str:
    text = str(value)
    return text[:12] + "…" if len(text) > 16 and " " not in text else text


def _flat(request: dict[str, Any]) -> dict[str, Any]:
    """A generation setting with its decoding fields at the top level."""
    return {**{k: v for k, v in request.items() if k != "decoding"}, **(request.get("decoding") or {})}


def _generation_changes(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    requests_a, requests_b = a.get("requests") or [], b.get("requests") or []
    if len(requests_a) == len(requests_b) == 1:  # one setting each (most tasks): name the fields
        changes = _changes(_flat(requests_a[0]), _flat(requests_b[0]))
    else:
        changes = [] if requests_a == requests_b else [f"requests: {requests_a} -> {requests_b}"]
    if a.get("backend") != b.get("backend"):
        changes.append("backend generation settings")
    return changes


def differences(run_a: pd.Series, run_b: pd.Series) -> list[str]:
    """One line per facet in which B differs from A; [] when they measured the same thing the same way."""
    summary_a, summary_b = run_a["summary"], run_b["summary"]
    prints_a, prints_b = summary_a.get("fingerprints"), summary_b.get("fingerprints")
    record_a, record_b = summary_a.get("run") or {}, summary_b.get("run") or {}
    found = []
    if not (prints_a and prints_b):
        if summary_a.get("data_fingerprint") != summary_b.get("data_fingerprint"):
            found.append("prompts or data differ (data_fingerprint; a record without per-facet fingerprints)")
    else:
        if prints_a["data"] != prints_b["data"]:
            found.append("data differ: other samples or gold answers")
        files_a, files_b = ((record.get("data") or {}).get("files") for record in (record_a, record_b))
        if files_a is not None and files_b is not None and files_a != files_b:
            changed = sorted(name for name in {*files_a, *files_b} if files_a.get(name) != files_b.get(name))
            found.append(f"data files differ ({len(changed)}): {', '.join(changed[:3])}" + (" …" if len(changed) > 3 else ""))
        if prints_a["prompts"] != prints_b["prompts"]:
            found.append("prompts differ (a prompt, template or protocol change)")
        if prints_a["generation"] != prints_b["generation"] or record_a.get("generation") != record_b.get("generation"):
            changes = _generation_changes(record_a.get("generation") or {}, record_b.get("generation") or {})
            found.append("generation settings differ" + (": " + "; ".join(changes) if changes else ""))
    template = _changes(record_a.get("chat_template") or {}, record_b.get("chat_template") or {})
    if template:
        found.append("chat template differs: " + "; ".join(template))
    model = _changes(record_a.get("model") or {}, record_b.get("model") or {}, MODEL_FIELDS)
    model += _changes(summary_a, summary_b, ("precision",))
    if model:
        found.append("model identity differs: " + "; ".join(model))
    return found
