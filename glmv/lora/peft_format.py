"""Adapters on disk in peft's layout: adapter_config.json + adapter_model.safetensors.

Keys are `base_model.model.<Hugging Face module name>.<tensor>`, as peft 0.21 writes them for a transformers
GLM-V model: `...self_attn.q_proj.lora_A.weight`, `.lora_B.weight`, `.lora_magnitude_vector` (DoRA). Routed
experts use peft's `target_parameters` layout for transformers' stacked `experts.gate_up_proj` / `.down_proj`:
one lora_A [E*r, in] (expert-major rows) and one lora_B [out, r*E] (rank-major columns, expert fastest) per
parameter; when both parameters of a layer are adapted peft nests its wrappers, gate_up_proj inside, so its
tensors are `experts.base_layer.lora_A.weight` and down_proj's `experts.lora_A.weight`.

adapter_config.json names targets exactly (full module / parameter names, never a regex): peft 0.21 turns a regex
`target_modules` on GLM-4.5V into bare leaf names (every layer's q_proj), and glmv's targets are exact lists.
Reading goes by the tensors themselves (what was trained is what the file holds), the config giving alpha, the
rsLoRA switch and dropout.

Known peft limitation (peft 0.21.2 + transformers 5.x, GLM-4.5V / glm4v_moe only, huggingface/peft#3711): peft
rewrites every target_modules entry ending in gate_proj / up_proj / down_proj into the routed experts'
target_parameters, so an adapter on the dense or shared-expert MLPs, the ViT MLPs or the projector's gate/up/down
is written correctly here but stock peft loads it onto the routed experts instead. glmv reads such files right.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors.torch import load_file, save_file

from glmv.errors import CheckpointError, ConfigError
from glmv.lora.adapt import adapted_modules, inject
from glmv.lora.config import AdapterSpec
from glmv.lora.experts import LoraExperts
from glmv.lora.targets import EXPERT_PARAMS
from glmv.model.moe import Experts
from glmv.weights import checkpoint_name, engine_name

log = logging.getLogger(__name__)

CONFIG_FILE, WEIGHTS_FILE = "adapter_config.json", "adapter_model.safetensors"
PREFIX = "base_model.model."
# peft LoraConfig fields that change what the adapter computes and that glmv does not implement: refused when set
UNSUPPORTED = ("modules_to_save", "layer_replication", "trainable_token_indices", "use_qalora", "use_bdlora",
               "velora_config", "kasa_config", "alora_invocation_tokens", "arrow_config", "monteclora_config",
               "lora_bias")
MLP_LEAVES = ("gate_proj", "up_proj", "down_proj")


# --- glmv tensors <-> peft tensors -----------------------------------------------------------------------------
def _expert_paths(module_name: str, module: LoraExperts) -> dict[str, str]:
    """Adapted expert parameter -> the peft module path its lora_A / lora_B live under (peft's nesting)."""
    hf = checkpoint_name(module_name)
    adapted = [p for p in EXPERT_PARAMS if p in module.specs]
    if len(adapted) == 1:
        return {adapted[0]: hf}
    return {"gate_up_proj": f"{hf}.base_layer", "down_proj": hf}


def to_peft(model: torch.nn.Module, tensors: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The adapter tensors (default: the parameters; or any same-shaped tensors under the glmv adapter names, such as
    gradients) under peft's keys and in peft's layout."""
    out = {}
    for name, module in adapted_modules(model).items():
        if isinstance(module, LoraExperts):
            for param, path in _expert_paths(name, module).items():
                a = _pick(tensors, f"{name}.lora_A.{param}", module.lora_A[param])
                b = _pick(tensors, f"{name}.lora_B.{param}", module.lora_B[param])
                e, r, inp = a.shape
                out[f"{PREFIX}{path}.lora_A.weight"] = a.reshape(e * r, inp)
                out[f"{PREFIX}{path}.lora_B.weight"] = b.permute(1, 2, 0).reshape(b.shape[1], r * e)
        else:
            hf = f"{PREFIX}{checkpoint_name(name)}"
            out[f"{hf}.lora_A.weight"] = _pick(tensors, f"{name}.lora_A.weight", module.lora_A.weight)
            out[f"{hf}.lora_B.weight"] = _pick(tensors, f"{name}.lora_B.weight", module.lora_B.weight)
            if module.lora_magnitude_vector is not None:
                out[f"{hf}.lora_magnitude_vector"] = _pick(tensors, f"{name}.lora_magnitude_vector",
                                                           module.lora_magnitude_vector)
    return out


def _pick(tensors: dict[str, torch.Tensor] | None, name: str, default: torch.Tensor) -> torch.Tensor:
    return default if tensors is None else tensors[name]


def from_peft_expert(a: torch.Tensor, b: torch.Tensor, experts: int) -> tuple[torch.Tensor, torch.Tensor]:
    """peft's lora_A [E*r, in] / lora_B [out, r*E] -> glmv's A [E, r, in] / B [E, out, r]."""
    r = a.shape[0] // experts
    return a.reshape(experts, r, a.shape[1]), b.reshape(b.shape[0], r, experts).permute(2, 0, 1)


# --- writing -------------------------------------------------------------------------------------------------
def adapter_config(model: torch.nn.Module, base_model_name_or_path: str | None = None) -> dict:
    """adapter_config.json for the model's adapters: peft's LoraConfig fields, targets as exact names, per-weight
    ranks / alphas that differ from the most common one as exact-name rank_pattern / alpha_pattern entries."""
    specs: dict[str, AdapterSpec] = {}  # Hugging Face name of each adapted module / expert parameter -> spec
    modules, params = [], []
    for name, module in adapted_modules(model).items():
        hf = checkpoint_name(name)
        if isinstance(module, LoraExperts):
            for p in EXPERT_PARAMS:
                if p in module.specs:
                    specs[f"{hf}.{p}"] = module.specs[p]
                    params.append(f"{hf}.{p}")
        else:
            specs[hf] = module.spec
            modules.append(hf)
    if not specs:
        raise ConfigError("the model carries no adapter: apply_lora(model, LoraConfig(...)) or load_adapter first")
    linear = [specs[n] for n in modules]  # DoRA and dropout exist on linear layers only (never on experts)
    for field, group in (("use_rslora", list(specs.values())), ("use_dora", linear), ("lora_dropout", linear)):
        values = {getattr(s, field) for s in group}
        if len(values) > 1:
            raise ConfigError(f"adapter_config.json holds one {field} for the whole adapter, but this model's "
                              f"adapters use {sorted(values)}: give every adapter the same {field}")
    r = _most_common([s.r for s in specs.values()])
    alpha = _most_common([s.lora_alpha for s in specs.values()])
    if _on_moe(model) and any(n.rsplit(".", 1)[-1] in MLP_LEAVES for n in modules):
        log.warning("this adapter targets gate/up/down_proj linear layers of a glm4v_moe model: peft 0.21 + "
                    "transformers 5 move such targets onto the routed experts when loading (huggingface/peft#3711); "
                    "glmv loads the adapter correctly, stock peft does not")
    return {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": base_model_name_or_path,
        "revision": None,
        "r": r,
        "lora_alpha": alpha,
        "lora_dropout": linear[0].lora_dropout if linear else 0.0,
        "target_modules": modules,
        "target_parameters": params or None,
        "exclude_modules": None,
        "fan_in_fan_out": False,
        "bias": "none",
        "use_rslora": next(iter(specs.values())).use_rslora,
        "use_dora": linear[0].use_dora if linear else False,
        "modules_to_save": None,
        "init_lora_weights": True,
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {re.escape(n): s.r for n, s in specs.items() if s.r != r},
        "alpha_pattern": {re.escape(n): s.lora_alpha for n, s in specs.items() if s.lora_alpha != alpha},
        "inference_mode": True,
        "lora_bias": False,
    }


def _most_common(values: list):
    return max(dict.fromkeys(values), key=values.count)


def _on_moe(model: torch.nn.Module) -> bool:
    return any(isinstance(m, Experts) for m in model.modules())


def save_adapter(model: torch.nn.Module, path: str | Path, base_model_name_or_path: str | None = None) -> Path:
    """Write the model's adapters to directory `path` in peft's layout (PeftModel.from_pretrained reads it on the
    transformers model of the same checkpoint). Returns `path`."""
    path = Path(path)
    config = adapter_config(model, None if base_model_name_or_path is None else str(base_model_name_or_path))
    path.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in to_peft(model).items()}
    save_file(tensors, str(path / WEIGHTS_FILE), metadata={"format": "pt"})
    (path / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return path


# --- reading -------------------------------------------------------------------------------------------------
def read_adapter_config(path: Path) -> dict:
    file = path / CONFIG_FILE
    if not file.is_file():
        raise CheckpointError(f"{path}: no {CONFIG_FILE}; an adapter directory holds {CONFIG_FILE} and "
                              f"{WEIGHTS_FILE} (what peft's save_pretrained and glmv's save_adapter write)")
    try:
        config = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{file}: not valid JSON ({e})") from None
    if not isinstance(config, dict) or config.get("peft_type", "LORA") != "LORA":
        got = config.get("peft_type") if isinstance(config, dict) else type(config).__name__
        raise CheckpointError(f"{file}: glmv reads LoRA / DoRA adapters (peft_type LORA), this one is {got!r}")
    for field in UNSUPPORTED:
        if config.get(field):
            raise CheckpointError(f"{file}: {field}={config[field]!r} is a peft feature glmv does not implement; "
                                  "train the adapter without it")
    if config.get("bias", "none") != "none":
        raise CheckpointError(f"{file}: bias={config['bias']!r} trains the base biases, which glmv adapters do not "
                              "hold; train with bias='none'")
    for field, kind in (("r", int), ("lora_alpha", (int, float))):
        if isinstance(config.get(field), bool) or not isinstance(config.get(field), kind) or config[field] <= 0:
            raise CheckpointError(f"{file}: {field} must be a positive number, got {config.get(field)!r}")
    dropout = config.get("lora_dropout") or 0.0
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise CheckpointError(f"{file}: lora_dropout must be a number in [0, 1), got {dropout!r}")
    for field in ("rank_pattern", "alpha_pattern"):
        for pattern in config.get(field) or {}:
            try:
                re.compile(pattern)
            except re.error as e:
                raise CheckpointError(f"{file}: {field} key {pattern!r} is not a regular expression ({e})") from None
    return config


def _pattern_value(patterns: dict, key: str, default):
    """peft's rank_pattern / alpha_pattern rule: the first pattern P with re.match(rf'(.*\\.)?({P})$', key)."""
    for pattern, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({pattern})$", key):
            return value
    return default


def _group(tensors: dict[str, torch.Tensor], file: Path) -> dict[str, dict[str, torch.Tensor]]:
    """peft module path (without the prefix) -> {"lora_A" | "lora_B" | "magnitude": tensor}."""
    groups: dict[str, dict[str, torch.Tensor]] = {}
    suffixes = {".lora_A.weight": "lora_A", ".lora_B.weight": "lora_B", ".lora_magnitude_vector": "magnitude",
                ".lora_magnitude_vector.weight": "magnitude"}
    for key, t in tensors.items():
        kind = next((suffixes[s] for s in suffixes if key.endswith(s)), None)
        if not key.startswith(PREFIX) or kind is None:
            raise CheckpointError(f"{file}: tensor {key!r} is not a LoRA / DoRA tensor of peft's layout "
                                  f"({PREFIX}<module>.lora_A.weight / .lora_B.weight / .lora_magnitude_vector)")
        module = key[len(PREFIX):].removesuffix(next(s for s in suffixes if key.endswith(s)))
        groups.setdefault(module, {})[kind] = t
    return groups


def _expert_targets(hf_experts: str, config: dict) -> list[str]:
    """The expert parameters of one layer that the config's target_parameters select (peft's match rule: the full
    key, or a dotted suffix of it), in peft's nesting order."""
    wanted = config.get("target_parameters") or []
    keys = [f"{hf_experts}.{p}" for p in EXPERT_PARAMS]
    return [k.rsplit(".", 1)[1] for k in keys if any(k == t or k.endswith("." + t) for t in wanted)]


def _resolve(model: torch.nn.Module, groups: dict, config: dict, file: Path) -> dict[str, tuple]:
    """glmv target name -> (its module, its tensors, the Hugging Face key that rank/alpha patterns match)."""
    modules = dict(model.named_modules())
    out: dict[str, tuple] = {}
    for path, tensors in groups.items():
        if {"lora_A", "lora_B"} - tensors.keys():
            raise CheckpointError(f"{file}: {path} has {sorted(tensors)} but needs both lora_A and lora_B")
        nested = path.endswith(".base_layer")
        hf = path.removesuffix(".base_layer")
        name = engine_name(hf)
        module = modules.get(name) if name else None
        if isinstance(module, Experts):
            targeted = _expert_targets(hf, config)
            if len(targeted) == 2:
                param = "gate_up_proj" if nested else "down_proj"
            elif len(targeted) == 1 and not nested:
                param = targeted[0]
            else:
                raise CheckpointError(f"{file}: {path} holds expert adapters, but target_parameters "
                                      f"{config.get('target_parameters')} does not say which of {hf}'s "
                                      "gate_up_proj / down_proj they belong to")
            out[f"{name}.{param}"] = (module, tensors, f"{hf}.{param}")
        elif isinstance(module, torch.nn.Linear) and not nested:
            out[name] = (module, tensors, hf)
        elif re.search(r"\.experts\.\d+\.", hf):
            raise CheckpointError(
                f"{file}: {path} is a per-expert adapter (transformers 4.x layout, one nn.Linear per expert); glmv "
                "reads routed-expert adapters in peft's target_parameters layout for stacked experts "
                "(`experts.lora_A.weight`, transformers 5): load it once with peft on transformers 5 and re-save it"
            )
        else:
            raise CheckpointError(f"{file}: {path} is not a linear layer or routed-expert weight of this model "
                                  f"(glmv name {name!r}); is the adapter for another checkpoint?")
    return out


def _checked(name: str, module: torch.nn.Module, t: dict, key: str, config: dict, file: Path):
    """(spec, A, B, magnitude) of one target in glmv's layout, every shape checked against the model."""
    r = _pattern_value(config.get("rank_pattern"), key, config["r"])
    alpha = _pattern_value(config.get("alpha_pattern"), key, config["lora_alpha"])
    rslora = bool(config.get("use_rslora"))
    if isinstance(module, Experts):
        weight = getattr(module, name.rsplit(".", 1)[1])
        e, out, inp = weight.shape
        if t["lora_A"].shape[0] != e * r or t["lora_B"].shape[1] != e * r:
            raise CheckpointError(f"{file}: {key} holds {list(t['lora_A'].shape)} / {list(t['lora_B'].shape)}, "
                                  f"not rank {r} (adapter_config.json) for {e} experts")
        a, b = from_peft_expert(t["lora_A"], t["lora_B"], e)
        spec, magnitude = AdapterSpec(r, alpha, 0.0, rslora, False), None  # peft has no dropout / DoRA here
        want = {"lora_A": (e, r, inp), "lora_B": (e, out, r)}
    else:
        a, b, magnitude = t["lora_A"], t["lora_B"], t.get("magnitude")
        if config.get("use_dora") and magnitude is None:
            raise CheckpointError(f"{file}: use_dora is set but {key} has no lora_magnitude_vector")
        spec = AdapterSpec(r, alpha, float(config.get("lora_dropout") or 0.0), rslora, magnitude is not None)
        out, inp = module.weight.shape
        want = {"lora_A": (r, inp), "lora_B": (out, r), "magnitude": (out,)}
    for kind, value in (("lora_A", a), ("lora_B", b), ("magnitude", magnitude)):
        if value is not None and tuple(value.shape) != want[kind]:
            raise CheckpointError(f"{file}: {key} {kind} is {list(value.shape)}, the model needs {list(want[kind])} "
                                  f"(r={r}): the adapter belongs to another checkpoint, or its r / rank_pattern is off")
    return spec, a, b, magnitude


class AdapterWeights(NamedTuple):
    """One adapted weight of an adapter file, in glmv's layout (experts: A [E, r, in], B [E, out, r])."""

    module: torch.nn.Module  # the nn.Linear, or the Experts holding the adapted projection
    spec: AdapterSpec
    lora_A: torch.Tensor
    lora_B: torch.Tensor
    magnitude: torch.Tensor | None  # DoRA's m, or None


def read_adapter(model: torch.nn.Module, path: str | Path) -> dict[str, AdapterWeights]:
    """The peft-layout LoRA / DoRA adapter at `path` (written by peft's save_pretrained or glmv's save_adapter) as
    glmv target name -> its weights, every shape checked against `model`, which is left unchanged: CheckpointError
    for a file that is not such an adapter or does not fit the model."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a directory; pass the adapter directory ({CONFIG_FILE} + {WEIGHTS_FILE})")
    config = read_adapter_config(path)
    file = path / WEIGHTS_FILE
    if not file.is_file():
        raise CheckpointError(f"{path}: no {WEIGHTS_FILE} (glmv reads adapters saved as safetensors)")
    try:
        tensors = load_file(str(file))
    except Exception as e:  # safetensors raises its own error types for truncated or corrupt files
        raise CheckpointError(f"{file}: not a readable safetensors file ({e})") from None
    targets = _resolve(model, _group(tensors, file), config, file)
    if not targets:
        raise CheckpointError(f"{file}: holds no adapter tensors")
    return {name: AdapterWeights(module, *_checked(name, module, t, key, config, file))
            for name, (module, t, key) in targets.items()}


def load_adapter(model: torch.nn.Module, path: str | Path, dtype: torch.dtype | None = None,
                 trainable: bool = False) -> list[str]:
    """Read a peft-layout LoRA / DoRA adapter (read_adapter) onto a loaded glmv model, unmerged; returns the
    adapted glmv names. `dtype`: the adapters' dtype (default: fp32 on a bf16/fp16 model, else the model's);
    `trainable`: leave the adapter tensors trainable (to go on training it). Everything is checked before the
    model changes. Several adapters served at once, chosen per request: glmv/lora/serving.py."""
    weights = read_adapter(model, path)
    inject(model, {name: w.spec for name, w in weights.items()}, dtype)
    with torch.no_grad():
        for name, (module, _, a, b, magnitude) in weights.items():
            if isinstance(module, LoraExperts):
                param = name.rsplit(".", 1)[1]
                module.lora_A[param].copy_(a)
                module.lora_B[param].copy_(b)
            else:
                module.lora_A.weight.copy_(a)
                module.lora_B.weight.copy_(b)
                if magnitude is not None:
                    module.lora_magnitude_vector.copy_(magnitude)
    if not trainable:  # inject left them trainable
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.requires_grad_(False)
    return list(weights)
