"""Data-parallel training with FSDP2: `fully_shard` per decoder layer, then the root (the vision tower is in the
root unit: `shard_model` says why), over a 1-D DeviceMesh; sharded checkpoints with torch.distributed.checkpoint
(DCP); export to one Hugging Face checkpoint.

A step is the single-process trainer's step (glmv.train.trainer: token cross-entropy over the answer tokens, AdamW
groups and warmup + cosine from glmv.train.optim, gradient clipping, router bias balancing) on a global batch whose
rows are split over the ranks. The loss is normalised by the *global* number of target tokens, so the gradient
FSDP2 averages over the ranks is the gradient of the global batch's mean loss, whatever each rank's share of the
targets; the routers' expert loads are summed over the ranks before their biases move. So n ranks follow the same
trajectory as one process on the whole batch (to float rounding: tests/distributed).

    run = FSDPTraining(model_dir, recipe, mesh)
    loss = run.step(local_batches)            # every rank, its rows of the same global step's micro-batches
    run.save(dcp_dir)                         # DCP: each rank writes its shards (+ scheduler / step on rank 0)
    run.load(dcp_dir)                         # resume (tested at the same world size; DCP can also reshard)
    run.export(hf_dir, side_files_from=model_dir)   # rank 0 writes one HF checkpoint (glmv.load_model reads it)
    export_dcp(dcp_dir, model_dir, hf_dir)    # the same from a DCP checkpoint, offline, in one process

glmv.distributed.trainer.FSDPTrainer runs the recipe loop of glmv.train.trainer.Trainer on top of this.
Not done here: mixed precision (an FSDP2 MixedPrecisionPolicy can be passed to `shard_model`; untested), tensor /
expert / context parallelism inside training (a 2-D mesh), chunked cross-entropy.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

from glmv.config import GlmvConfig
from glmv.model.glm4v import GlmvForConditionalGeneration
from glmv.model.moe import Router
from glmv.train.checkpoint import copy_side_files
from glmv.train.data import IGNORE
from glmv.train.optim import build_optimizer, trainable_parameters
from glmv.train.recipe import Recipe
from glmv.train.trainer import balance_routers, to_device
from glmv.train.trainer import token_loss as _token_loss
from glmv.weights import load_model, save_model

TRAINER_STATE = "trainer_state.pt"  # beside the DCP files: scheduler state and step (written by rank 0)


def shard_model(model: GlmvForConditionalGeneration, mesh: DeviceMesh, reshard_after_forward: bool = True,
                mp_policy: MixedPrecisionPolicy | None = None) -> GlmvForConditionalGeneration:
    """FSDP2 over `mesh`: one unit per decoder layer (all-gathered just before it runs, freed after), the rest in
    the root unit: embeddings, final norm, lm_head and the whole vision tower.

    The vision tower runs only on ranks whose rows hold images (and once more for videos), so it cannot have units
    of its own: a rank without media would skip their all-gathers and the ranks' collectives would pair up wrong.
    In the root unit it is gathered with the rest at every forward, and parameters that got no gradient on a rank
    reduce-scatter zeros (`set_reduce_scatter_unused_params`, FSDP2's find_unused_parameters)."""
    kw = dict(mesh=mesh, reshard_after_forward=reshard_after_forward)
    if mp_policy is not None:
        kw["mp_policy"] = mp_policy
    for layer in model.language_model.layers:
        fully_shard(layer, **kw)
    fully_shard(model, **kw)
    model.set_reduce_scatter_unused_params(True)
    return model


def target_tokens(batch: dict) -> int:
    """Tokens the loss covers: targets after the first position (as glmv.train.trainer.token_loss counts)."""
    return int((batch["labels"][:, 1:] != IGNORE).sum())


def token_loss(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
    """Trainer.loss's default: glmv.train.trainer.token_loss, no metrics."""
    return _token_loss(model, batch)[0], {}


class FSDPTraining:
    """One training run's state on every rank of `mesh` (a 1-D data-parallel mesh): the FSDP2-sharded model, its
    optimizer and schedule. Every rank constructs it with the same arguments. `trainable(model)` picks the
    trainable parameters by name (default: all but the recipe's `freeze` prefixes); `recompute` checkpoints every
    decoder layer's activations (glmv.train.recompute)."""

    def __init__(self, model_dir: str | Path, recipe: Recipe, mesh: DeviceMesh, device: str | torch.device = "cpu",
                 trainable: Callable | None = None, recompute: bool = False):
        self.recipe, self.mesh, self.model_dir = recipe, mesh, Path(model_dir)
        self.group = mesh.get_group()
        self.world = mesh.size()
        self.device = torch.device(device)
        self.model = load_model(model_dir, dtype=torch.float32, device=self.device, progress=False).train()
        # requires_grad is set before sharding (fully_shard keeps it); the names stay the same after
        names = {n for n, _ in (trainable or (lambda m: trainable_parameters(m, recipe.freeze)))(self.model)}
        if recompute:  # activation checkpointing inside each layer's FSDP unit (recomputed while it is gathered)
            from glmv.train import recompute as activation_checkpointing

            activation_checkpointing.enable(self.model)
        shard_model(self.model, mesh)
        self.params = [(n, p) for n, p in self.model.named_parameters() if n in names]
        self.opt, self.sched = build_optimizer(self.params, recipe, recipe.weight_decay)
        self.routers = [m for m in self.model.modules() if isinstance(m, Router)]
        self.step_count = 0
        self.last_grad_norm = float("nan")

    def step(self, micro_batches: dict | list[dict], loss_fn: Callable | None = None, autocast=None) -> float:
        """One optimizer step on this rank's rows of each micro-batch of the global step; returns the global
        loss (each micro-batch's mean over all ranks' target tokens, averaged over the micro-batches: what the
        1-process trainer logs). loss_fn(model, batch) -> (mean loss over the batch's target tokens, metrics)
        (Trainer.loss; default token_loss); the metrics of this rank land in `last_metrics`."""
        batches = [micro_batches] if isinstance(micro_batches, dict) else list(micro_batches)
        loss_fn = loss_fn or token_loss
        k = len(batches)
        counts = torch.tensor([target_tokens(b) for b in batches], dtype=torch.float64)
        totals = self._summed(counts)
        shares = counts / totals.clamp(min=1)  # this rank's part of each micro-batch's targets
        self.opt.zero_grad(set_to_none=True)
        weighted = torch.zeros(k, dtype=torch.float64)
        metrics: dict[str, float] = {}
        for i, batch in enumerate(batches):
            with autocast or contextlib.nullcontext():
                loss, parts = loss_fn(self.model, to_device(batch, self.device))
            # FSDP2 averages the reduced gradients over the ranks: x world undoes that, x share weights this
            # rank's mean by its targets, / k averages the micro-batches as Trainer.train does
            (loss * (float(shares[i]) * self.world / k)).backward()
            weighted[i] = loss.detach().double() * shares[i]
            for key, v in parts.items():
                metrics[key] = metrics.get(key, 0.0) + v / k
        grad_norm = torch.nn.utils.clip_grad_norm_([p for _, p in self.params], self.recipe.max_grad_norm)
        self.opt.step()
        self.sched.step()
        with torch.no_grad():
            self._balance_routers()
        weighted = self._summed(weighted)
        self.step_count += 1
        self.last_grad_norm = float(grad_norm.full_tensor() if isinstance(grad_norm, DTensor) else grad_norm)
        self.last_metrics = metrics
        return float(weighted.sum()) / k

    def _summed(self, t: torch.Tensor) -> torch.Tensor:
        """A host tensor summed over the ranks (through the device: NCCL reduces device tensors only)."""
        on_device = t.to(self.device, copy=True)  # never reduce the caller's tensor in place
        dist.all_reduce(on_device, group=self.group)
        return on_device.cpu()

    def _balance_routers(self) -> None:
        """Sum every router's expert load over the ranks (one all-reduce), then the trainer's bias update."""
        loaded = [m for m in self.routers if m.last_load is not None]
        if loaded:
            load = torch.stack([m.last_load for m in loaded])
            dist.all_reduce(load, group=self.group)
            for m, row in zip(loaded, load):
                m.last_load = row
        balance_routers(self.model)

    # --- checkpoints ---------------------------------------------------------------------------------------------
    def save(self, path: str | Path, extra: dict | None = None) -> Path:
        """A DCP checkpoint: model and optimizer shards (each rank writes its own), and from rank 0 the scheduler,
        the step and `extra` (a trainer's own state)."""
        path = Path(path)
        model_sd, optim_sd = get_state_dict(self.model, self.opt)
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(path))
        if dist.get_rank(self.group) == 0:
            torch.save({"scheduler": self.sched.state_dict(), "step": self.step_count, "extra": extra or {}},
                       path / TRAINER_STATE)
        dist.barrier(self.group)
        return path

    def load(self, path: str | Path) -> dict:
        """Resume from `save`'s checkpoint (DCP redistributes the shards to this mesh); returns its `extra`."""
        path = Path(path)
        model_sd, optim_sd = get_state_dict(self.model, self.opt)
        state = {"model": model_sd, "optim": optim_sd}
        dcp.load(state, checkpoint_id=str(path))
        set_state_dict(self.model, self.opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
        extra = torch.load(path / TRAINER_STATE, weights_only=False)
        self.sched.load_state_dict(extra["scheduler"])
        self.step_count = extra["step"]
        return extra.get("extra", {})

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The whole model's tensors, gathered on rank 0 in host memory (empty on the other ranks)."""
        return get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def export(self, path: str | Path, side_files_from: str | Path | None = None) -> Path:
        """One Hugging Face checkpoint of the current weights, written by rank 0 with glmv.save_model (tokenizer
        and processor files copied from `side_files_from`). Every rank calls it (the gather is collective)."""
        path = Path(path)
        state = self.full_state_dict()
        if dist.get_rank(self.group) == 0:
            save_model(plain_model(self.model.config, state), path, progress=False)
            if side_files_from is not None:
                copy_side_files(Path(side_files_from), path)
        dist.barrier(self.group)
        return path


def plain_model(config: GlmvConfig, state: dict[str, torch.Tensor]) -> GlmvForConditionalGeneration:
    """An unsharded model holding `state`'s tensors (no copy, no random init)."""
    with torch.device("meta"):
        model = GlmvForConditionalGeneration(config)
    model.load_state_dict(state, assign=True)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.language_model.embed_tokens.weight
    return model.eval()


def export_dcp(dcp_dir: str | Path, model_dir: str | Path, out: str | Path) -> Path:
    """Offline, in one process (no process group): the model of a DCP checkpoint written by FSDPTraining.save, as
    one Hugging Face checkpoint; config and side files from `model_dir` (the checkpoint training started from)."""
    config = GlmvConfig.from_pretrained(Path(model_dir))
    with torch.device("meta"):
        model = GlmvForConditionalGeneration(config)
    model.to_empty(device="cpu")
    state = model.state_dict()
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
        warnings.simplefilter("ignore", UserWarning)
        dcp.load({"model": state}, checkpoint_id=str(dcp_dir), no_dist=True)
    model = plain_model(config, state)
    save_model(model, out, progress=False)
    copy_side_files(Path(model_dir), Path(out))
    return Path(out)
