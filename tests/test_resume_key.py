"""The resume store's key covers everything that can change an output: change one thing, and a rerun recomputes.

Each case runs the same requests twice through a `ResumableBackend` on one store,
the second time with one thing changed: a library version, the attention kernel,
the precision, the generation overrides, the chat template, the weights (replaced
in place with their size and mtime kept), the converter version. The control
(nothing changed) reuses everything, so each case can fail both ways.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from qwen_evals.backends import resumable
from qwen_evals.backends.hf import backend as hf_backend
from qwen_evals.backends.hf.backend import HFBackend
from qwen_evals.backends.precision import Precision
from qwen_evals.backends.qwen1.convert import MARKER
from qwen_evals.backends.resumable import ResumableBackend
from qwen_evals.core.store import RequestStore
from qwen_evals.core.types import Generate, LogLikelihood

FP32 = Precision("fp32", "float32")
LOGLIKELIHOODS = [LogLikelihood("Question: 1+1=?\nAnswer:", " A"), LogLikelihood("Question: 1+1=?\nAnswer:", " B")]
GENERATIONS = [Generate([{"role": "user", "content": "Say hi"}], max_new_tokens=3)]


def hf(path: Path | str, **kwargs) -> HFBackend:
    return HFBackend(name="tiny", path=str(path), precision=kwargs.pop("precision", FP32), device_map=None, **kwargs)


def rerun(store: Path, first: HFBackend, second: HFBackend) -> ResumableBackend:
    """Both request kinds on `first`, then again on `second`; returns the second run's wrapper."""
    before = ResumableBackend(first, RequestStore(store))
    before.loglikelihood(LOGLIKELIHOODS)
    before.generate(GENERATIONS)
    again = ResumableBackend(second, RequestStore(store))
    again.loglikelihood(LOGLIKELIHOODS)
    again.generate(GENERATIONS)
    return again


@pytest.fixture(scope="module")
def base(byte_qwen2) -> HFBackend:
    return hf(byte_qwen2, attn_implementation="sdpa")


def test_the_same_backend_reuses_every_stored_result(base, byte_qwen2, tmp_path):
    again = rerun(tmp_path, base, hf(byte_qwen2, attn_implementation="sdpa"))
    assert (again.reused, again.computed) == (3, 0)


@pytest.mark.parametrize("library", ["torch", "transformers", "tokenizers", "vllm"])
def test_another_library_version_recomputes(base, tmp_path, monkeypatch, library):
    ResumableBackend(base, RequestStore(tmp_path)).loglikelihood(LOGLIKELIHOODS)
    real = resumable.package_version
    monkeypatch.setattr(resumable, "package_version", lambda name: "99.0" if name == library else real(name))
    again = ResumableBackend(base, RequestStore(tmp_path))
    again.loglikelihood(LOGLIKELIHOODS)
    assert (again.reused, again.computed) == (0, 2)


@pytest.mark.parametrize(
    "change",
    [{"attn_implementation": "eager"}, {"precision": Precision("bf16", "bfloat16")}, {"generation_kwargs": {"no_repeat_ngram_size": 2}}],
    ids=["attention", "precision", "generation-overrides"],
)
def test_a_changed_load_setting_recomputes(base, byte_qwen2, tmp_path, change):
    again = rerun(tmp_path, base, hf(byte_qwen2, **{"attn_implementation": "sdpa", **change}))
    assert (again.reused, again.computed) == (0, 3)


def test_another_chat_template_recomputes(byte_qwen2, tmp_path):
    """The template file is rewritten in place with its size and mtime kept: only the template's sha256 tells."""
    folder = tmp_path / "ckpt"
    shutil.copytree(byte_qwen2, folder)
    template_file = folder / "chat_template.jinja"
    digests = []
    for template in ("{% for m in messages %}<{{ m.content }}>{% endfor %}", "{% for m in messages %}[{{ m.content }}]{% endfor %}"):
        stat = template_file.stat() if template_file.exists() else None
        template_file.write_text(template)
        if stat is not None:
            os.utime(template_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        backend = hf(folder)
        assert backend.chat_template()["format"] == "template"
        digests.append(backend.chat_template()["sha256"])
        again = ResumableBackend(backend, RequestStore(tmp_path / "store"))
        again.generate(GENERATIONS)
        assert again.computed == 1
    assert len(set(digests)) == 2


def test_weights_replaced_in_place_with_the_same_size_and_mtime_recompute(byte_qwen2, tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(byte_qwen2, folder)
    first = hf(folder)
    ResumableBackend(first, RequestStore(tmp_path / "store")).loglikelihood(LOGLIKELIHOODS)
    weights = folder / "model.safetensors"
    stat = weights.stat()
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # another value in the last parameter: the same size
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as `cp -p` or rsync -a leave it
    second = hf(folder)
    assert second.checkpoint()["weights_sha256"] != first.checkpoint()["weights_sha256"]
    again = ResumableBackend(second, RequestStore(tmp_path / "store"))
    again.loglikelihood(LOGLIKELIHOODS)
    assert (again.reused, again.computed) == (0, 2)


def test_a_new_converter_version_recomputes(byte_qwen2, tmp_path, monkeypatch):
    """A preset that converts loads the converted copy; a copy made by another converter version is another model."""
    copies = {}
    for version in (1, 2):
        copies[version] = tmp_path / f"converted-v{version}"
        shutil.copytree(byte_qwen2, copies[version])
        (copies[version] / MARKER).write_text(json.dumps({"source": "Qwen/Qwen-7B", "converter_version": version}))
    backends = {}
    for version, copy in copies.items():
        monkeypatch.setattr(hf_backend, "model_source", lambda *args, copy=copy, **kwargs: (str(copy), None))
        backends[version] = hf("Qwen/Qwen-7B", convert="qwen1")
        assert backends[version].checkpoint()["converter_version"] == version
    again = rerun(tmp_path / "store", backends[1], backends[2])
    assert (again.reused, again.computed) == (0, 3)
