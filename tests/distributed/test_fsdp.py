"""FSDP2 over 2 gloo processes, each on half of the global batch, follows the 1-process trainer's loss trajectory
(with activation checkpointing inside the FSDP units on the distributed side, none on the 1-process side);
a run resumed from a DCP checkpoint continues it exactly; the sharded weights export to one Hugging Face checkpoint
that glmv.load_model reads back (glmv/distributed/testing.py has the worker)."""

from __future__ import annotations

import pytest
import torch

import glmv
from glmv.distributed.fsdp import export_dcp
from glmv.distributed.launch import spawn
from glmv.distributed.testing import check_fsdp_training, reference_trajectory

STEPS, RESUME_AT = 5, 3


@pytest.mark.parametrize("model_type", ["glm4v_moe", "glm4v"])
def test_fsdp_matches_one_process_resumes_and_exports(tiny_checkpoint, tmp_path, model_type):
    checkpoint = tiny_checkpoint(model_type)
    ref_losses, ref_state = reference_trajectory(str(checkpoint), STEPS, str(tmp_path / "ref"))
    assert len(set(ref_losses)) == STEPS  # the weights move: a trajectory, not one loss repeated
    spawn(check_fsdp_training, 2, str(checkpoint), str(tmp_path), STEPS, RESUME_AT)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]

    for r in ranks:
        # the same trajectory as one process on the whole batch
        assert max(abs(a - b) for a, b in zip(r["losses"], ref_losses)) <= 1e-5, (r["losses"], ref_losses)
        # resumed from the DCP checkpoint of step 3: steps 4 and 5 exactly as uninterrupted, same final weights
        assert r["resumed_step"] == RESUME_AT
        assert r["resumed_losses"] == r["losses"][RESUME_AT:]
        assert r["resumed_vs_uninterrupted"] == 0.0
        # each rank holds half of every decoder weight (dim 0)
        assert r["local_shapes"]["language_model.layers.0.self_attn.q_proj.weight"] == (32, 64)
        assert r["local_shapes"]["lm_head.weight"] == (128, 64)
    assert ranks[0]["losses"] == ranks[1]["losses"]

    # the HF export holds exactly the trained (FSDP) weights, and computes what the 1-process model computes
    final = torch.load(tmp_path / "final_state.pt")
    exported = glmv.load_model(tmp_path / "hf", progress=False)
    state = exported.state_dict()
    assert set(state) == set(final) == set(ref_state)
    assert all(torch.equal(state[k], final[k]) for k in final)
    ref_model = glmv.load_model(checkpoint, progress=False)
    ref_model.load_state_dict(ref_state)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12]])
    with torch.no_grad():
        assert (exported(ids).logits - ref_model(ids).logits).abs().max() <= 1e-4

    # offline: the DCP checkpoint of step 3 -> one HF checkpoint, in this (non-distributed) process
    offline = glmv.load_model(export_dcp(tmp_path / "dcp", checkpoint, tmp_path / "hf-offline"), progress=False)
    online = glmv.load_model(tmp_path / f"hf-step{RESUME_AT}", progress=False).state_dict()
    assert all(torch.equal(v, online[k]) for k, v in offline.state_dict().items())


def test_recipe_trainer_over_fsdp_matches_one_process_and_resumes(tmp_path):
    """glmv.distributed.trainer.FSDPTrainer (what `torchrun ... glmv train` runs with the wiring diff): the SFT
    recipe loop with world-style data (images of two sizes, text-only rows, thinking and plain formats, right
    padding), 2 micro-batches per step, rows split over 2 ranks; stopped after step 2 and resumed from its DCP
    checkpoint."""
    import json

    from glmv.distributed.testing import check_fsdp_trainer, reference_trainer_losses
    from glmv.testing.tiny_checkpoint import make_tiny_model_dir

    base = make_tiny_model_dir(tmp_path / "base", "glm4v_moe")
    ref = reference_trainer_losses(str(base), str(tmp_path / "ref"))
    spawn(check_fsdp_trainer, 2, str(base), str(tmp_path / "fsdp"))
    imageless = 0
    for r in range(2):
        got = torch.load(tmp_path / "fsdp" / f"rank{r}.pt")
        imageless += got["imageless_micro_batches"]
        assert len(got["first"]) == 2 and len(got["resumed"]) == 1
        assert max(abs(a - b) for a, b in zip(got["first"] + got["resumed"], ref)) <= 1e-5, (got, ref)
    assert imageless > 0  # the case where per-rank media differ (and the vision tower must not desync the ranks)
    log = [json.loads(line) for line in (tmp_path / "fsdp" / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [1, 2, 3] and all("img_cos" in e for e in log)
    assert sorted(p.name for p in (tmp_path / "fsdp").glob("dcp-*")) == ["dcp-000003"]  # keep_checkpoints 1
    final = glmv.load_model(tmp_path / "fsdp" / "final", progress=False)
    ref_final = glmv.load_model(tmp_path / "ref" / "final", progress=False)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12]])
    with torch.no_grad():
        assert (final(ids).logits - ref_final(ids).logits).abs().max() <= 1e-4
