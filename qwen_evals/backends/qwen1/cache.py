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
from qwen_evals.backends.qwen1.checkpoint import v1_config
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


def copy_path(src: str, cache_dir: Path, revision: str | None) -> Path:
    """Where the converted copy of `src` lives in `cache_dir` (whether or not it exists yet)."""
    local = Path(src).expanduser()
    if local.is_dir():
        local = local.resolve()
        key = {"v": CONVERTER_VERSION, "path": str(local), "revision": revision, "files": _fingerprint(local)}
    else:
        key = {"v": CONVERTER_VERSION, "hub": src, "revision": revision}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    label = re.sub(r"[^A-Za-z0-9._-]+", "_", local.name if local.is_dir() else src)[-60:]
    return cache_dir / f"qwen1-{label}-{digest}"


def needs_download(src: str, revision: str | None, cache_dir: str | Path | None) -> bool:
    """Whether converting `src` would fetch it from the hub (a hub id with no finished copy cached)."""
    return not Path(src).expanduser().is_dir() and not (copy_path(src, cache_root(cache_dir), revision) / MARKER).is_file()


def check_convertible(path: str) -> None:
    """A local folder given to a converting preset must hold a Qwen (v1) checkpoint (its config is read, no weights);
    the error for any other names the override that loads it natively."""
    folder = Path(path).expanduser()
    if folder.is_dir():
        v1_config(folder)


def converted_path(src: str, cache_dir: str | Path, *, revision: str | None = None) -> Path:
    """A Qwen2 copy of the Qwen (v1) checkpoint `src` (hub id or folder), converted once into `cache_dir`.

    The cache key is the converter version, the source (absolute folder path and
    its files' names, sizes and mtimes; or hub id and requested revision), so
    weights replaced in place are converted again; `build_once` makes it safe
    against crashes and parallel ranks. A finished copy of a hub id is used
    without contacting the hub (pin `revision` to a commit to make the cached
    copy exactly reproducible).
    """

    def build(out: Path) -> None:
        folder, provenance = source_folder(src, revision)
        convert_qwen1(folder, out, provenance=provenance)

    return build_once(copy_path(src, Path(cache_dir).expanduser(), revision), MARKER, build)


def model_source(
    path: str,
    revision: str | None,
    *,
    convert: str | None,
    trust_remote_code: bool,
    cache_dir: str | Path | None = None,
) -> tuple[str, str | None]:
    """(path, revision) a backend should load: the converted copy when `convert` is set.

    Qwen v1's own remote code (`trust_remote_code` on a v1 checkpoint) is refused: it
    was written for transformers 4.31 and fails on every version the suite accepts
    (5.x: `get_head_mask` is gone; 4.56: the `past_key_values` layout), so the
    converted copy is the supported path. `cache_dir` defaults to
    $EVALS_CONVERTED_DIR, else ~/.cache/qwen-evals/converted.
    """
    if trust_remote_code and (convert == "qwen1" or _is_local_v1(path)):
        import transformers

        raise EvalError(
            f"model.trust_remote_code=true would run Qwen (v1)'s own code for {path}, which targets transformers "
            f"4.31 and does not run on the installed {transformers.__version__}; load the converted Qwen2 copy "
            "instead (model.convert=qwen1 with model.trust_remote_code=false, the qwen-7b / qwen-7b-chat presets' "
            "default): it gives the original's logits and Qwen's token ids"
        )
    if not convert:
        if _is_local_v1(path):
            raise EvalError(f"{path} is a Qwen (v1) checkpoint, which loads as its converted copy: set model.convert=qwen1")
        return path, revision
    if convert not in CONVERTERS:
        raise EvalError(f"model.convert={convert!r} is not one of {sorted(CONVERTERS)}")
    check_convertible(path)
    return str(converted_path(path, cache_root(cache_dir), revision=revision)), None


def _is_local_v1(path: str) -> bool:
    """A local folder whose config.json describes a Qwen (v1) model."""
    config = Path(path).expanduser() / "config.json"
    if not config.is_file():
        return False
    try:
        settings = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # not ours to judge: the loader reports a broken config
    return isinstance(settings, dict) and settings.get("model_type") == "qwen"


def conversion_info(path: str | Path) -> dict[str, Any]:
    """What `path` was converted from (conversion.json: source, revision, hub commit, chat); {} if not a copy."""
    marker = Path(path) / MARKER
    return json.loads(marker.read_text(encoding="utf-8")) if marker.is_file() else {}
