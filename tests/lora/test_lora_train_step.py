"""One LoRA / DoRA training step in glmv equals the same step in peft + transformers: the loss and every adapter
gradient, fp32, the same adapter tensors in both (copied from glmv through the peft-layout mapping)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import glmv
from glmv.lora import LoraConfig, adapter_parameters, apply_lora, to_peft

pytest.importorskip("peft")

TOL = 1e-5
MAX_DIFF: dict[str, float] = {}  # worst gradient difference per case (printed with -s)

CASES = {
    # model type, targets, DoRA, rsLoRA
    "moe-lora-attention-mlp-experts": ("glm4v_moe", ["attention", "mlp", "experts"], False, False),
    "moe-lora-vit-projector": ("glm4v_moe", ["vit", "projector"], False, True),
    "moe-dora-attention-mlp": ("glm4v_moe", ["attention", "mlp"], True, False),
    "dense-lora-attention-mlp-vit-projector": ("glm4v", ["attention", "mlp", "vit", "projector"], False, False),
    "dense-dora-attention-mlp-vit": ("glm4v", ["attention", "mlp", "vit"], True, True),
}


def loss_of(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits[0, :-1], ids[0, 1:])


@pytest.mark.parametrize("case", CASES)
def test_training_step_equals_peft(case, tiny, batch, logits, random_adapter, peft_like, peft_named,
                                   without_peft_moe_retargeting):
    model_type, targets, dora, rslora = CASES[case]
    ref, path = tiny(model_type)
    ours = glmv.load_model(path, progress=False).train()
    apply_lora(ours, LoraConfig(r=4, lora_alpha=8, targets=targets, use_dora=dora, use_rslora=rslora))
    random_adapter(ours)
    theirs = peft_like(ref, ours).train()
    glmv_logits, peft_logits = logits

    loss = loss_of(glmv_logits(ours, batch), batch["ids"])
    loss.backward()
    ref_loss = loss_of(peft_logits(theirs, batch), batch["ids"])
    ref_loss.backward()

    assert abs(loss.item() - ref_loss.item()) <= TOL
    ours_grads = to_peft(ours, {n: p.grad for n, p in adapter_parameters(ours).items()})
    their_grads = peft_named(theirs, grads=True)
    assert ours_grads.keys() == their_grads.keys()
    worst = 0.0
    for key, g in ours_grads.items():
        assert g is not None and their_grads[key] is not None, key
        worst = max(worst, (g - their_grads[key]).abs().max().item())
        assert g.abs().max() > 0, f"{key}: zero gradient, the comparison would prove nothing"
    MAX_DIFF[case] = worst
    print(f"{case}: loss diff {abs(loss.item() - ref_loss.item()):.2e}, max grad diff {worst:.2e}")
    assert worst <= TOL
    # only adapter tensors received gradients: the base model is frozen
    assert all(p.grad is None for n, p in ours.named_parameters() if "lora_" not in n)


def test_dropout_changes_training_forwards_only(tiny, batch, logits):
    _, path = tiny("glm4v")
    model = glmv.load_model(path, progress=False)
    apply_lora(model, LoraConfig(r=4, targets=["attention"], lora_dropout=0.5))
    for name, p in adapter_parameters(model).items():
        if "lora_B" in name:
            torch.nn.init.normal_(p, 0, 0.2)
    glmv_logits, _ = logits
    with torch.no_grad():
        a, b = glmv_logits(model.eval(), batch), glmv_logits(model.eval(), batch)
        c = glmv_logits(model.train(), batch)
    assert torch.equal(a, b) and not torch.allclose(a, c)
