"""Supervised training (pretrain, long-context/video and SFT stages; the vision stage subclasses it): one loop,
data from the world.

AdamW (glmv.train.optim: parameter groups, each with its own learning-rate factor), linear warmup then cosine
decay, gradient accumulation, gradient clipping, bf16 autocast on CUDA, tqdm with loss and tokens/s, a JSONL log,
atomic checkpoints with full trainer state, and `resume` that continues exactly where an interrupted run stopped
(the data of step k is a pure function of the seed and k).
MoE routers are balanced without an auxiliary loss, as in GLM-4.5 / DeepSeek-V3: after each step every
router's selection bias moves toward under-used experts, by the load of the step's real tokens (padding, which
the attention mask drops, is routed but not counted). Every log line carries the image-token cosine
spread (glmv.train.spread), so a collapsing vision tower shows in the log.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from glmv.device import resolve_device
from glmv.inputs.processor import Processor
from glmv.model.glm4v import GlmvForConditionalGeneration
from glmv.model.moe import Router
from glmv.train.checkpoint import (
    latest_checkpoint,
    open_log,
    restore_training,
    save_checkpoint,
    save_training,
)
from glmv.train.data import IGNORE, Example, Mixture, collate, encode_example, world_sample
from glmv.train.optim import build_optimizer, trainable_parameters
from glmv.train.recipe import Recipe
from glmv.train.spread import SpreadProbe
from glmv.weights import load_model

BIAS_RATE = 1e-3  # router bias update speed (DeepSeek-V3 uses 1e-3)


def token_loss(model: GlmvForConditionalGeneration, batch: dict) -> tuple[torch.Tensor, int]:
    """Mean next-token cross-entropy over the target tokens of the batch, and their count."""
    out = model(batch["input_ids"], attention_mask=batch["attention_mask"], pixel_values=batch["pixel_values"],
                image_grid_thw=batch["image_grid_thw"], pixel_values_videos=batch["pixel_values_videos"],
                video_grid_thw=batch["video_grid_thw"])
    logits = out.logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    n = int((labels != IGNORE).sum())
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE,
                           reduction="sum")
    return loss / max(n, 1), n


def balance_routers(model: torch.nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, Router) and m.last_load is not None:
            load = m.last_load.float()
            m.e_score_correction_bias += BIAS_RATE * torch.sign(load.mean() - load)
            m.last_load = None


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


class Trainer:
    """The training loop of every stage but RL. Subclasses change what a step computes (`batch`, `trainable`,
    `loss`), what trainer state travels with a checkpoint besides the optimizer's (`state`, `restore`), and how
    the model is loaded, stepped and saved (`load`, `autocast`, `after_step`, `save`, `save_final`: the
    fine-tuning trainer, glmv/train/finetune.py, loads adapters and saves them in peft's layout)."""

    def __init__(self, recipe: Recipe, model_dir: Path, make_example: Callable[[str, int, bool], Example] | None = None,
                 device: str | torch.device = "cpu", progress: bool = True):
        """model_dir: the checkpoint training starts from (HF layout with tokenizer and processor configs).
        make_example(task, index, thinking) builds one example; the default draws from glmv.world."""
        self.recipe = recipe
        self.out = Path(recipe.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.device = resolve_device(device)
        self.model_dir = Path(model_dir)
        self.processor = Processor.from_pretrained(self.model_dir)
        self.make_example = make_example or self._world_example
        self.mixture = Mixture(recipe.tasks, recipe.seed)
        self.progress = progress

    def _world_example(self, task: str, index: int, thinking: bool) -> Example:
        s = world_sample(self.recipe, task, index)
        return encode_example(self.processor, s.messages(), s.target, thinking, s.truth.get("trace"), task)

    def batch(self, step: int, micro: int) -> dict:
        """Micro-batch `micro` of step `step` (deterministic)."""
        r = self.recipe
        draws = self.mixture.draw(step * r.grad_accum + micro, r.batch_size)
        examples = [self.make_example(task, index, t) for (task, index), t in zip(draws, self.thinking(step, micro))]
        return collate(examples, self.processor.tokenizer.pad_token_id)

    def thinking(self, step: int, micro: int) -> list[bool]:
        """Which examples of micro-batch `micro` of step `step` are in the thinking format (deterministic; the
        recipe's `thinking` share, none when unset)."""
        r = self.recipe
        return (np.random.default_rng([r.seed, step, micro, 1]).random(r.batch_size) < (r.thinking or 0.0)).tolist()

    def trainable(self, model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
        return trainable_parameters(model, self.recipe.freeze)

    def loss(self, model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of one micro-batch and metrics to log beside it (averaged over micro-batches)."""
        loss, _ = token_loss(model, batch)
        return loss, {}

    @staticmethod
    def tokens(batch: dict) -> int:
        return int(batch["attention_mask"].sum())  # all tokens processed, prompt and media included

    def load(self, start_dir: Path | None) -> torch.nn.Module:
        """The model to train, in training mode: the starting checkpoint, or `start_dir` (a checkpoint of this run)
        when resuming."""
        return load_model(start_dir or self.model_dir, dtype=torch.float32, device=self.device, progress=False).train()

    def autocast(self):
        """The context of each forward pass: bf16 autocast on CUDA, full precision elsewhere."""
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda")

    def after_step(self, model: torch.nn.Module) -> None:
        """After each optimizer step: move the MoE routers' biases toward under-used experts."""
        with torch.no_grad():
            balance_routers(model)

    def save(self, model: torch.nn.Module, step: int, opt, sched) -> None:
        """checkpoint-{step} with the trainer state (resumable)."""
        save_training(model, self.model_dir, self.out, step, opt, sched, self.recipe.keep_checkpoints, **self.state())

    def save_final(self, model: torch.nn.Module) -> None:
        save_checkpoint(model.eval(), self.model_dir, self.out / "final")

    def state(self) -> dict:
        """Trainer state saved with every checkpoint besides optimizer, scheduler, RNG and step."""
        return {}

    def restore(self, state: dict) -> None:
        """Take back what `state` saved (from a checkpoint's trainer state)."""

    def train(self, resume: bool = False, stop_after: int | None = None) -> list[float]:
        """Run the recipe's steps (from the latest checkpoint with `resume`); returns the loss of every step run
        in this call. `stop_after` ends the call early at that step, after checkpointing it (as a time-boxed
        session does); a later `resume` continues exactly."""
        r = self.recipe
        start_dir = latest_checkpoint(self.out) if resume else None
        model = self.load(start_dir)
        trainable = self.trainable(model)
        opt, sched = build_optimizer(trainable, r, r.weight_decay)
        state = restore_training(start_dir, opt, sched)
        self.restore(state)
        step = state.get("step", 0)
        spread = SpreadProbe(self.processor)
        losses = []
        log = open_log(self.out, step if resume else None)
        bar = tqdm(total=r.steps, initial=step, desc=f"{r.stage}", disable=None if self.progress else True)
        tokens, t0 = 0, time.perf_counter()
        end = min(r.steps, stop_after or r.steps)
        while step < end:
            opt.zero_grad(set_to_none=True)
            total, metrics = 0.0, {}
            for micro in range(r.grad_accum):
                batch = to_device(self.batch(step, micro), self.device)
                with self.autocast():
                    loss, parts = self.loss(model, batch)
                (loss / r.grad_accum).backward()
                total += loss.item() / r.grad_accum
                for k, v in parts.items():
                    metrics[k] = metrics.get(k, 0.0) + v / r.grad_accum
                tokens += self.tokens(batch)
            grad_norm = float(torch.nn.utils.clip_grad_norm_([p for _, p in trainable], r.max_grad_norm))
            opt.step()
            sched.step()
            self.after_step(model)
            step += 1
            losses.append(total)
            bar.update(1)
            if step % r.log_every == 0 or step == r.steps:
                rate = tokens / (time.perf_counter() - t0)
                bar.set_postfix(loss=f"{total:.3f}", tok_s=f"{rate:.0f}")
                log.write(json.dumps({"step": step, "loss": total, "lr": sched.get_last_lr()[0],
                                      "grad_norm": grad_norm, "tokens_per_s": rate, **metrics, **spread(model)})
                          + "\n")
                log.flush()
                tokens, t0 = 0, time.perf_counter()
            if step % r.save_every == 0 or step == end:
                self.save(model, step, opt, sched)
        bar.close()
        log.close()
        if step == r.steps:
            self.save_final(model)
        return losses
