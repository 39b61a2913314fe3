"""Fixtures for the LoRA tests: tiny reference models with their checkpoints, and peft models built to match."""

from __future__ import annotations

import copy

import pytest
import torch

from glmv.testing.prompts import image_tokens, mm_token_types, random_pixels, random_text
from glmv.testing.tiny_checkpoint import reference_config, reference_model


@pytest.fixture(autouse=True)
def seeded():
    """Adapter A matrices come from torch's global generator: seeded per test, the measured differences do not
    depend on which tests ran before."""
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """model_type -> (a fresh copy of the transformers model, its checkpoint directory): one checkpoint per type."""
    cache = {}

    def make(model_type: str):
        if model_type not in cache:
            ref = reference_model(reference_config(model_type))
            path = tmp_path_factory.mktemp(model_type)
            ref.save_pretrained(path)
            cache[model_type] = (ref, path)
        ref, path = cache[model_type]
        return copy.deepcopy(ref), path

    return make


@pytest.fixture
def batch():
    """One prompt with an image (so ViT and projector adapters take part): ids, pixels, grid, token types."""
    grid = [(1, 4, 6)]
    ids = torch.tensor([random_text(5, 1) + image_tokens(4, 6) + random_text(9, 2)])
    return {"ids": ids, "pixel_values": random_pixels(grid), "image_grid_thw": torch.tensor(grid),
            "mm_token_type_ids": mm_token_types(ids)}


def glmv_logits(model, b):
    return model(b["ids"], pixel_values=b["pixel_values"], image_grid_thw=b["image_grid_thw"]).logits


def peft_logits(model, b):
    return model(input_ids=b["ids"], pixel_values=b["pixel_values"], image_grid_thw=b["image_grid_thw"],
                 mm_token_type_ids=b["mm_token_type_ids"]).logits


@pytest.fixture
def logits():
    """(glmv logits, transformers/peft logits) functions of a model and the batch."""
    return glmv_logits, peft_logits


def randomize(model, seed: int = 0) -> None:
    """Non-zero B (a fresh adapter is the identity: nothing would be tested) and DoRA magnitudes off the row norms."""
    from glmv.lora import adapter_parameters

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in adapter_parameters(model).items():
            if "lora_B" in name:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            elif "magnitude" in name:
                p.mul_(1 + 0.1 * torch.randn(p.shape, generator=g))


@pytest.fixture(scope="session")  # a plain function: module-scoped fixtures use it too
def random_adapter():
    return randomize


@pytest.fixture
def without_peft_moe_retargeting(monkeypatch):
    """peft 0.21.2 on transformers 5 rewrites, for glm4v_moe, every target_modules entry ending in gate/up/down_proj
    into the routed experts' target_parameters (huggingface/peft#3711), so a dense or shared-expert MLP adapter
    cannot be built or loaded there. Tests comparing such adapters switch that rewrite off: peft's own LoRA layers
    and tensor names, minus the bug."""
    import peft.utils.transformers_weight_conversion as conversion

    monkeypatch.setattr(conversion, "convert_peft_config_for_transformers", lambda *args, **kwargs: None)


@pytest.fixture
def peft_like():
    """(transformers model, adapted glmv model) -> a trainable peft model with the same targets, hyper-parameters
    and adapter tensors (copied through glmv's peft-layout mapping)."""

    def make(ref, ours):
        from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

        from glmv.lora.peft_format import adapter_config, to_peft

        fields = {k: v for k, v in adapter_config(ours).items() if k in LoraConfig.__dataclass_fields__}
        fields.update(inference_mode=False, init_lora_weights=True)
        model = get_peft_model(ref, LoraConfig(**fields))
        tensors = {k: v.detach().clone() for k, v in to_peft(ours).items()}
        result = set_peft_model_state_dict(model, tensors)
        assert not result.unexpected_keys, result.unexpected_keys
        assert set(peft_tensors(model)) == set(tensors)  # every peft adapter tensor was given a value
        return model

    return make


def peft_tensors(model, grads: bool = False) -> dict[str, torch.Tensor]:
    """A peft model's adapter parameters (or their gradients) under the keys peft saves them with."""
    out = {}
    for name, p in model.named_parameters():
        if "lora_" in name:
            key = name.replace(".default", "").replace("lora_magnitude_vector.weight", "lora_magnitude_vector")
            out[key] = p.grad if grads else p
    return out


@pytest.fixture
def peft_named():
    return peft_tensors
