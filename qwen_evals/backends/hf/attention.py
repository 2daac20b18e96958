"""Attention for `Decoder`: packed rows over an optional shared prefix, and decoding slots.

`RowsAttention` serves scoring and prefill: rows of different lengths packed
into one token sequence (so the projections and MLP see no padding), where
each row attends causally to itself and to every position of a shared prefix
whose keys and values were computed once. `SlotAttention` serves decoding: one
new token per slot, attending to that slot's stored keys and values (`SlotCache`).

Both call torch's fused attention kernels (`scaled_dot_product_attention`, and
on the CPU the flash-attention op behind it, which also returns log-sum-exps),
the fastest attention torch has for these shapes; masks are additive and built
once per forward (a boolean one is converted at every layer).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from qwen_evals.backends.hf import host_memory

KeyValues = list[tuple[torch.Tensor, torch.Tensor]]
"""Per layer, keys and values of shape (kv heads, tokens, head dim) after rotary embedding."""


FLASH_WITH_LSE = "_scaled_dot_product_flash_attention_for_cpu"
"""torch's CPU flash-attention op: outputs and their log-sum-exp (the public SDPA drops the latter)."""


def additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """0 where attention is allowed, -inf elsewhere."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, float("-inf"))


class RowsAttention:
    """Rows packed back to back, each attending causally to itself after `prefix` (shared by all rows).

    `sink(layer, keys, values)`, when given, receives every layer's packed
    keys and values (T, kv heads, d): to keep a prefix, or to fill decoding slots.

    On the CPU (`packed`) the rows' own causal part runs on the packed tokens
    themselves, one kernel call per run of neighbouring rows of equal length:
    no padding is computed and nothing is copied into a grid. Rows of
    different lengths in one padded grid cost 2-2.5x the kernel time of these
    calls on the lengths of MMLU's few-shot questions, because the kernel
    computes every padded query. The prefix part runs as one call for all
    tokens of all rows (the prefix's keys read once, never copied per row),
    and the two are merged with their log-sum-exps, which only torch's
    internal CPU flash-attention op returns. Elsewhere the rows are laid out
    in a (rows, longest) grid for one batched call, the prefix copied in front
    of every row's keys under an explicit mask.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        device: torch.device,
        dtype: torch.dtype,
        prefix: KeyValues | None = None,
        sink: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
        packed: bool | None = None,
    ) -> None:
        self.rows, self.width = len(lengths), max(lengths)
        self.prefix, self.sink = prefix, sink
        self.packed = (device.type == "cpu" and hasattr(torch.ops.aten, FLASH_WITH_LSE)) if packed is None else packed
        self.runs = [(len(list(run)), length) for length, run in itertools.groupby(lengths)]
        """(rows, length) of each run of neighbouring rows of equal length."""
        sizes = torch.tensor(list(lengths), device=device)
        starts = torch.cumsum(sizes, 0) - sizes
        row = torch.repeat_interleave(torch.arange(self.rows, device=device), sizes)
        self.within = torch.arange(int(sizes.sum()), device=device) - starts[row]
        """Each packed token's position inside its row."""
        self.slot = row * self.width + self.within
        """Each packed token's cell in the (rows, width) grid."""
        self._buffers: dict[str, torch.Tensor] = {}
        if prefix and not self.packed:
            keys = torch.arange(self.width, device=device)
            own = (keys[None, None, :] <= keys[None, :, None]) & (keys[None, None, :] < sizes[:, None, None])
            shared = torch.ones((self.rows, self.width, prefix[0][0].shape[1]), dtype=torch.bool, device=device)
            self.mask = additive(torch.cat([shared, own], dim=-1)[:, None], dtype)

    def positions(self, offset: int = 0) -> torch.Tensor:
        """Rotary positions of the packed tokens, continuing after a prefix of `offset` tokens."""
        return self.within + offset

    def __call__(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.sink is not None:
            self.sink(layer, k, v)
        if self.packed:
            own, own_lse = self._own_rows(q, k, v)
            out = self._after_prefix(layer, q, own, own_lse) if self.prefix else own
        elif self.prefix:
            shared_k, shared_v = self.prefix[layer]
            keys = torch.cat([shared_k.expand(self.rows, -1, -1, -1), self._grid("k", k)], dim=2)
            values = torch.cat([shared_v.expand(self.rows, -1, -1, -1), self._grid("v", v)], dim=2)
            grid = F.scaled_dot_product_attention(self._grid("q", q), keys, values, attn_mask=self.mask, enable_gqa=True)
            out = self._packed(grid)
        else:
            grids = (self._grid(role, x) for role, x in (("q", q), ("k", k), ("v", v)))
            out = self._packed(F.scaled_dot_product_attention(*grids, is_causal=True, enable_gqa=True))
        return out.reshape(q.shape[0], -1)

    def _own_rows(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's causal attention to itself (T, heads, d) and its log-sum-exps (T, heads), in packed order."""
        # The kernel takes fewer key/value heads than query heads (grouped-query attention) as they are,
        # and lays its outputs out (rows, length, heads, ...): back to packed order without a copy.
        flash = getattr(torch.ops.aten, FLASH_WITH_LSE)
        sizes = [rows * length for rows, length in self.runs]
        outputs, lses = [], []
        for (rows, length), *run in zip(self.runs, q.split(sizes), k.split(sizes), v.split(sizes)):
            out, lse = flash(*(x.view(rows, length, *x.shape[1:]).transpose(1, 2) for x in run), is_causal=True)
            outputs.append(out.transpose(1, 2).reshape(rows * length, out.shape[1], out.shape[3]))
            lses.append(lse.transpose(1, 2).reshape(rows * length, lse.shape[1]))
        if len(outputs) == 1:
            return outputs[0], lses[0]
        return torch.cat(outputs), torch.cat(lses)

    def _after_prefix(self, layer: int, q: torch.Tensor, own: torch.Tensor, own_lse: torch.Tensor) -> torch.Tensor:
        """Every token's attention over the prefix and its own row, from the own-row part and its log-sum-exps."""
        flash = getattr(torch.ops.aten, FLASH_WITH_LSE)
        shared_k, shared_v = (x[None] for x in self.prefix[layer])
        on_prefix, prefix_lse = flash(q.transpose(0, 1)[None], shared_k, shared_v)  # (1, heads, T, d), (1, heads, T)
        # The prefix's share of each output is its softmax mass, sigmoid(prefix lse - own lse). The
        # log-sum-exps are float32 whatever the model's dtype: merge in float32 (one `lerp` pass), hand back the model's.
        share = torch.sigmoid(prefix_lse[0].t().float() - own_lse.float())[..., None]
        return torch.lerp(own.float(), on_prefix[0].transpose(0, 1).float(), share).to(q.dtype)

    def _grid(self, role: str, x: torch.Tensor) -> torch.Tensor:
        """(T, heads, d) packed -> (rows, heads, width, d) with zero padding.

        One buffer per role (queries, keys, values) serves every layer: only the
        real tokens' cells are rewritten, the padding cells stay zero, so no
        layer allocates or clears a grid.
        """
        shape = (self.rows * self.width, *x.shape[1:])
        grid = self._buffers.get(role)
        if grid is None or grid.shape != shape or grid.dtype != x.dtype:
            grid = self._buffers[role] = x.new_zeros(shape)
        grid[self.slot] = x
        return grid.view(self.rows, self.width, *x.shape[1:]).transpose(1, 2)

    def _packed(self, grid: torch.Tensor) -> torch.Tensor:
        """(rows, heads, width, ...) -> (T, heads, ...) of the real tokens."""
        return grid.transpose(1, 2).reshape(self.rows * self.width, *grid.shape[1:2], *grid.shape[3:])[self.slot]


def record_into(store: KeyValues) -> Callable[[int, torch.Tensor, torch.Tensor], None]:
    """A `sink` that keeps each layer's keys and values (one row: a prefix) as (kv heads, tokens, d)."""

    def keep(layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        store.append((k.transpose(0, 1).contiguous(), v.transpose(0, 1).contiguous()))

    return keep


class SlotCache:
    """Keys and values of `slots` sequences of up to `capacity` tokens, per layer (slots, kv heads, capacity, d).

    Live sequences occupy slots 0..n-1, so a decoding step reads a leading
    slice of each tensor without copying it.
    """

    def __init__(self, layers: int, slots: int, kv_heads: int, capacity: int, head_dim: int, dtype, device) -> None:
        shape = (slots, kv_heads, capacity, head_dim)
        # Zeros, not empty: a step reads cells past a short sequence's end (masked out), and masking
        # cannot undo a NaN that uninitialised memory may hold. On huge pages on the CPU: every step streams them.
        self.keys = [host_memory.zeros(shape, dtype, device) for _ in range(layers)]
        self.values = [host_memory.zeros(shape, dtype, device) for _ in range(layers)]
        self.slots, self.capacity = slots, capacity

    def cells(self, slot: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """Rows of the (slots * kv heads * capacity, d) view holding each token's keys, one per kv head."""
        heads = torch.arange(self.keys[0].shape[1], device=slot.device)
        return ((slot[:, None] * heads.numel() + heads[None]) * self.capacity + position[:, None]).reshape(-1)

    def write(self, layer: int, cells: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store tokens' keys and values (T, kv heads, d) at `cells`."""
        # Indexed assignment (index_put_): several times faster than index_copy_ on CPU for these few rows.
        for store, x in ((self.keys[layer], k), (self.values[layer], v)):
            store.view(-1, store.shape[-1])[cells] = x.reshape(-1, x.shape[-1])

    def filler(self, slots: Sequence[int], lengths: Sequence[int]) -> Callable[[int, torch.Tensor, torch.Tensor], None]:
        """A `RowsAttention` sink writing packed rows (a prefill) into `slots` from position 0."""
        device = self.keys[0].device
        sizes = torch.tensor(list(lengths), device=device)
        starts = torch.cumsum(sizes, 0) - sizes
        slot = torch.repeat_interleave(torch.tensor(list(slots), device=device), sizes)
        cells = self.cells(slot, torch.arange(int(sizes.sum()), device=device) - torch.repeat_interleave(starts, sizes))
        return lambda layer, k, v: self.write(layer, cells, k, v)

    def move(self, source: int, target: int, length: int) -> None:
        """Copy one sequence's first `length` positions to another slot (to keep live slots leading)."""
        for keys, values in zip(self.keys, self.values):
            keys[target, :, :length] = keys[source, :, :length]
            values[target, :, :length] = values[source, :, :length]


class SlotAttention:
    """One new token for each of slots 0..n-1 at `positions`: stored in the cache, then attending to it."""

    def __init__(self, cache: SlotCache, positions: torch.Tensor) -> None:
        self.cache = cache
        self.cells = cache.cells(torch.arange(positions.shape[0], device=positions.device), positions)
        self.length = int(positions.max()) + 1
        keys = torch.arange(self.length, device=positions.device)
        self.mask = additive((keys[None, :] <= positions[:, None])[:, None, None], cache.keys[0].dtype)

    def __call__(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        self.cache.write(layer, self.cells, k, v)
        keys, values = self.cache.keys[layer], self.cache.values[layer]
        n, heads, head_dim = q.shape
        kv_heads = keys.shape[1]
        # Query heads of one group share their keys: they are that group's "query length", so the
        # fused kernel reads each key once.
        grouped = q.view(n, kv_heads, heads // kv_heads, head_dim)
        out = F.scaled_dot_product_attention(
            grouped, keys[:n, :, : self.length], values[:n, :, : self.length], attn_mask=self.mask
        )
        return out.reshape(n, heads * head_dim)
