"""Sources on the hub, and the conversion cache.

A backend asks `model_source` what to load: with `model.convert` set, a Qwen2
copy of the checkpoint, converted once per source into a cache folder and
reused; `conversion_info` tells a copy's provenance for the run's records.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from qwen_evals.backends.conversion_cache import build_once, cache_root
from qwen_evals.backends.qwen1.convert import CONVERTER_VERSION, MARKER, convert_qwen1
from qwen_evals.core.errors import EvalError
from qwen_evals.core.hub import require_hub

CONVERTERS = ("qwen1",)  # model.convert values
HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def _download(repo_id: str, revision: str | None) -> Path:
    """The files conversion needs from a hub repo (safetensors preferred, else .bin)."""
    require_hub("model", repo_id, "model.path=<local Qwen (v1) checkpoint dir>")
    from huggingface_hub import snapshot_download

    try:
        folder = Path(
            snapshot_download(repo_id, revision=revision, allow_patterns=["*.json", "qwen.tiktoken", "*.safetensors"])
        )
        if not any(folder.glob("*.safetensors")):
            folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=["*.bin"]))
    except Exception as error:  # huggingface_hub raises many types; all mean "could not download"
        raise EvalError(f"Could not download '{repo_id}' (revision {revision!r}) from the hub: {error}") from error
    return folder


def source_folder(src: str, revision: str | None) -> tuple[Path, dict[str, Any]]:
    """The local folder holding `src` (downloaded when it is a hub id), and where it came from."""
    folder = Path(src).expanduser()
    if folder.is_dir():
        return folder.resolve(), {"source": str(folder.resolve()), "revision": None}
    if not HUB_ID.match(src) or src.startswith((".", "~")):
        raise EvalError(f"Qwen (v1) checkpoint folder {src} does not exist (nor is it a hub id like Qwen/Qwen-7B)")
    folder = _download(src, revision)
    return folder, {"source": src, "revision": revision, "commit": folder.name}


def _fingerprint(folder: Path) -> str:
    entries = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file())
    return hashlib.sha256(repr(entries).encode()).hexdigest()


def converted_path(src: str, cache_dir: str | Path, *, revision: str | None = None) -> Path:
    """A Qwen2 copy of the Qwen (v1) checkpoint `src` (hub id or folder), converted once into `cache_dir`.

    The cache key is the converter version, the source (absolute folder path and
    its files' names, sizes and mtimes; or hub id and requested revision), so
    weights replaced in place are converted again; `build_once` makes it safe
    against crashes and parallel ranks. A finished copy of a hub id is used
    without contacting the hub (pin `revision` to a commit to make the cached
    copy exactly reproducible).
    """
    local = Path(src).expanduser()
    if local.is_dir():
        local = local.resolve()
        key = {"v": CONVERTER_VERSION, "path": str(local), "revision": revision, "files": _fingerprint(local)}
    else:
        key = {"v": CONVERTER_VERSION, "hub": src, "revision": revision}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    label = re.sub(r"[^A-Za-z0-9._-]+", "_", local.name if local.is_dir() else src)[-60:]

    def build(out: Path) -> None:
        folder, provenance = source_folder(src, revision)
        convert_qwen1(folder, out, provenance=provenance)

    return build_once(Path(cache_dir).expanduser() / f"qwen1-{label}-{digest}", MARKER, build)


def model_source(
    path: str,
    revision: str | None,
    *,
    convert: str | None,
    trust_remote_code: bool,
    cache_dir: str | Path | None = None,
) -> tuple[str, str | None]:
    """(path, revision) a backend should load: the converted copy when `convert` is set,
    unless remote code is asked for.

    `cache_dir` defaults to $EVALS_CONVERTED_DIR, else ~/.cache/qwen-evals/converted.
    """
    if not convert or trust_remote_code:
        return path, revision
    if convert not in CONVERTERS:
        raise EvalError(f"model.convert={convert!r} is not one of {sorted(CONVERTERS)}")
    return str(converted_path(path, cache_root(cache_dir), revision=revision)), None


def conversion_info(path: str | Path) -> dict[str, Any]:
    """What `path` was converted from (conversion.json: source, revision, hub commit, chat); {} if not a copy."""
    marker = Path(path) / MARKER
    return json.loads(marker.read_text(encoding="utf-8")) if marker.is_file() else {}
