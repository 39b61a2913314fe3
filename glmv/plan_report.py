"""The printed plan of `glmv plan`: the component table, the KV cache and budget, the ladder tried and the
choice (glmv/plan.py computes it)."""

from __future__ import annotations

from glmv.plan import COMPONENTS, FORMATS, GB, RESERVE_FRACTION, Plan, gb, reserve


def count(n: int) -> str:
    """A parameter count with its scale: 99.657B, 24.1M, 380.9K."""
    for scale, unit in ((10**9, "B"), (10**6, "M"), (10**3, "K")):
        if n >= scale:
            return f"{n / scale:.3f}{unit}" if unit == "B" else f"{n / scale:.1f}{unit}"
    return str(n)


def describe(plan: Plan) -> str:
    """The printed plan: the component table, the KV cache and budget, the ladder tried and the choice (or what is
    missing)."""
    lines = [f"{plan.model_type}: {count(plan.params)} parameters; sizes in GB (10^9 bytes)", "",
             *component_table(plan), "",
             f"KV cache: {plan.kv_bytes_per_token} bytes/token (bf16) x {plan.max_model_len} tokens x "
             f"{plan.max_num_seqs} sequence(s) = {gb(plan.kv_bytes)}",
             f"budget: {gb(plan.budget_bytes)} on {plan.device} - reserve {gb(plan.reserve_bytes)} "
             f"(max(1 GiB, {RESERVE_FRACTION:.0%}): activations, workspace) = {gb(plan.usable_bytes)} usable", "",
             "ladder (the first that fits is chosen):"]
    for i, (rung, ok) in enumerate(plan.tried, 1):
        if rung.mmap:
            mapped = plan.weight_bytes("bf16") - rung.device_bytes
            read = f"{gb(rung.device_bytes)} read + " if rung.device_bytes else ""
            need = f"weights {gb(mapped)} mapped from disk, {read}KV {gb(plan.kv_bytes)}"
        else:
            need = f"weights {gb(rung.device_bytes)} + KV {gb(plan.kv_bytes)} = {gb(rung.device_bytes + plan.kv_bytes)}"
        cpu = f", {gb(rung.cpu_bytes)} in CPU RAM" if rung.cpu_bytes else ""
        lines.append(f"  {i}. {rung.name}: {need}{cpu} -> {'fits' if ok else 'no'}")
    lines.append("")
    if not plan.fits:
        return "\n".join(lines + [plan.advice])
    lines.append(f"plan: {plan.strategy}; {gb(plan.device_bytes)} of {gb(plan.usable_bytes)} usable on {plan.device}")
    if plan.offload_layers:
        lines.append(f"  in CPU RAM: routed experts of decoder layers {plan.offload_layers[0]}-"
                     f"{plan.offload_layers[-1]}, {gb(plan.weights_cpu_bytes)} of "
                     f"{gb(plan.cpu_budget_bytes - reserve(plan.cpu_budget_bytes))} usable")
    if len(plan.tried) > 1:  # a shorter context may buy back the rung before (less quantisation or no offload)
        before = plan.tried[-2][0]
        tokens = (plan.usable_bytes - before.device_bytes) // plan.kv_bytes_per_token // plan.max_num_seqs
        if tokens >= 1:
            lines.append(f"  ({before.name} fits with --max-model-len {tokens})")
    return "\n".join(lines)


def component_table(plan: Plan) -> list[str]:
    """One row per component that has weights: its parameters, its size in every format, and as planned."""
    shown = {k: c for k, c in plan.components.items() if c.params}
    width = max(len(COMPONENTS[k]) for k in shown)

    def row(name: str, params: int, sizes: list[int], planned: str) -> str:
        return f"{name:<{width}}  {count(params):>8}" + "".join(f"{b / GB:>9.2f}" for b in sizes) + f"   {planned}"

    lines = [f"{'component':<{width}}  {'params':>8}" + "".join(f"{f:>9}" for f in FORMATS) + "   planned"]
    for key, c in shown.items():
        fmt = plan.formats[key]
        offloaded = key == "routed_experts" and plan.offload_layers
        where = f" ({len(plan.offload_layers)} layers in CPU RAM)" if offloaded else ""
        planned = f"{c.bytes(fmt) / GB:.2f} {fmt}{where}"
        lines.append(row(COMPONENTS[key], c.params, [c.bytes(f) for f in FORMATS], planned))
    total = plan.weight_bytes("bf16") if plan.mmap else plan.weights_device_bytes + plan.weights_cpu_bytes
    lines.append(row("total", plan.params, [plan.weight_bytes(f) for f in FORMATS], f"{total / GB:.2f}"))
    if plan.mtp_layers:
        lines.append(f"(the checkpoint's {plan.mtp_layers} MTP layer(s) are not loaded by glmv and not counted)")
    return lines
