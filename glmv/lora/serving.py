"""Several peft-layout adapters served at once on one model, the adapter chosen per request (vLLM's multi-LoRA).

    served = serve_adapters(model, {"sql": "adapters/sql", "chat": "adapters/chat"})
    with served.scope("sql"): model(...)                         # every row with "sql" (None: the base model)
    with served.batch(["sql", None, "chat"], q, device): model(...)   # the runner: one adapter per sequence

Each weight any adapter targets becomes a MultiLoraLinear / MultiLoraExperts holding every adapter's A and B
stacked; the layers read which rows use which adapter from the LoraContext (glmv/lora/mapping.py) that `scope` and
`batch` set, and compute the base model when nothing is set. Engine code that does not know whether its model
serves adapters calls the module functions (`lora_batch`, `lora_scope`, `vision_tag`), which cost nothing then.

Per-row selection, measured by benchmarks/bench_multi_lora.py (fp32, one CPU thread, 3 adapters of rank 16 on a
2048x2048 linear, the time added to its base matmul of 0.4 / 2.2 / 7.3 ms at 1 / 8 / 64 rows): looping over the
adapters present adds 0.05 / 0.28 / 0.56 ms; gathering each row's own A and B and multiplying batched (bgmv) adds
0.12 / 1.3 / 8.0 ms. The layers loop (multi_linear.py). The routed experts select each adapter's rows without a
host synchronisation (multi_experts.py), which beat masking and gathering there.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import ContextManager

import torch
from torch import nn

from glmv.errors import ConfigError
from glmv.lora.adapt import _check_adaptable
from glmv.lora.mapping import NO_ADAPTER, LoraContext, LoraMapping
from glmv.lora.multi_experts import MultiLoraExperts
from glmv.lora.multi_linear import MultiLoraLinear
from glmv.lora.peft_format import read_adapter
from glmv.model.moe import Experts

_ATTR = "_glmv_served_adapters"  # model attribute: its ServedAdapters


class ServedAdapters:
    """The adapters a model serves: names in load order (a name's position is its index in the layers' stacks)."""

    def __init__(self, paths: dict[str, Path], vision: frozenset[str]):
        self.paths = paths  # name -> adapter directory
        self.names = tuple(paths)
        self.vision = vision  # adapters that adapt the vision tower or projector: their image embeddings differ
        self.context = LoraContext()
        self._index = {name: i for i, name in enumerate(self.names)}

    def index(self, name: str | None) -> int:
        """The adapter's position in the stacks (-1 for None, the base model)."""
        if name is None:
            return NO_ADAPTER
        if name not in self._index:
            raise ConfigError(f"no adapter named {name!r} is loaded (loaded: {', '.join(self.names)})")
        return self._index[name]

    def scope(self, name: str | None) -> ContextManager[None]:
        """Every model call inside, in this thread, uses adapter `name` (None: the base model)."""
        return self.context.use(None if name is None else LoraMapping.uniform(self.index(name)))

    def batch(self, names: list[str | None], query_len: int, device: torch.device | str) -> ContextManager[None]:
        """The runner's forward over len(names) sequences of `query_len` positions, sequence i with names[i]."""
        return self.context.use(LoraMapping.batch([self.index(n) for n in names], query_len, device))

    def vision_tag(self) -> str:
        """What keys this thread's image embeddings apart: the active adapter if it adapts the vision side."""
        mapping = self.context.mapping
        if mapping is None:
            return ""
        if not mapping.is_uniform:
            raise RuntimeError("vision encoding runs under one adapter (scope), not a batch mapping")
        name = self.names[mapping.present[0]]
        return f"lora:{name}" if name in self.vision else ""


def serve_adapters(model: nn.Module, adapters: Mapping[str, str | Path],
                   dtype: torch.dtype | None = None) -> ServedAdapters:
    """Load the peft-layout adapters `adapters` (name -> directory) onto `model` for serving, unmerged, each
    selectable per call (`scope`) or per sequence (`batch`); every file is read and checked before the model
    changes. `dtype`: the adapters' dtype (default: the model's, which keeps the grouped expert GEMMs usable)."""
    if served_adapters(model) is not None:
        raise ConfigError("this model already serves adapters; load them all in one serve_adapters call")
    if not adapters:
        raise ConfigError("serve_adapters: give at least one adapter (name -> directory)")
    for name in adapters:
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"an adapter's name must be a non-empty string, got {name!r}")
    dtype = dtype or next(model.parameters()).dtype
    read = {name: read_adapter(model, path) for name, path in adapters.items()}
    linears: dict[nn.Module, dict[int, tuple]] = {}
    experts: dict[nn.Module, dict[str, dict[int, tuple]]] = {}
    for k, weights in enumerate(read.values()):
        for target, (module, spec, a, b, magnitude) in weights.items():
            _check_adaptable(model, target, module, spec)
            if isinstance(module, Experts):
                experts.setdefault(module, {}).setdefault(target.rsplit(".", 1)[1], {})[k] = (spec, a, b)
            else:
                linears.setdefault(module, {})[k] = (spec, a, b, magnitude)
    served = ServedAdapters({name: Path(path) for name, path in adapters.items()},
                            frozenset(name for name, w in read.items() if any(t.startswith("visual.") for t in w)))
    with torch.no_grad():
        for module, per_adapter in linears.items():
            MultiLoraLinear.adapt(module, served.context, len(read), per_adapter, dtype)
        for module, per_param in experts.items():
            MultiLoraExperts.adapt(module, served.context, len(read), per_param, dtype)
    setattr(model, _ATTR, served)
    return served


def served_adapters(model: nn.Module) -> ServedAdapters | None:
    return model.__dict__.get(_ATTR)


def lora_scope(model: nn.Module, name: str | None) -> ContextManager[None]:
    """`model`'s calls inside use adapter `name` (None: the base model); nothing when it serves no adapters."""
    served = served_adapters(model)
    return nullcontext() if served is None else served.scope(name)


def lora_batch(model: nn.Module, names: list[str | None], query_len: int) -> ContextManager[None]:
    """The runner's forward: sequence i uses adapter names[i]; nothing when `model` serves no adapters."""
    served = served_adapters(model)
    return nullcontext() if served is None else served.batch(names, query_len, model.device)


def vision_tag(model: nn.Module) -> str:
    """A suffix for the keys of image embeddings computed now, in this thread: "" for the base model, an
    adapter that leaves the vision side alone, or a model without adapters."""
    served = served_adapters(model)
    return "" if served is None else served.vision_tag()
