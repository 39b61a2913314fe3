"""Several LoRA adapters on the stacked routed experts, each token taking its own (serving; glmv/lora/experts.py
is the one-adapter, trainable form and says why the low-rank term is computed per expert instead of merged).

    gate_up_proj [E, 2I, H] + s_k B_k[e] A_k[e]        for a token using adapter k routed to expert e
    down_proj    [E, H, I]  + s_k B_k[e] A_k[e]

Per adapted projection the adapters are stacked, A [n, E, r_max, in] and B [n, E, out, r_max], zero-padded to the
largest rank rounded up to 8 (torch._grouped_mm wants rows of 16 bytes; the padding adds exact zeros). Routing and
token sorting are Experts.forward's. Then each adapter present in the batch takes its own rows, still in expert
order, and runs one grouped GEMM pair over them (expert by expert when the grouped GEMM does not fit: fp64, odd
shapes, gradients). Its rows are found without a host synchronisation: one stable argsort by adapter puts each
adapter's rows together, and how many there are is known on the host (top-k times its tokens). On CPU (3
adapters, 32 experts) this adds 10-20% less than running every adapter over all rows with the other adapters' rows
masked, and far less than gathering each row's own A and B at 64 tokens (benchmarks/bench_multi_lora.py). A batch
where one adapter serves every row computes exactly what LoraExperts computes; a batch with none takes the plain
Experts path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from glmv.lora.config import AdapterSpec
from glmv.lora.experts import GROUPED_DTYPES
from glmv.lora.mapping import NO_ADAPTER, LoraContext
from glmv.model.moe import Experts, _grouped_mm_fits

RANK_MULTIPLE = 8  # bf16 / fp16 rows of 16 bytes


class MultiLoraExperts(Experts):
    lora_context: LoraContext
    lora_on: dict[str, frozenset[int]]  # projection -> the adapters that adapt it
    lora_scaling: dict[str, list[float]]  # projection -> scaling per adapter
    # buffers lora_A_<projection> [n, E, r_max, in] and lora_B_<projection> [n, E, out, r_max]

    @classmethod
    def adapt(cls, experts: Experts, context: LoraContext, count: int,
              adapters: dict[str, dict[int, tuple[AdapterSpec, torch.Tensor, torch.Tensor]]],
              dtype: torch.dtype) -> "MultiLoraExperts":
        """Turn `experts` (in place) into experts serving `count` adapters; `adapters`: projection -> adapter
        index -> (spec, A [E, r, in], B [E, out, r])."""
        experts.__class__ = cls
        experts.lora_context = context
        experts.lora_on, experts.lora_scaling = {}, {}
        for name, per_adapter in adapters.items():
            weight = getattr(experts, name)
            e, out, inp = weight.shape
            r_max = -(-max(spec.r for spec, _, _ in per_adapter.values()) // RANK_MULTIPLE) * RANK_MULTIPLE
            a_stack = torch.zeros(count, e, r_max, inp, device=weight.device, dtype=dtype)
            b_stack = torch.zeros(count, e, out, r_max, device=weight.device, dtype=dtype)
            scaling = [0.0] * count
            for k, (spec, a, b) in per_adapter.items():
                a_stack[k, :, : spec.r] = a
                b_stack[k, :, :, : spec.r] = b
                scaling[k] = spec.scaling
            experts.register_buffer(f"lora_A_{name}", a_stack, persistent=False)
            experts.register_buffer(f"lora_B_{name}", b_stack, persistent=False)
            experts.lora_on[name] = frozenset(per_adapter)
            experts.lora_scaling[name] = scaling
        return experts

    def forward(self, x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        mapping = self.lora_context.mapping
        present = [] if mapping is None else [a for a in mapping.present
                                               if any(a in on for on in self.lora_on.values())]
        if not present:  # no row uses an adapter of these experts: the plain path
            return super().forward(x, weights, ids)
        home, device, dtype = self.down_proj.device, x.device, x.dtype
        rows = mapping.rows(x.shape[0])
        x, weights, ids = x.to(home), weights.to(home), ids.to(home)  # offloaded experts compute where they live
        k = ids.shape[1]
        flat = ids.flatten()
        order = flat.argsort(stable=True)
        counts = torch.bincount(flat, minlength=self.num_experts)
        tokens = order // k
        runs = self._runs(present, rows, tokens, flat[order], k)
        grouped = self.grouped_fits(x)

        def project(name: str, xs: torch.Tensor) -> torch.Tensor:
            out = self._base(name, xs, counts, grouped)
            for a, run in runs.items():
                if a not in self.lora_on.get(name, ()):
                    continue
                if run is None:  # every row
                    out = out + self._low_rank(name, a, xs, counts, grouped).to(out.dtype)
                else:
                    at, sub_counts = run
                    out = out.index_add(0, at, self._low_rank(name, a, xs[at], sub_counts, grouped).to(out.dtype))
            return out

        gate, up = project("gate_up_proj", x[tokens]).chunk(2, dim=-1)
        out = project("down_proj", self.act(gate) * up)
        out = out * weights.flatten()[order, None].to(x.dtype)
        return torch.zeros_like(x).index_add_(0, tokens, out).to(device, dtype)

    def _runs(self, present: list[int], rows, tokens: torch.Tensor, experts: torch.Tensor, k: int) -> dict:
        """Adapter -> (positions of its rows among the expert-sorted rows, its rows per expert); None for the
        adapter of every row."""
        if rows is None:
            return {present[0]: None}
        by_adapter = rows.ids.to(tokens.device)[tokens].argsort(stable=True)  # each run keeps the expert order
        runs, start = {}, 0
        for a in sorted(rows.counts):  # the argsort's order: -1 (no adapter) first
            end = start + rows.counts[a] * k
            if a != NO_ADAPTER and a in present:
                at = by_adapter[start:end]
                runs[a] = (at, torch.bincount(experts[at], minlength=self.num_experts))
            start = end
        return runs

    def _stacks(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        return getattr(self, f"lora_A_{name}"), getattr(self, f"lora_B_{name}")

    def grouped_fits(self, x: torch.Tensor) -> bool:
        stacks = [t for name in self.lora_on for t in self._stacks(name)]
        return (x.dtype in GROUPED_DTYPES and all(t.dtype == x.dtype for t in stacks)
                and _grouped_mm_fits(x, self.gate_up_proj, self.down_proj, *(t[0] for t in stacks)))

    def _base(self, name: str, xs: torch.Tensor, counts: torch.Tensor, grouped: bool) -> torch.Tensor:
        weight = getattr(self, name)
        if grouped:
            return torch._grouped_mm(xs, weight.transpose(1, 2), offs=counts.cumsum(0).to(torch.int32))
        return torch.cat([F.linear(c, weight[e]) for e, c in enumerate(xs.split(counts.tolist())) if c.shape[0]])

    def _low_rank(self, name: str, a: int, xs: torch.Tensor, counts: torch.Tensor, grouped: bool) -> torch.Tensor:
        """s_a B_a[e] A_a[e] x for the expert-sorted rows `xs` (counts: rows per expert), in the adapter's dtype."""
        a_stack, b_stack = self._stacks(name)
        s = self.lora_scaling[name][a]
        if grouped:
            offs = counts.cumsum(0).to(torch.int32)
            low = torch._grouped_mm(xs, a_stack[a].transpose(1, 2), offs=offs)
            return s * torch._grouped_mm(low, b_stack[a].transpose(1, 2), offs=offs)
        xs = xs.to(a_stack.dtype)
        return torch.cat([F.linear(F.linear(c, a_stack[a, e]), b_stack[a, e]) * s
                          for e, c in enumerate(xs.split(counts.tolist())) if c.shape[0]])

    def extra_repr(self) -> str:
        return ", ".join(f"{n}: adapters {sorted(on)} of {len(self.lora_scaling[n])}" for n, on in self.lora_on.items())
