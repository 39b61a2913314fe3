"""LoRA / DoRA adapters for glmv models, equal to peft's and stored in peft's layout.

    from glmv.lora import LoraConfig, apply_lora, save_adapter, load_adapter, merge_lora
    model = glmv.load_model(PATH)
    apply_lora(model, LoraConfig(r=16, lora_alpha=32, targets=["attention", "mlp", "experts"]))
    ... train the parameters of adapter_parameters(model) ...
    save_adapter(model, "adapter/")          # adapter_config.json + adapter_model.safetensors (peft reads it)
    load_adapter(glmv.load_model(PATH), "adapter/")  # or LLM(PATH, lora="adapter/")
    merge_lora(model); glmv.save_model(model, "merged/")   # or: glmv convert PATH merged/ --merge-lora adapter/
    LLM(PATH, lora={"a": "adapter/", "b": "other/"}).chat(messages, lora="a")   # several served, chosen per request

config.py     LoraConfig / AdapterSpec            targets.py   presets, globs, regexes -> weights
linear.py     LoraLinear (LoRA + DoRA)            experts.py   LoraExperts (per-expert low-rank terms)
adapt.py      apply / inject / remove, freezing   merge.py     merge_lora, merge_checkpoint (glmv convert)
peft_format.py  adapter_config.json + adapter_model.safetensors, peft's names and layouts
serving.py    several adapters served at once      mapping.py   which adapter each row of a forward uses
multi_linear.py / multi_experts.py  the serving layers: every adapter stacked, applied per row
"""

from glmv.lora.adapt import adapter_parameters, adapted_modules, apply_lora, remove_lora
from glmv.lora.config import AdapterSpec, LoraConfig
from glmv.lora.merge import merge_checkpoint, merge_lora
from glmv.lora.peft_format import load_adapter, read_adapter, save_adapter, to_peft
from glmv.lora.serving import ServedAdapters, serve_adapters
from glmv.lora.targets import PRESETS, resolve_targets

__all__ = [
    "AdapterSpec", "LoraConfig", "PRESETS", "ServedAdapters", "adapted_modules", "adapter_parameters", "apply_lora",
    "load_adapter", "merge_checkpoint", "merge_lora", "read_adapter", "remove_lora", "resolve_targets", "save_adapter",
    "serve_adapters", "to_peft",
]
