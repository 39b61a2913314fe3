"""Gradient checkpointing applied from outside the model (glmv/train/recompute.py): the same loss and gradients as
the plain model (LoRA dropout included: the recomputation replays the RNG), names unchanged, inference untouched."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image

import glmv
from glmv.inputs.processor import Processor
from glmv.lora import LoraConfig, apply_lora
from glmv.testing.tiny_checkpoint import make_tiny_model_dir
from glmv.train import recompute
from glmv.train.data import collate, encode_example
from glmv.train.trainer import token_loss


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("base"), "glm4v_moe")


def batch(path):
    processor = Processor.from_pretrained(path)
    rng = np.random.default_rng(0)
    examples = []
    for i in range(3):
        image = Image.fromarray(rng.integers(0, 255, (56, 56, 3), dtype=np.uint8))
        messages = [{"role": "user", "content": [{"type": "image", "image": image},
                                                 {"type": "text", "text": "Colour?"}]}]
        examples.append(encode_example(processor, messages, f"It is colour {i}.", bool(i % 2)))
    return collate(examples, processor.tokenizer.pad_token_id)


def loss_and_grads(model, data, seed=3, saved=None):
    torch.manual_seed(seed)  # the LoRA dropout masks
    model.zero_grad(set_to_none=True)
    kept = []  # bytes of the activations autograd keeps for the backward pass

    def pack(t):
        kept.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss, _ = token_loss(model, data)
    if saved is not None:
        saved.append(sum(kept))
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("lora", [False, True])
def test_checkpointed_layers_give_the_plain_losses_and_gradients(base, lora):
    model = glmv.load_model(base, progress=False).train()
    if lora:
        torch.manual_seed(0)
        apply_lora(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.2, targets=["attention", "mlp"]))
        with torch.no_grad():  # B random, so that the adapters change the outputs and get every gradient
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.1)
    data = batch(base)
    names = [n for n, _ in model.named_parameters()]
    saved = []
    plain_loss, plain_grads = loss_and_grads(model, data, saved=saved)
    assert recompute.enable(model) == len(model.language_model.layers) and recompute.enabled(model)
    assert [n for n, _ in model.named_parameters()] == names  # nothing renamed
    loss, grads = loss_and_grads(model, data, saved=saved)
    assert saved[1] < 0.5 * saved[0]  # the layers' activations are no longer kept
    assert torch.equal(loss, plain_loss)
    assert grads.keys() == plain_grads.keys() and len(grads) > 0
    assert max(float((grads[n] - plain_grads[n]).abs().max()) for n in grads) == 0.0
    recompute.disable(model)
    assert not recompute.enabled(model)
    assert torch.equal(loss_and_grads(model, data)[0], plain_loss)


def test_inference_and_copies_run_the_plain_layers(base):
    model = glmv.load_model(base, progress=False)
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        want = model(ids).logits
    recompute.enable(model)
    recompute.enable(model)  # idempotent
    with torch.no_grad():
        assert torch.equal(model.eval()(ids).logits, want)
    twin = copy.deepcopy(model)  # the wrapper is bound to its layer, so a copy runs its own layers
    with torch.no_grad():
        for p in twin.parameters():
            p.mul_(0.5)
        assert not torch.equal(twin(ids).logits, want)
        assert torch.equal(model(ids).logits, want)
