"""The memory planner: what of a GLM-V model fits a device, computed from config.json alone (no weight is read).

Weights are counted per component from the config (the shapes glmv.model builds; tests compare the counts with
the model built on the meta device) and priced in four formats:
  bf16        2 bytes a weight (what the checkpoints hold)
  fp8, int8   1 byte a weight + one bf16 scale per output row (per-channel)
  int4        half a byte a weight + one bf16 scale per 128 weights of a row (group size 128)
Only the matrices of linear layers (and the embedding tables) have quantised prices; norms, biases, the vision
position table and the router's fp32 score-correction bias keep their dtype.

The plan is the first rung of this ladder whose weights on the device plus the KV cache fit the budget minus the
reserve (docs/memory.md says why in this order):
  1  bf16
  2  8-bit routed experts
  3  8-bit decoder: attention, dense MLPs, shared and routed experts
  4  int4 routed experts + 8-bit rest of the decoder
  5  on CUDA: rung 4 with the routed experts of the last N MoE layers in CPU RAM (the smallest N that fits);
     on CPU:  bf16 weights memory-mapped from disk (RAM holds the KV cache, the reserve and the routed experts,
              which glmv stacks per layer and so must read)
"8-bit" is fp8 on CUDA and int8 on CPU (CPUs have no fp8 arithmetic). Never quantised: the vision tower and
its projector (GLM-4.5V-FP8 keeps the whole tower in bf16: spec 8.3), embeddings and lm_head, the router.
A rung that saves nothing over the one before (the expert rungs of a dense model) is skipped.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field

from glmv.config import GlmvConfig, TextConfig
from glmv.errors import ConfigError

logger = logging.getLogger(__name__)
GB = 10**9  # printed sizes are decimal GB, like the figures (215 GB bf16 for GLM-4.5V)
GIB = 2**30
# Room kept free for what the weights and the KV cache do not cover: activations of one prefill chunk and of the
# vision tower on a large image, the logits, the CUDA context, allocator fragmentation. 5% of the budget, at
# least 1 GiB (a small budget still needs the fixed costs).
RESERVE_FRACTION = 0.05
RESERVE_MIN = GIB
SCALE_BYTES = 2  # quantisation scales are bf16
INT4_GROUP = 128
KV_DTYPE_BYTES = 2  # the KV cache is in the model's dtype: bf16
FORMATS = ("bf16", "fp8", "int8", "int4")
COMPONENTS = {  # key -> printed name, in printing order
    "vision": "vision tower",
    "projector": "projector (merger)",
    "embeddings": "embeddings + lm_head",
    "attention": "attention",
    "dense_mlp": "dense MLPs",
    "shared_experts": "shared experts",
    "routed_experts": "routed experts",
    "router": "router",
    "norms": "norms",
}
DECODER_LINEARS = ("attention", "dense_mlp", "shared_experts", "routed_experts")  # what rung 3 quantises
EIGHT_BIT = {"cuda": "fp8", "cpu": "int8"}


def reserve(budget: int) -> int:
    return max(RESERVE_MIN, int(budget * RESERVE_FRACTION))


@dataclass(frozen=True)
class Matrices:
    """`count` weight matrices of [rows, cols] (rows = outputs): the tensors the quantised formats apply to."""

    rows: int
    cols: int
    count: int = 1

    @property
    def params(self) -> int:
        return self.rows * self.cols * self.count

    def bytes(self, fmt: str) -> int:
        n = self.rows * self.cols
        if fmt == "bf16":
            each = 2 * n
        elif fmt in ("fp8", "int8"):
            each = n + SCALE_BYTES * self.rows
        elif fmt == "int4":  # two weights a byte, a scale per started group of a row
            each = -(-n // 2) + SCALE_BYTES * self.rows * -(-self.cols // INT4_GROUP)
        else:
            raise ConfigError(f"unknown weight format {fmt!r}: use one of {', '.join(FORMATS)}")
        return each * self.count


@dataclass(frozen=True)
class Component:
    """One part of the model: its weight matrices and its small tensors (kept as they are in every format)."""

    matrices: tuple[Matrices, ...] = ()
    small: int = 0  # elements of norms, biases and the vision position table (bf16)
    fp32: int = 0  # elements kept in fp32: the router's e_score_correction_bias

    @property
    def params(self) -> int:
        return sum(m.params for m in self.matrices) + self.small + self.fp32

    def bytes(self, fmt: str = "bf16") -> int:
        return sum(m.bytes(fmt) for m in self.matrices) + 2 * self.small + 4 * self.fp32


def _swiglu(dim: int, inner: int, count: int) -> tuple[Matrices, ...]:
    """gate and up [inner, dim] (fused or not: the same rows and groups) and down [dim, inner], `count` times."""
    return Matrices(inner, dim, 2 * count), Matrices(dim, inner, count)


def moe_layers(t: TextConfig) -> list[int]:
    return [i for i in range(t.num_hidden_layers) if t.is_moe_layer(i)]


def routed_experts(t: TextConfig, layers: int) -> Component:
    return Component(_swiglu(t.hidden_size, t.moe_intermediate_size, t.n_routed_experts * layers))


def components(config: GlmvConfig) -> dict[str, Component]:
    """Every parameter and persistent buffer of GlmvForConditionalGeneration, by component. MTP layers
    (num_nextn_predict_layers) are not built by glmv, so not counted."""
    t, v = config.text, config.vision
    h, layers, n_moe = t.hidden_size, t.num_hidden_layers, len(moe_layers(t))
    q, kv = t.num_attention_heads * t.head_dim, t.num_key_value_heads * t.head_dim
    vh, out = v.hidden_size, v.out_hidden_size
    positions = (v.image_size // v.patch_size) ** 2
    return {
        "vision": Component(
            (Matrices(vh, v.patch_dim), Matrices(3 * vh, vh, v.depth), Matrices(vh, vh, v.depth),
             *_swiglu(vh, out, v.depth)),  # patch embedding (a Conv3d over one patch), qkv, proj, MLP
            # patch-embedding bias, post-conv norm, position table, two norms a block, post norm, qkv biases
            small=vh * (3 + positions + 2 * v.depth) + (3 * vh * v.depth if v.attention_bias else 0)),
        "projector": Component(  # 2x2 downsample conv, merger proj, merger SwiGLU; conv bias and LayerNorm
            (Matrices(out, vh * v.spatial_merge_size**2), Matrices(out, out), *_swiglu(out, v.intermediate_size, 1)),
            small=3 * out),
        "embeddings": Component((Matrices(t.vocab_size, h, 1 if config.tie_word_embeddings else 2),)),
        "attention": Component((Matrices(q, h, layers), Matrices(kv, h, 2 * layers), Matrices(h, q, layers)),
                               small=(q + 2 * kv) * layers if t.attention_bias else 0),
        "dense_mlp": Component(_swiglu(h, t.intermediate_size, layers - n_moe)),
        "shared_experts": Component(_swiglu(h, t.moe_intermediate_size * t.n_shared_experts, n_moe)),
        "routed_experts": routed_experts(t, n_moe),
        "router": Component((Matrices(t.n_routed_experts, h, n_moe),), fp32=t.n_routed_experts * n_moe),
        # two norms a layer (four in the dense decoder's sandwich layers) and the final norm
        "norms": Component(small=h * (layers * (2 if t.moe else 4) + 1)),
    }


def kv_bytes_per_token(t: TextConfig) -> int:
    return 2 * t.num_hidden_layers * t.num_key_value_heads * t.head_dim * KV_DTYPE_BYTES


@dataclass(frozen=True)
class Rung:
    """One strategy of the ladder, priced for a model."""

    name: str
    formats: dict[str, str]  # every component -> bf16, fp8, int8 or int4
    device_bytes: int  # weights in device memory
    cpu_bytes: int = 0  # offloaded routed experts in CPU RAM
    offload_layers: tuple[int, ...] = ()
    mmap: bool = False


@dataclass
class Plan:
    """What fits, and how. `formats`, `offload_layers` and `mmap` are what a loader applies."""

    model_type: str
    device: str
    budget_bytes: int  # the memory given (or found free) on the device, reserve included
    reserve_bytes: int
    max_model_len: int
    max_num_seqs: int
    kv_bytes_per_token: int
    components: dict[str, Component]
    strategy: str  # the chosen rung's name (the last one tried when nothing fits)
    formats: dict[str, str]  # component -> format of its weights
    offload_layers: list[int]  # decoder layers whose routed experts stay in CPU RAM
    mmap: bool  # weights read from disk through a memory map (CPU only)
    weights_device_bytes: int
    weights_cpu_bytes: int
    cpu_budget_bytes: int | None  # CPU RAM for offloaded experts (None on device cpu)
    fits: bool
    advice: str  # when nothing fits: what is missing and what to try
    tried: list[tuple[Rung, bool]] = field(default_factory=list)  # each rung considered and whether it fit
    mtp_layers: int = 0  # multi-token-prediction layers in the checkpoint, not loaded by glmv
    dtype: str = "bfloat16"  # of the unquantised weights and of the KV cache

    @property
    def kv_bytes(self) -> int:
        return self.kv_bytes_per_token * self.max_model_len * self.max_num_seqs

    @property
    def usable_bytes(self) -> int:
        return self.budget_bytes - self.reserve_bytes

    @property
    def device_bytes(self) -> int:
        return self.weights_device_bytes + self.kv_bytes

    @property
    def params(self) -> int:
        return sum(c.params for c in self.components.values())

    def weight_bytes(self, fmt: str) -> int:
        """All weights in one format (the table's total row)."""
        return sum(c.bytes(fmt) for c in self.components.values())

    @property
    def quantize(self) -> str | None:
        """The lowest-bit format any weights use (None: all bf16)."""
        used = set(self.formats.values()) - {"bf16"}
        return next((f for f in ("int4", "fp8", "int8") if f in used), None)

    @property
    def quantized_parts(self) -> str | None:
        """"experts" (only the routed experts are quantised), "all" (every decoder linear is) or None."""
        parts = {k for k, f in self.formats.items() if f != "bf16" and self.components[k].params}
        return None if not parts else "experts" if parts == {"routed_experts"} else "all"

    def describe(self) -> str:
        """The table `glmv plan` prints (glmv/plan_report.py)."""
        from glmv.plan_report import describe

        return describe(self)

    def load_kwargs(self) -> dict:
        """load_model(...) arguments that apply this plan to a float checkpoint."""
        quantize = {k: f for k, f in self.formats.items() if f != "bf16"}
        return {"dtype": self.dtype, "quantize": quantize or None, "offload_experts": self.offload_layers,
                "mmap": self.mmap}


def plan_for_checkpoint(path, device: str, memory: int | str, cpu_memory: int | str | None = None,
                        max_model_len: int | None = None) -> Plan:
    """The plan `--memory SIZE|auto` applies when loading checkpoint `path` on `device`: logged, or a ConfigError
    with the planner's advice when nothing fits."""
    from glmv.engine.engine import parse_memory

    budget = free_memory(device) if memory == "auto" else parse_memory(memory)
    config = GlmvConfig.from_pretrained(path)
    if config.raw.get("quantization_config") is not None:
        raise ConfigError(f"--memory plans how to load a float checkpoint; {path} is already quantised: load it "
                          "without --memory (`glmv plan` still prints what its float original would need)")
    plan = plan_memory(config, device, budget, max_model_len, 1, parse_memory(cpu_memory))
    if not plan.fits:
        raise ConfigError(f"--memory {memory}: {config.model_type} does not fit {device} in any way glmv knows\n"
                          f"{plan.describe()}")
    logger.info("memory plan for %s:\n%s", path, plan.describe())
    return plan


def plan_memory(config: GlmvConfig, device: str, memory_bytes: int, max_model_len: int | None = None,
                max_num_seqs: int = 1, cpu_memory_bytes: int | None = None) -> Plan:
    """The first rung of the ladder (module docstring) that fits `memory_bytes` of `device` ("cuda", "cuda:N" or
    "cpu") minus the reserve, with a KV cache for `max_num_seqs` sequences of `max_model_len` tokens (default:
    the model's max_position_embeddings). Offloaded experts must fit `cpu_memory_bytes` (default: this machine's
    RAM) minus its own reserve."""
    kind = device_kind(device)
    t = config.text
    context = t.max_position_embeddings if max_model_len is None else max_model_len
    for name, value in (("memory", memory_bytes), ("max_model_len", context), ("max_num_seqs", max_num_seqs),
                        ("CPU memory", 1 if cpu_memory_bytes is None else cpu_memory_bytes)):
        if value < 1:
            raise ConfigError(f"the {name} to plan for must be at least 1, got {value}")
    parts = components(config)
    kv = kv_bytes_per_token(t) * context * max_num_seqs
    usable = memory_bytes - reserve(memory_bytes)
    cpu_budget = None if kind == "cpu" else cpu_memory_bytes or total_ram()
    tried: list[tuple[Rung, bool]] = []
    for rung in ladder(parts, kind):
        tried.append((rung, fits(rung, kv, usable, cpu_budget)))
        if tried[-1][1]:
            break
    else:
        last = offload(tried[-1][0], t, kv, usable) if kind == "cuda" else memory_map(parts)
        if last is not None:
            tried.append((last, fits(last, kv, usable, cpu_budget)))
    rung, ok = tried[-1]
    plan = Plan(config.model_type, str(device), memory_bytes, reserve(memory_bytes), context, max_num_seqs,
                kv_bytes_per_token(t), parts, rung.name, dict(rung.formats), list(rung.offload_layers), rung.mmap,
                rung.device_bytes, rung.cpu_bytes, cpu_budget, ok, "", tried, t.num_nextn_predict_layers)
    if not ok:
        plan.advice = advice(plan)
    return plan


def fits(rung: Rung, kv: int, usable: int, cpu_budget: int | None) -> bool:
    """Whether the rung's device weights and the KV cache fit `usable`, and its offloaded experts the CPU RAM."""
    return rung.device_bytes + kv <= usable and cpu_fits(rung, cpu_budget)


def cpu_fits(rung: Rung, cpu_budget: int | None) -> bool:
    return not rung.cpu_bytes or (cpu_budget is not None and rung.cpu_bytes <= cpu_budget - reserve(cpu_budget))


def ladder(parts: dict[str, Component], kind: str) -> list[Rung]:
    """Rungs 1-4, minus those that save nothing over the rung before."""
    eight = EIGHT_BIT[kind]
    decoder = dict.fromkeys(DECODER_LINEARS, eight)
    rungs = [("bf16", {}), (f"{eight} routed experts", {"routed_experts": eight}), (f"{eight} decoder", decoder),
             (f"int4 routed experts + {eight} decoder", {**decoder, "routed_experts": "int4"})]
    out: list[Rung] = []
    for name, chosen in rungs:
        formats = {k: chosen.get(k, "bf16") for k in parts}
        size = sum(c.bytes(formats[k]) for k, c in parts.items())
        if not out or size < out[-1].device_bytes:
            out.append(Rung(name, formats, size))
    return out


def offload(base: Rung, t: TextConfig, kv: int, usable: int) -> Rung | None:
    """`base` with the routed experts of the last N MoE layers in CPU RAM, N the smallest that fits the device
    (all MoE layers when none does; None for a dense model). Any N layers weigh the same; taking the last ones
    keeps the layers whose experts stay on the device a contiguous prefix. The experts keep base's format."""
    layers = moe_layers(t)
    if not layers:
        return None
    per_layer = routed_experts(t, 1).bytes(base.formats["routed_experts"])
    n = min(len(layers), max(1, -(-(base.device_bytes + kv - usable) // per_layer)))
    return Rung(f"{base.name}, last {n} MoE layers' experts in CPU RAM", base.formats,
                base.device_bytes - n * per_layer, n * per_layer, tuple(layers[-n:]))


def memory_map(parts: dict[str, Component]) -> Rung:
    """bf16 weights paged in from the checkpoint's files (load_model(mmap=True)): they need no RAM of their own
    (the page cache holds what fits), except the routed experts, which glmv stacks per layer and so reads into
    memory. Slow when the weights are much larger than RAM."""
    experts = parts["routed_experts"].bytes("bf16")
    name = "bf16 memory-mapped from disk" + (", routed experts in RAM" if experts else "")
    return Rung(name, dict.fromkeys(parts, "bf16"), experts, mmap=True)


def advice(plan: Plan) -> str:
    """What is missing and what to try, for a plan that does not fit."""
    # the least device memory any rung needs whose CPU part fits (the context advice holds for that rung)
    smallest = min(r.device_bytes for r, _ in plan.tried if cpu_fits(r, plan.cpu_budget_bytes))
    need = smallest + plan.kv_bytes
    lines = [f"does not fit: needs {gb(need)} on {plan.device} (weights {gb(smallest)} at best + KV cache "
             f"{gb(plan.kv_bytes)}) but {gb(plan.usable_bytes)} is usable ({gb(plan.budget_bytes)} - "
             f"{gb(plan.reserve_bytes)} reserve); try:"]
    tokens = (plan.usable_bytes - smallest) // plan.kv_bytes_per_token
    if tokens >= plan.max_num_seqs:
        lines.append(f"  - a shorter context: --max-model-len {tokens // plan.max_num_seqs} with --max-num-seqs "
                     f"{plan.max_num_seqs}, or fewer sequences ({tokens} KV tokens fit in all)")
    if not cpu_fits(plan.tried[-1][0], plan.cpu_budget_bytes):
        lines.append(f"  - more CPU RAM for the offloaded experts: they need {gb(plan.weights_cpu_bytes)}, "
                     f"{gb(plan.cpu_budget_bytes - reserve(plan.cpu_budget_bytes))} is usable (--cpu-memory)")
    lines.append("  - a device with more memory (glmv runs a model on one device; several GPUs are not split yet)")
    if device_kind(plan.device) == "cuda":
        lines.append("  - --device cpu, where weights larger than RAM are memory-mapped from disk (slow)")
    return "\n".join(lines)


def device_kind(device: str) -> str:
    """"cuda" or "cpu" for a device name (the device need not exist here: one may plan for another machine)."""
    match = re.fullmatch(r"(cuda|cpu)(:\d+)?", str(device))
    if not match:
        raise ConfigError(f"cannot plan for device {str(device)!r}: use cuda, cuda:N or cpu")
    return match.group(1)


def total_ram() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def free_memory(device: str) -> int:
    """The memory `--memory auto` plans for: free GPU memory on CUDA, available physical RAM on CPU."""
    if device_kind(device) == "cpu":
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    import torch

    from glmv.device import resolve_device

    return torch.cuda.mem_get_info(resolve_device(device))[0]


def gb(n: int) -> str:
    return f"{n / GB:.2f} GB"
