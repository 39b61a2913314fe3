"""How a batch of rows each using its own LoRA adapter is best computed on CPU: the measurement behind
glmv/lora/multi_linear.py (loop over the adapters present vs gather each row's A/B) and multi_experts.py (mask each
adapter's rows in one grouped GEMM pair vs select them). Not a test: run it, one thread, on a quiet machine:

    OMP_NUM_THREADS=1 python benchmarks/bench_multi_lora.py

Prints the time each way adds to the base computation (best of several repeats), at 1 and 8 rows (decode) and 64.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

ADAPTERS, RANK = 3, 16


def best_us(fns: dict, rounds: int = 40, calls: int = 10) -> dict[str, float]:
    """Best time per call of each function, in microseconds; the functions take turns in every round, so that a
    busy machine slows them alike."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            best[name] = min(best[name], (time.perf_counter() - start) / calls * 1e6)
    return best


def report(what: str, fns: dict) -> None:
    t = best_us(fns)
    extra = " | ".join(f"{name} +{t[name] - t['base']:6.0f} us" for name in fns if name != "base")
    print(f"{what}: base {t['base']:7.0f} us | {extra}")


def row_adapters(rows: int) -> torch.Tensor:
    """One row: adapter 0; more: 0, 1, 2, -1 (base), 0, ...: every adapter and the base model in the batch."""
    return (torch.arange(rows) + 1) % (ADAPTERS + 1) - 1


def linear(dim: int = 2048) -> None:
    w = torch.randn(dim, dim) / dim**0.5
    a, b = torch.randn(ADAPTERS, RANK, dim) / dim**0.5, torch.randn(ADAPTERS, dim, RANK) / RANK**0.5
    scaling = torch.rand(ADAPTERS) + 0.5
    for rows in (1, 8, 64):
        x, ids = torch.randn(rows, dim), row_adapters(rows)
        groups = [(k, (ids == k).nonzero().flatten()) for k in range(ADAPTERS) if (ids == k).any()]

        def base():
            return F.linear(x, w)

        def loop():  # what MultiLoraLinear does
            out = F.linear(x, w)
            for k, idx in groups:
                out.index_add_(0, idx, F.linear(F.linear(x[idx], a[k]), b[k]) * float(scaling[k]))
            return out

        def gather():  # bgmv: each row's own A and B, batched
            out = F.linear(x, w)
            sel = ids.clamp(min=0)
            low = torch.bmm(a[sel], x[:, :, None]) * torch.where(ids >= 0, scaling[sel], 0.0)[:, None, None]
            return out + torch.bmm(b[sel], low)[..., 0]

        torch.testing.assert_close(loop(), gather())
        report(f"linear {dim}x{dim}, {rows:2d} rows", {"base": base, "loop": loop, "gather": gather})


def experts(experts: int = 32, hidden: int = 512, inner: int = 256, top_k: int = 4) -> None:
    w1 = torch.randn(experts, 2 * inner, hidden) / hidden**0.5  # the gate_up projection
    a1 = torch.randn(ADAPTERS, experts, RANK, hidden) / hidden**0.5
    b1 = torch.randn(ADAPTERS, experts, 2 * inner, RANK) / RANK**0.5
    for rows in (1, 8, 64):
        x, tok_ids = torch.randn(rows, hidden), row_adapters(rows)
        ids = torch.stack([torch.randperm(experts)[:top_k] for _ in range(rows)])
        flat = ids.flatten()
        order = flat.argsort(stable=True)
        counts = torch.bincount(flat, minlength=experts)
        offs = counts.cumsum(0).to(torch.int32)
        xs, sorted_ids, sorted_experts = x[order // top_k], tok_ids[order // top_k], flat[order]
        present = sorted(set(tok_ids.tolist()) - {-1})

        def base():
            return torch._grouped_mm(xs, w1.transpose(1, 2), offs=offs)

        def masked():  # every adapter over all rows, the other adapters' rows zeroed
            out = base()
            for k in present:
                low = torch._grouped_mm(xs, a1[k].transpose(1, 2), offs=offs) * (sorted_ids == k)[:, None]
                out = out + torch._grouped_mm(low, b1[k].transpose(1, 2), offs=offs)
            return out

        per_adapter = {k: int((tok_ids == k).sum()) * top_k for k in range(-1, ADAPTERS)}  # known on the host

        def select():  # what MultiLoraExperts does: each adapter's rows (no host sync), counted per expert again
            out = base()
            by_adapter, start = sorted_ids.argsort(stable=True), 0
            for k in range(-1, ADAPTERS):
                idx, start = by_adapter[start : start + per_adapter[k]], start + per_adapter[k]
                if k not in present:
                    continue
                sub_offs = torch.bincount(sorted_experts[idx], minlength=experts).cumsum(0).to(torch.int32)
                low = torch._grouped_mm(xs[idx], a1[k].transpose(1, 2), offs=sub_offs)
                out.index_add_(0, idx, torch._grouped_mm(low, b1[k].transpose(1, 2), offs=sub_offs))
            return out

        def gather():  # each (token, expert) row's own A and B, batched
            out = base()
            sel, e = sorted_ids.clamp(min=0), sorted_experts
            low = torch.bmm(a1[sel, e], xs[:, :, None]) * (sorted_ids >= 0)[:, None, None]
            return out + torch.bmm(b1[sel, e], low)[..., 0]

        torch.testing.assert_close(masked(), select())
        torch.testing.assert_close(masked(), gather())
        report(f"experts {experts}x{2 * inner}x{hidden} gate_up, top-{top_k}, {rows:2d} tokens",
               {"base": base, "masked": masked, "select": select, "gather": gather})


if __name__ == "__main__":
    torch.manual_seed(0)
    torch.set_num_threads(1)
    linear()
    experts()
