"""`Trainer` (the pretrain / SFT loop of glmv.train.trainer) over a data-parallel FSDP2 mesh.

Every rank builds the same global micro-batches (the data of step k is a pure function of the seed and k) and
keeps its contiguous share of the rows (`split_rows`, media included); glmv.distributed.fsdp.FSDPTraining does the
step. Rank 0 logs (log.jsonl, tqdm); checkpoints are DCP directories `dcp-{step:06d}` (model + optimizer shards,
scheduler, step, the trainer's own state), `resume` continues from the newest; the finished run is exported once,
by rank 0, as `final/` in the Hugging Face layout (as Trainer writes it). Launch with torchrun:

    torchrun --nproc-per-node 8 -m glmv train RECIPE.yaml      # with distributed_wiring.diff applied
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh
from tqdm.auto import tqdm

from glmv.distributed.fsdp import TRAINER_STATE, FSDPTraining
from glmv.errors import ConfigError
from glmv.model.positions import IMAGE, VIDEO
from glmv.train.checkpoint import open_log
from glmv.train.data import Example
from glmv.train.recipe import Recipe
from glmv.train.spread import SpreadProbe
from glmv.train.trainer import Trainer

ROW_KEYS = ("input_ids", "labels", "attention_mask")


def split_rows(batch: dict, types: torch.Tensor, rank: int, world_size: int, merge: int) -> dict:
    """Rank `rank`'s contiguous share of a collated batch's rows, with exactly those rows' images and videos.
    types [B, L]: each token's TEXT / IMAGE / VIDEO type (model.token_types); merge: spatial_merge_size ** 2
    (patch rows per placeholder token)."""
    rows = batch["input_ids"].shape[0]
    lo, hi = rank * rows // world_size, (rank + 1) * rows // world_size
    out = {k: (v[lo:hi] if k in ROW_KEYS else v) for k, v in batch.items()}
    media = ((IMAGE, "pixel_values", "image_grid_thw"), (VIDEO, "pixel_values_videos", "video_grid_thw"))
    for kind, pixels, grids in media:
        if batch.get(grids) is None:
            continue
        patches = batch[grids].prod(-1)  # pixel rows per item
        owner = _owners((types == kind).sum(1).tolist(), (patches // merge).tolist())
        mine = [i for i, r in enumerate(owner) if lo <= r < hi]
        if not mine:
            out[pixels] = out[grids] = None
            continue
        starts = torch.cat([torch.zeros(1, dtype=torch.long), patches.cumsum(0)])
        out[grids] = batch[grids][mine[0] : mine[-1] + 1]
        out[pixels] = batch[pixels][starts[mine[0]] : starts[mine[-1] + 1]]
    return out


def _owners(tokens_per_row: list[int], tokens_per_item: list[int]) -> list[int]:
    """The row of each media item, items in order (as collate concatenates them)."""
    owner, row, left = [], 0, tokens_per_row[0] if tokens_per_row else 0
    for n in tokens_per_item:
        while left == 0:
            row += 1
            left = tokens_per_row[row]
        owner.append(row)
        left -= n
        if left < 0:
            raise ConfigError("the batch's media do not match its placeholder tokens")
    return owner


class FSDPTrainer(Trainer):
    """Trainer.train over `mesh` (every rank runs it with the same arguments). Subclasses' `loss` must be a mean
    over the batch's target tokens (the base token loss is): the step weights each rank's mean by its targets."""

    def __init__(self, recipe: Recipe, model_dir: Path, mesh: DeviceMesh,
                 make_example: Callable[[str, int, bool], Example] | None = None, device: str | torch.device = "cpu",
                 progress: bool = True):
        if recipe.stage not in ("pretrain", "sft"):
            raise ConfigError(f"distributed training runs the pretrain and sft stages, not {recipe.stage!r}")
        super().__init__(recipe, model_dir, make_example, device, progress)
        self.mesh, self.group = mesh, mesh.get_group()
        self.rank, self.world = dist.get_rank(self.group), mesh.size()

    def checkpoints(self) -> list[Path]:
        return sorted(p for p in self.out.glob("dcp-*") if (p / TRAINER_STATE).is_file())

    def train(self, resume: bool = False, stop_after: int | None = None) -> list[float]:
        r = self.recipe
        main = self.rank == 0
        found = self.checkpoints() if resume else []
        run = FSDPTraining(self.model_dir, r, self.mesh, self.device, trainable=self.trainable)
        if found:
            self.restore(run.load(found[-1]))
        step = run.step_count
        merge = run.model.config.vision.spatial_merge_size ** 2
        spread = SpreadProbe(self.processor)
        losses = []
        log = open_log(self.out, step if resume else None) if main else None
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda")
        bar = tqdm(total=r.steps, initial=step, desc=f"{r.stage} x{self.world}",
                   disable=None if self.progress and main else True)
        tokens, t0 = 0, time.perf_counter()
        end = min(r.steps, stop_after or r.steps)
        while step < end:
            batches = []
            for micro in range(r.grad_accum):
                batch = self.batch(step, micro)
                tokens += self.tokens(batch)  # every rank builds the global batch: count it whole, once
                types = run.model.token_types(batch["input_ids"])
                batches.append(split_rows(batch, types, self.rank, self.world, merge))
            total = run.step(batches, self.loss, autocast)
            step += 1
            losses.append(total)
            bar.update(1)
            if step % r.log_every == 0 or step == r.steps:
                probe = self._spread(run, spread)  # a forward through the vision tower: every rank joins
                if main:
                    rate = tokens / (time.perf_counter() - t0)
                    bar.set_postfix(loss=f"{total:.3f}", tok_s=f"{rate:.0f}")
                    log.write(json.dumps({"step": step, "loss": total, "lr": run.sched.get_last_lr()[0],
                                          "grad_norm": run.last_grad_norm, "tokens_per_s": rate,
                                          **run.last_metrics, **probe}) + "\n")
                    log.flush()
                tokens, t0 = 0, time.perf_counter()
            if step % r.save_every == 0 or step == end:
                run.save(self.out / f"dcp-{step:06d}", extra=self.state())
                if main:
                    for old in self.checkpoints()[: -r.keep_checkpoints]:
                        shutil.rmtree(old, ignore_errors=True)
                dist.barrier(self.group)
        bar.close()
        if log is not None:
            log.close()
        if step == r.steps:
            run.export(self.out / "final", side_files_from=self.model_dir)
        return losses

    @staticmethod
    def _spread(run: FSDPTraining, spread: SpreadProbe) -> dict[str, float]:
        """The image-token spread probe on the sharded model: the root unit (the vision tower with it) gathered
        around it on every rank."""
        run.model.unshard()
        try:
            with torch.no_grad():
                return spread(run.model)
        finally:
            run.model.reshard()


def run_stage_distributed(recipe: Recipe, resume: bool = False, stop_after: int | None = None,
                          device: str | torch.device = "cpu") -> list[float]:
    """glmv.train.pipeline.run_stage for a process launched by torchrun (WORLD_SIZE > 1): join the group (one
    GPU per LOCAL_RANK on CUDA, gloo on CPU), let rank 0 build a scratch starting checkpoint while the others
    wait, then FSDPTrainer."""
    import os

    from glmv.distributed.launch import init_from_env
    from glmv.train.pipeline import start_checkpoint

    device = torch.device(device)
    mesh = init_from_env(device.type)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if dist.get_rank() == 0:
        start_checkpoint(recipe)
    dist.barrier()
    start = start_checkpoint(recipe)  # found ready-made on every rank now
    try:
        return FSDPTrainer(recipe, start, mesh, device=device).train(resume, stop_after)
    finally:
        dist.destroy_process_group()
