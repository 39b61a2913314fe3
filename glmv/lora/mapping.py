"""Which served adapter each row of a forward uses: the LoRA mapping, set around a forward, read by the layers.

The model's code never sees adapters or batches of them. Whoever calls the model (the engine's runner for a batch,
a vision encode or an embedding for one request) sets a LoraMapping on the adapters' LoraContext for the length
of the call; every serving LoRA layer holds that context and reads the mapping (vLLM's punica wrapper / LoRA
mapping). No mapping means the base model. The mapping lives in a thread-local slot: the engine thread decodes
while worker threads encode images or pool embeddings with the same modules, each under its own mapping.

Rows are the runner's layout: B sequences of q positions (left-padded), flattened to B*q tokens. A layer that
sees B*q rows (attention, MLPs, experts) takes the adapter per token; one that sees B rows (lm_head after
logits_to_keep=1) takes it per sequence.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

NO_ADAPTER = -1


@dataclass(frozen=True)
class RowAdapters:
    """One layout of a forward's rows (per token, or per sequence) and the adapter of each."""

    ids: torch.Tensor  # [rows] the adapter of each row, on the model's device
    groups: tuple[tuple[int, torch.Tensor], ...]  # (adapter, indices of its rows) per adapter in use
    counts: dict[int, int]  # rows per adapter (-1 included), on the host


class LoraMapping:
    """The adapter of each row of one forward (-1: none), with what the layers need computed once per forward."""

    def __init__(self, present: tuple[int, ...], layouts: dict[int, RowAdapters] | None = None, layout: str = ""):
        self.present = present  # the adapters in use, ascending
        self._layouts = layouts  # number of rows -> its RowAdapters; None: every row uses present[0]
        self._layout = layout

    @classmethod
    def uniform(cls, adapter: int) -> "LoraMapping":
        """Every row of every call uses `adapter` (a vision encode, an embedding: one request's work)."""
        return cls((adapter,))

    @classmethod
    def batch(cls, adapters: list[int], query_len: int, device: torch.device | str) -> "LoraMapping | None":
        """The runner's B sequences of `query_len` positions, sequence i using adapters[i]; None when no row
        uses an adapter (the layers then do no adapter work at all)."""
        if all(a == NO_ADAPTER for a in adapters):
            return None
        if len(set(adapters)) == 1:
            return cls.uniform(adapters[0])
        present = tuple(sorted(set(adapters) - {NO_ADAPTER}))
        per_sequence = torch.tensor(adapters)
        layouts = {}
        for ids in (per_sequence, per_sequence.repeat_interleave(query_len)):  # lm_head's rows, everyone else's
            groups = tuple((a, (ids == a).nonzero().flatten().to(device)) for a in present)
            layouts[len(ids)] = RowAdapters(ids.to(device), groups, Counter(ids.tolist()))
        return cls(present, layouts, f"{len(adapters)} sequences of {query_len} positions")

    @property
    def is_uniform(self) -> bool:
        """One adapter for every row."""
        return self._layouts is None

    def groups(self, rows: int) -> tuple[tuple[int, torch.Tensor | None], ...]:
        """(adapter, indices of the rows using it; None: all of them) for each adapter in use, for a layer input
        of `rows` flattened rows."""
        if self._layouts is None:
            return tuple((a, None) for a in self.present)
        return self.rows(rows).groups

    def rows(self, rows: int) -> RowAdapters | None:
        """The adapters of a layer input of `rows` flattened rows; None when one adapter serves every row."""
        if self._layouts is None:
            return None
        if rows not in self._layouts:
            raise RuntimeError(f"a LoRA layer got {rows} rows, but this forward's adapter mapping covers "
                               f"{self._layout}: the runner and the model disagree on the batch layout")
        return self._layouts[rows]


class LoraContext:
    """The mapping slot shared by every serving LoRA layer of one model (one per thread)."""

    def __init__(self) -> None:
        self._local = threading.local()

    @property
    def mapping(self) -> LoraMapping | None:
        return getattr(self._local, "mapping", None)

    @contextmanager
    def use(self, mapping: LoraMapping | None) -> Iterator[None]:
        """`mapping` for the calls inside (None: the base model), then whatever was set before."""
        before = self.mapping
        self._local.mapping = mapping
        try:
            yield
        finally:
            self._local.mapping = before
