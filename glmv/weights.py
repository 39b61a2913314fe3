"""Load and save GLM-V checkpoints in the Hugging Face layout (config.json + sharded safetensors + index).

Checkpoint names map onto glmv's modules by prefix (`model.visual.` -> `visual.`, `model.language_model.` ->
`language_model.`); per-expert tensors `...mlp.experts.{e}.{gate,up,down}_proj.weight` fill slices of the stacked
expert tensors. The model is built on the meta device and materialised empty, then every tensor is read from
disk straight into its final place, so loading never holds a second copy of the weights.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from glmv.checkpoint_files import allocate, no_init, raise_problems, shard_files
from glmv.config import GlmvConfig, TextConfig
from glmv.errors import CheckpointError, ConfigError
from glmv.model.glm4v import GlmvForConditionalGeneration
from glmv.model.moe import Experts, Router
from glmv.quant.modules import QuantWeight, quantize_modules
from glmv.quant.on_load import QuantizeOnLoad, schemes_for
from glmv.quant.scheme import CheckpointQuantization, WeightQuant, parse_quantization
from glmv.safetensors_file import TensorEntry, map_file, mapped_tensor, read_header, read_into

PREFIXES = [("model.visual.", "visual."), ("model.language_model.", "language_model."), ("lm_head.", "lm_head.")]
LEGACY_PREFIXES = [("visual.", "visual."), ("model.", "language_model.")]  # transformers < 4.52 naming
QUANT_EXPERT = re.compile(r"(.*\.experts)\.(gate_proj|up_proj|down_proj)\.(\w+)$")
QUANT_DATA = (torch.int8, torch.int32, torch.float8_e4m3fn)  # stored bits that load only from identical bits


def engine_name(key: str) -> str | None:
    for old, new in PREFIXES + LEGACY_PREFIXES:
        if key.startswith(old):
            return new + key[len(old) :]
    return None


def checkpoint_name(name: str) -> str:
    for old, new in PREFIXES:
        if name.startswith(new):
            return old + name[len(new) :]
    return name


def checkpoint_tensors(model: GlmvForConditionalGeneration) -> dict[str, torch.Tensor | QuantizeOnLoad]:
    """The model's tensors under their checkpoint names, stacked experts split per expert (views, no copies);
    a weight to be quantised as it loads is a QuantizeOnLoad under the float weight's name."""
    out: dict[str, torch.Tensor | QuantizeOnLoad] = {}
    on_load = {name: m for name, m in model.named_modules() if isinstance(m, QuantWeight) and m.from_float}
    for name, module in on_load.items():
        if module.num_stacked:  # <experts>.<proj> holds <experts>.<e>.<proj>.weight for every expert e
            experts, proj = name.rsplit(".", 1)
            for e in range(module.num_stacked):
                out[f"{checkpoint_name(experts)}.{e}.{proj}.weight"] = QuantizeOnLoad(module, e, model.dtype)
        else:
            out[f"{checkpoint_name(name)}.weight"] = QuantizeOnLoad(module, None, model.dtype)
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    stored = {f"{n}.{b}" for n, m in on_load.items() for b in (m.wq.data_name, m.wq.scale_name)}
    tensors = {k: v for k, v in tensors.items() if k not in stored}
    inter = model.config.text.moe_intermediate_size
    for name, t in tensors.items():
        quantised_expert = QUANT_EXPERT.match(name)
        if quantised_expert:  # QuantExperts: one stack per projection, suffixes as the checkpoint names them
            base, proj, suffix = quantised_expert.groups()
            for e in range(t.shape[0]):
                out[f"{checkpoint_name(base)}.{e}.{proj}.{suffix}"] = t[e]
        elif name.endswith(".experts.gate_up_proj") or name.endswith(".experts.down_proj"):
            base = checkpoint_name(name.rsplit(".", 1)[0])
            for e in range(t.shape[0]):
                if name.endswith("gate_up_proj"):
                    out[f"{base}.{e}.gate_proj.weight"] = t[e, :inter]
                    out[f"{base}.{e}.up_proj.weight"] = t[e, inter:]
                else:
                    out[f"{base}.{e}.down_proj.weight"] = t[e]
        else:
            out[checkpoint_name(name)] = t
    return out


def _target(
    model: GlmvForConditionalGeneration, tensors: dict[str, torch.Tensor], key: str
) -> tuple[list[str], torch.Tensor] | None:
    """(checkpoint names this entry provides, the model tensor it fills) for a checkpoint key, or None."""
    name = engine_name(key)
    if name is None:
        return None
    canonical = checkpoint_name(name)
    if canonical in tensors:
        return [canonical], tensors[canonical]
    # Experts already stacked in the file ([E, 2I, H] / [E, H, I], as transformers holds them in memory).
    if name.endswith((".experts.gate_up_proj", ".experts.down_proj")):
        try:
            stacked = model.get_parameter(name)
        except AttributeError:
            return None
        base, kinds = canonical.rsplit(".", 1)[0], (("down",) if name.endswith("down_proj") else ("gate", "up"))
        return [f"{base}.{e}.{k}_proj.weight" for e in range(stacked.shape[0]) for k in kinds], stacked
    return None


MIN_BITS = 2  # the narrowest weight a checkpoint stores


def _check_fits(config: GlmvConfig, files: list[Path]) -> None:
    """ConfigError when config.json describes more weights than the checkpoint's files can hold: no stored weight
    is narrower than MIN_BITS (compressed-tensors packs int4, and int2, into int32 words), so that config belongs
    to another model, and building it would first try to allocate all of it (a 10**12 vocabulary, 10**9
    experts) before any tensor is compared. (Until stop 25 the bound was a byte a weight, which refused GLM-4.5V
    with int4 routed experts: ~107B weights in ~64 GB.)"""
    counts = config.weight_counts()
    total, nbytes = sum(counts.values()), sum(f.stat().st_size for f in files)
    if total * MIN_BITS > 8 * nbytes:
        part, n = max(counts.items(), key=lambda item: item[1])
        raise ConfigError(
            f"config.json describes a model of at least {total:,} weights, but the checkpoint's safetensors files "
            f"hold only {nbytes:,} bytes; the largest part ({part}) alone is {n:,} weights. Correct those fields "
            "of config.json: it does not belong to these weights"
        )


def _materialize(config: GlmvConfig, dtype: torch.dtype, device: torch.device,
                 quant: CheckpointQuantization | None = None, entries: dict[str, TensorEntry] | None = None,
                 offload_experts: Sequence[int] = (), quantize: str | dict[str, str] | None = None,
                 ) -> GlmvForConditionalGeneration:
    """The model with uninitialised storage on `device` (every tensor is overwritten by the loader); the modules
    a quantised checkpoint stores quantised keep their weights so (swapped in after the dtype cast, which would
    upcast them) or are to be quantised as they load (`quantize`), and the routed experts of the
    `offload_experts` layers are placed in host RAM, where they compute (never allocated on `device`)."""
    with torch.device("meta"), no_init():
        model = GlmvForConditionalGeneration(config).to(dtype)
        if quant is not None:
            quantize_modules(model, _quantised_modules(model, quant, entries or {}))
        if quantize:
            if quant is not None:
                raise CheckpointError("this checkpoint is already quantised: load it without `quantize`")
            quantize_modules(model, schemes_for(model, quantize, dtype), from_float=True)
    host = tuple(_offloaded_experts(model, offload_experts))
    allocated: dict[int, torch.Tensor] = {}  # by id of the meta tensor: tied weights stay one tensor
    for name, module in model.named_modules():
        on_host = name in host or name.startswith(tuple(h + "." for h in host))
        allocate(module, torch.device("cpu") if on_host else device, allocated)
    for module in model.modules():
        if isinstance(module, Router):  # the selection bias stays fp32 whatever the model dtype
            module.e_score_correction_bias = torch.empty(module.weight.shape[0], dtype=torch.float32, device=device)
    return model


def _offloaded_experts(model: GlmvForConditionalGeneration, layers: Sequence[int]) -> list[str]:
    """Module names of the routed experts of decoder `layers`; ConfigError for a layer without routed experts."""
    decoder = model.language_model.layers
    for i in layers:
        if not 0 <= i < len(decoder) or not isinstance(getattr(decoder[i].mlp, "experts", None), Experts):
            moe = [j for j, layer in enumerate(decoder) if isinstance(getattr(layer.mlp, "experts", None), Experts)]
            raise ConfigError(f"offload_experts: decoder layer {i} has no routed experts; the MoE layers of this "
                              f"model are {moe[0]}..{moe[-1]}" if moe else "this model has no routed experts")
    return [f"language_model.layers.{i}.mlp.experts" for i in layers]


def _quantised_modules(model: GlmvForConditionalGeneration, quant: CheckpointQuantization,
                       entries: dict[str, TensorEntry]) -> dict[str, tuple[WeightQuant, torch.dtype]]:
    """Model modules (by glmv name) that the checkpoint stores quantised, with their scheme and scale dtype.
    The files decide (a module is quantised when its scale or packed weight is there), the config names the
    scheme: an `ignore` list written with another runtime's module names (vLLM's, for the ViT of GLM-4.5V-FP8)
    must not turn a bf16 weight into a quantised one."""
    found = {}
    for name, module in model.named_modules():
        if isinstance(module, Experts):
            probe = f"{checkpoint_name(name)}.0.gate_proj"  # every expert is stored alike (checked by the match)
        elif isinstance(module, torch.nn.Linear):
            probe = checkpoint_name(name)
        else:
            continue
        stored = [f"{probe}.{s}" for s in ("weight_scale", "weight_scale_inv", "weight_packed") if f"{probe}.{s}" in entries]
        if not stored:
            continue
        wq = quant.scheme_for(probe)
        if wq is None:
            raise CheckpointError(f"{stored[0]}: the checkpoint stores {probe} quantised, but config.json's "
                                  "quantization_config does not target it (or ignores it): correct its targets / ignore")
        scale = entries.get(f"{probe}.{wq.scale_name}")
        if scale is None:
            raise CheckpointError(f"{probe}: quantization_config expects {wq.scale_name}, the checkpoint has "
                                  f"{', '.join(s.rsplit('.', 1)[1] for s in stored)}")
        found[name] = (wq, scale.dtype)
    return found


def _is_mtp_layer(config: TextConfig, key: str) -> bool:
    """Whether checkpoint tensor `key` belongs to a multi-token-prediction layer the config declares: GLM-4.5
    stores num_nextn_predict_layers of them right after the num_hidden_layers decoder layers, and the reference
    skips them. Any other layer past the decoder is unexpected (a config with too few layers, not an MTP layer)."""
    layer = re.match(r"language_model\.layers\.(\d+)\.", engine_name(key) or "")
    first = config.num_hidden_layers
    return layer is not None and first <= int(layer.group(1)) < first + config.num_nextn_predict_layers


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _match(
    config: GlmvConfig, model: GlmvForConditionalGeneration, shards: list[tuple[Path, list[TensorEntry]]]
) -> tuple[list[tuple[Path, TensorEntry, torch.Tensor]], list[tuple[Path, TensorEntry]], dict[str, list[str]]]:
    """(what to read into which tensor, packed-weight shapes to check, problems by kind) from the shard headers
    alone, before reading a byte."""
    tensors = checkpoint_tensors(model)
    plan: list[tuple[Path, TensorEntry, torch.Tensor]] = []
    checks: list[tuple[Path, TensorEntry]] = []
    found: set[str] = set()
    problems: dict[str, list[str]] = {"missing": [], "unexpected": [], "shape mismatch": [], "dtype mismatch": []}
    for file, entries in shards:
        for entry in entries:
            if _is_mtp_layer(config.text, entry.name):
                continue
            suffix = entry.name.rsplit(".", 1)[-1]
            if suffix == "input_scale" and entry.name.rsplit(".", 1)[0] + ".weight_scale" in tensors:
                continue  # FP8 activation scales: glmv runs activations unquantised (weight-only)
            if suffix == "weight_shape" and entry.name.rsplit(".", 1)[0] + ".weight_packed" in tensors:
                checks.append((file, entry))  # the packed weight's true shape: compared once read
                continue
            target = _target(model, tensors, entry.name)
            if target is None:
                problems["unexpected"].append(entry.name)
                continue
            names, tensor = target
            found.update(names)  # a mis-shaped or mis-typed tensor is reported as such, not also as missing
            if tuple(tensor.shape) != entry.shape and not tensor.numel() == 1 == math.prod(entry.shape):
                shapes = f"checkpoint {list(entry.shape)}, model {list(tensor.shape)}"
                problems["shape mismatch"].append(f"{entry.name}: {shapes}")
            elif (tensor.dtype.is_floating_point and not entry.dtype.is_floating_point) or (
                (tensor.dtype in QUANT_DATA or entry.dtype in QUANT_DATA) and tensor.dtype != entry.dtype
            ):
                # Integer or bool data cast to float would load silently as meaningless weights, and so would an
                # fp8 weight without its scale, or quantised bits converted to another integer type.
                problems["dtype mismatch"].append(
                    f"{entry.name}: checkpoint {_dtype_name(entry.dtype)}, model {_dtype_name(tensor.dtype)}"
                )
            else:
                plan.append((file, entry, tensor))
    problems["missing"] = [k for k in tensors if k not in found]
    if config.tie_word_embeddings:
        problems["missing"] = [k for k in problems["missing"] if k != "lm_head.weight"]
    return plan, checks, problems


def _mappable(entry: TensorEntry, tensor: torch.Tensor | QuantizeOnLoad) -> bool:
    """Whether a model tensor can become the file's bytes as they are: a whole tensor (not a slice of stacked
    experts) of the stored dtype and shape."""
    return (isinstance(tensor, torch.Tensor) and tensor._base is None and tensor.dtype == entry.dtype
            and tuple(tensor.shape) == entry.shape)


def _check_packed_shapes(model: GlmvForConditionalGeneration, checks: list[tuple[Path, TensorEntry]]) -> None:
    """CheckpointError unless each packed weight's stored `weight_shape` is the [out, in] the model expects
    (packing rounds the column count up to whole int32 words, so the packed tensor's shape cannot say)."""
    shapes = {}
    for name, module in model.named_modules():
        if isinstance(module, QuantWeight):
            if module.num_stacked:  # a stack: expert e is stored as <experts>.e.<proj>
                experts, proj = name.rsplit(".", 1)
                shapes.update({f"{checkpoint_name(experts)}.{e}.{proj}": module for e in range(module.num_stacked)})
            else:
                shapes[checkpoint_name(name)] = module
    for file, entry in checks:
        module = shapes[entry.name.rsplit(".", 1)[0]]
        stored = torch.empty(entry.shape, dtype=entry.dtype)
        with open(file, "rb") as f:
            read_into(f, entry, stored)
        if stored.tolist() != [module.out_features, module.in_features]:
            raise CheckpointError(f"{entry.name} is {stored.tolist()}, the model expects "
                                  f"{[module.out_features, module.in_features]}: the checkpoint does not match config.json")


def load_model(
    path: str | Path, dtype: torch.dtype | str | None = None, device: str | torch.device = "cpu", progress: bool = True,
    offload_experts: Sequence[int] = (), quantize: str | dict[str, str] | None = None, mmap: bool = False,
) -> GlmvForConditionalGeneration:
    """Load a GLM-V checkpoint directory into a glmv model in eval mode.

    dtype: torch dtype or its name ("bfloat16"); None keeps the checkpoint's dtype (config.json "dtype").
    offload_experts: decoder layers whose routed experts stay in host RAM and compute there (the memory
    planner picks them when the experts do not fit the device). Quantised checkpoints (compressed-tensors, block
    FP8) keep their weights quantised: do not `.to(dtype)` the loaded model, pass `dtype` here.
    quantize: hold a float checkpoint's decoder linears quantised, quantising each weight as it is read: "fp8",
    "int8" or "int4" for all of them, or a format per component ({"routed_experts": "int4", "attention": "int8"},
    the memory planner's `formats`). Needs the compressed-tensors library (glmv[quant]).
    mmap: on CPU, tensors stored in the model's dtype are memory-mapped from the files instead of read (pages
    load on first use and the kernel may drop them again: weights larger than RAM still run, slowly); stacked
    routed experts, converted dtypes and quantise-on-load weights are still read into memory.
    Raises ConfigError for a bad config.json (including one that describes more weights than the files hold) and
    CheckpointError for missing/corrupt/mismatched weights (all missing, unexpected, mis-shaped and mis-typed
    tensors are listed together).
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a directory; pass a checkpoint directory with config.json and *.safetensors")
    config = GlmvConfig.from_pretrained(path)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
        if not isinstance(dtype, torch.dtype):
            raise CheckpointError("dtype must be a torch dtype name such as 'float32' or 'bfloat16'")
    dtype = dtype or getattr(torch, config.dtype)
    device = torch.device(device)
    files = shard_files(path)
    shards = [(f, read_header(f)) for f in files]  # validates every file before any work
    _check_fits(config, files)

    quant = parse_quantization(config.raw)
    entries = {e.name: e for _, es in shards for e in es}
    model = _materialize(config, dtype, device, quant, entries, offload_experts, quantize)
    plan, checks, problems = _match(config, model, shards)
    raise_problems(path, problems)
    _check_packed_shapes(model, checks)

    total = sum(e.nbytes for _, e, _ in plan)
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="Loading weights", disable=None if progress else True)
    with torch.no_grad(), bar:
        for file in dict.fromkeys(f for f, _, _ in plan):
            mapped = map_file(file) if mmap and device.type == "cpu" else None
            with open(file, "rb") as f:
                for _, entry, tensor in (p for p in plan if p[0] == file):
                    if mapped is not None and _mappable(entry, tensor):
                        tensor.data = mapped_tensor(mapped, entry)  # the empty storage is freed untouched
                    elif isinstance(tensor, QuantizeOnLoad):
                        weight = torch.empty(entry.shape, dtype=entry.dtype)
                        read_into(f, entry, weight)
                        tensor.copy_(weight)
                    else:
                        read_into(f, entry, tensor)
                    bar.update(entry.nbytes)
    return model.eval()


def save_model(
    model: GlmvForConditionalGeneration, path: str | Path, max_shard_bytes: int = 5 * 1024**3, progress: bool = True
) -> None:
    """Write `model` as a Hugging Face checkpoint (config.json, model-0000i-of-0000n.safetensors, index) that
    glmv and transformers both load. Experts are written per expert, as the released checkpoints store them."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = checkpoint_tensors(model)
    if model.config.tie_word_embeddings:
        tensors.pop("lm_head.weight", None)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = t.detach().contiguous().cpu()
        size += nbytes
    n = len(shards)
    weight_map = {}
    for i, shard in enumerate(tqdm(shards, desc="Saving shards", disable=None if progress else True)):
        name = "model.safetensors" if n == 1 else f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        save_file(shard, str(path / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
    if n > 1:
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    config = dict(model.config.to_dict())
    config["dtype"] = str(model.dtype).replace("torch.", "")
    (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
