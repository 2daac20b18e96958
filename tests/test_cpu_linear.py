"""The packed engine's linear layers through oneDNN on the CPU (cpu_linear.py)."""

from __future__ import annotations

import pytest
import torch

from qwen_evals.backends.hf import cpu_linear
from qwen_evals.backends.hf.cpu_linear import PackedLinears, packing_available
from qwen_evals.core.errors import EvalError

CPU = torch.device("cpu")


def packed_always(*modules: torch.nn.Linear, dtype: torch.dtype = torch.float32) -> PackedLinears:
    return PackedLinears([list(modules)], [], dtype, CPU, pack=True)


def linear(rows: int, columns: int, bias: bool, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.nn.Linear:
    torch.manual_seed(seed)
    module = torch.nn.Linear(columns, rows, bias=bias).to(dtype)
    torch.nn.init.normal_(module.weight, std=0.05)
    return module


def test_this_torch_build_packs_float32_on_the_cpu():
    assert packing_available(torch.float32, CPU)
    assert not packing_available(torch.bfloat16, CPU)
    assert packed_always(linear(8, 4, bias=False)).kernel == "onednn-packed"


@pytest.mark.parametrize("bias", [False, True])
def test_packed_products_are_the_modules_products(bias):
    modules = [linear(1536, 576, bias, seed=1), linear(192, 576, bias, seed=2)]
    packed = packed_always(*modules)
    x = torch.randn(2, 37, 576)
    with torch.inference_mode():
        for module in modules:
            ours, theirs = packed(module, x), module(x)
            assert ours.shape == theirs.shape
            torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_a_rows_product_does_not_depend_on_the_other_rows_of_the_call():
    module = linear(1536, 576, bias=True, seed=3)
    packed = packed_always(module)
    x = torch.randn(300, 576)
    with torch.inference_mode():
        whole = packed(module, x)
        for rows in (1, 2, 7, 34, 50, 64, 65, 200):
            assert torch.equal(packed(module, x[:rows]), whole[:rows])
        for row in range(0, 300, 37):
            assert torch.equal(packed(module, x[row : row + 1]), whole[row : row + 1])


def test_modules_that_are_not_float32_linears_run_as_they_are():
    class Quantized(torch.nn.Linear):
        """Stands for bitsandbytes' layers, which subclass Linear with weights of their own."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x) + 1.0

    quantized = Quantized(16, 8)
    half = linear(8, 16, bias=False, dtype=torch.bfloat16)
    packed = packed_always(quantized, half)  # a float32 model holding layers of other kinds
    assert (packed.kernel, packed.packed_bytes) == ("torch", 0)
    x = torch.randn(3, 16)
    with torch.inference_mode():
        assert torch.equal(packed(quantized, x), quantized(x))
        assert torch.equal(packed(half, x.bfloat16()), half(x.bfloat16()))
        unpacked = packed_always(linear(8, 16, bias=False), dtype=torch.bfloat16)  # a bf16 model: not a candidate
        assert unpacked.kernel == "torch"


@pytest.mark.parametrize(("speedup", "kernel"), [(0.8, "torch"), (1.0, "torch"), (1.6, "onednn-packed")])
def test_auto_keeps_onednn_only_where_the_load_time_trial_finds_it_faster(monkeypatch, speedup, kernel):
    timed = []

    def trial(self, layers, dtype):
        timed.append([[id(m) for m in layer] for layer in layers])
        assert all(id(m) in self._packed for layer in layers for m in layer)  # packed before they are timed
        return {"onednn_speedup": speedup}

    layers = [[linear(24, 16, bias=True, seed=i), linear(16, 24, bias=False, seed=10 + i)] for i in range(4)]
    head = linear(40, 16, bias=False, seed=20)
    layer_bytes = sum(m.weight.numel() * 4 for m in layers[0])
    monkeypatch.setattr(PackedLinears, "_time_both", trial)
    monkeypatch.setattr(cpu_linear, "TRIAL_BYTES", 2 * layer_bytes)  # the trial streams the first two layers only
    packed = PackedLinears(layers, [head], torch.float32, CPU, pack="auto")
    assert timed == [[[id(m) for m in layer] for layer in layers[:2]]]
    assert packed.trial == {"onednn_speedup": speedup} and packed.kernel == kernel
    everything = 4 * layer_bytes + head.weight.numel() * 4
    assert packed.packed_bytes == (everything if kernel == "onednn-packed" else 0)
    x = torch.randn(5, 16)
    with torch.inference_mode():
        ours = packed(head, x)
        assert torch.equal(ours, head(x)) if kernel == "torch" else torch.allclose(ours, head(x), atol=1e-5)


def test_the_trial_times_both_kernels_on_the_models_products():
    layers = [[linear(96, 64, bias=True, seed=i), linear(64, 96, bias=False, seed=10 + i)] for i in range(2)]
    packed = PackedLinears(layers, [], torch.float32, CPU, pack="auto")
    trial = packed.trial
    assert trial["rows"] == cpu_linear.TRIAL_ROWS
    for name in cpu_linear.TRIAL_ROWS:
        assert set(trial[name]) == {"torch", "onednn"} and all(ms > 0 for ms in trial[name].values())
    assert packed.kernel == ("onednn-packed" if trial["onednn_speedup"] > 1 else "torch")


def test_the_trial_leaves_the_runs_random_stream_alone():
    layers = [[linear(96, 64, bias=True, seed=i)] for i in range(2)]
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    PackedLinears(layers, [], torch.float32, CPU, pack="auto")
    assert torch.equal(torch.rand(4), expected)


def test_never_packing_leaves_the_modules_alone():
    module = linear(24, 16, bias=True)
    packed = PackedLinears([[module]], [], torch.float32, CPU, pack=False)
    assert (packed.kernel, packed.trial) == ("torch", None)


@pytest.mark.parametrize("choice", ["fast", 1, 0, 1.0])
def test_an_unknown_choice_is_refused_by_its_option_name(choice):
    with pytest.raises(EvalError, match=f"model.pack_linears={choice!r} is not one of"):
        PackedLinears([[linear(8, 4, bias=False)]], [], torch.float32, CPU, pack=choice)


def test_auto_does_not_pack_what_would_crowd_the_free_memory(monkeypatch):
    layers = [[linear(256, 64, bias=False, seed=i)] for i in range(2)]
    needed = 2 * 256 * 64 * 4
    monkeypatch.setattr(cpu_linear, "_free_memory_bytes", lambda: 2 * needed - 1)
    crowded = PackedLinears(layers, [], torch.float32, CPU, pack="auto")
    assert (crowded.kernel, crowded.packed_bytes) == ("torch", 0)
    assert crowded.trial == {"skipped": f"packed copies of {needed / 2**30:.2f} GiB; {(2 * needed - 1) / 2**30:.2f} GiB free"}
    monkeypatch.setattr(cpu_linear, "_free_memory_bytes", lambda: 2 * needed)
    assert "skipped" not in PackedLinears(layers, [], torch.float32, CPU, pack="auto").trial
