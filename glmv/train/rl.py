"""Reinforcement learning with verifiable rewards: GRPO with a KL anchor and curriculum sampling (RLCS).

Each step picks prompts, samples a group of answers per prompt with the current policy, scores every answer
with the task's verifiable reward, and normalises rewards within each group (the advantage). The policy
gradient raises the log-probability of better-than-group answers; a KL penalty (the k3 estimator) keeps the
policy near the SFT model. Curriculum: each task's pass rate is tracked, and tasks are drawn with weight
p(1-p) + floor, so that training time goes to tasks that are neither always solved nor never solved (a group
whose answers all score the same teaches nothing).
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from glmv.device import resolve_device
from glmv.engine.llm import LLM
from glmv.engine.sampling import SamplingParams
from glmv.inputs.processor import Processor
from glmv.train.checkpoint import (
    latest_checkpoint,
    open_log,
    restore_training,
    save_checkpoint,
    save_training,
)
from glmv.train.data import Example, Mixture, collate, world_sample
from glmv.train.optim import build_optimizer, trainable_parameters
from glmv.train.recipe import Recipe
from glmv.train.spread import SpreadProbe
from glmv.train.trainer import balance_routers, to_device
from glmv.weights import load_model

FLOOR = 0.05  # curriculum weight every task keeps


@dataclass
class Prompt:
    task: str
    messages: list[dict]
    score: Callable[[str], float]  # reward of an answer text, in [0, 1]
    thinking: bool = True


class Curriculum:
    """Per-task pass-rate estimates (EMA of rewards) -> sampling weights (p(1-p) + FLOOR) x the recipe's weight."""

    def __init__(self, tasks: list[str], momentum: float = 0.9):
        self.rate = {t: 0.5 for t in tasks}
        self.momentum = momentum

    def weights(self, tasks: list[str], share: np.ndarray | None = None) -> np.ndarray:
        """share: the recipe's task weights (normalised), so that a recipe still says what matters more (until
        stop 25 they were ignored once the curriculum was on)."""
        w = np.array([self.rate[t] * (1 - self.rate[t]) + FLOOR for t in tasks])
        w = w if share is None else w * share
        return w / w.sum()

    def update(self, task: str, reward: float) -> None:
        self.rate[task] = self.momentum * self.rate[task] + (1 - self.momentum) * reward


def sequence_logprobs(model, batch: dict, prompt_lens: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs of each row's completion (tokens after its prompt): [B, L-1] and the mask of them."""
    out = model(batch["input_ids"], attention_mask=batch["attention_mask"], pixel_values=batch["pixel_values"],
                image_grid_thw=batch["image_grid_thw"], pixel_values_videos=batch["pixel_values_videos"],
                video_grid_thw=batch["video_grid_thw"])
    logp = F.log_softmax(out.logits[:, :-1].float(), dim=-1)
    targets = batch["input_ids"][:, 1:]
    token_logp = logp.gather(-1, targets[..., None])[..., 0]
    pos = torch.arange(targets.shape[1], device=targets.device)[None]
    mask = (pos >= torch.tensor(prompt_lens, device=targets.device)[:, None] - 1) & batch["attention_mask"][:, 1:].bool()
    return token_logp, mask


class GRPOTrainer:
    def __init__(self, recipe: Recipe, model_dir: Path, make_prompt: Callable[[str, int], Prompt] | None = None,
                 device: str | torch.device = "cpu", progress: bool = True):
        self.recipe = recipe
        self.out = Path(recipe.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.model_dir = Path(model_dir)
        self.device = resolve_device(device)
        self.make_prompt = make_prompt or self._world_prompt
        self.mixture = Mixture(recipe.tasks, recipe.seed)
        self.progress = progress

    def _world_prompt(self, task: str, index: int) -> Prompt:
        from glmv.world import TASKS

        r = self.recipe
        s = world_sample(r, task, index)
        # a share of prompts without thinking keeps the direct answer's format under the reward too (the stop-24
        # policy, trained thinking only, broke 8 of 30 boxes when answering directly)
        thinking = r.thinking is None or np.random.default_rng([r.seed, index, 1]).random() < r.thinking
        return Prompt(task, s.messages(), lambda text: TASKS[task].reward(text, s), thinking=bool(thinking))

    def _rollouts(self, llm: LLM, prompts: list[Prompt], step: int) -> list[tuple[Prompt, list]]:
        r = self.recipe
        llm.engine.weights_changed()  # the policy changed since the last step: no stale embeddings or KV
        params = SamplingParams(n=r.group_size, temperature=r.temperature, max_tokens=r.max_new_tokens,
                                seed=r.seed * 1_000_003 + step, skip_special_tokens=False)
        groups = []
        for p in prompts:
            request = llm.prepare_chat([p.messages], params, p.thinking)[0]
            out = llm.run_requests([request])[0]
            groups.append((p, request, out))
        return groups

    def train(self, resume: bool = False, stop_after: int | None = None) -> list[dict]:
        r = self.recipe
        start_dir = latest_checkpoint(self.out) if resume else None
        policy = load_model(start_dir or self.model_dir, dtype=torch.float32, device=self.device, progress=False)
        reference = load_model(self.model_dir, dtype=torch.float32, device=self.device, progress=False).eval()
        reference.requires_grad_(False)
        llm = LLM.from_model(policy, self.model_dir)
        named = trainable_parameters(policy, r.freeze)
        trainable = [p for _, p in named]
        opt, sched = build_optimizer(named, r, weight_decay=0.0)
        spread = SpreadProbe(Processor.from_pretrained(self.model_dir))
        curriculum = Curriculum(self.mixture.tasks)
        state = restore_training(start_dir, opt, sched)
        step = state.get("step", 0)
        curriculum.rate = state.get("curriculum", curriculum.rate)
        pad = llm.tokenizer.pad_token_id
        history = []
        log = open_log(self.out, step if resume else None)
        bar = tqdm(total=r.steps, initial=step, desc="rl", disable=None if self.progress else True)
        end = min(r.steps, stop_after or r.steps)
        while step < end:
            t0 = time.perf_counter()
            probs = curriculum.weights(self.mixture.tasks, self.mixture.probs) if r.curriculum else None
            prompts = [self.make_prompt(t, i) for t, i in self.mixture.draw(step, r.batch_size, probs)]
            policy.eval()
            groups = self._rollouts(llm, prompts, step)
            policy.train()
            examples, prompt_lens, advantages, rewards = [], [], [], []
            for p, request, out in groups:
                scores = np.array([p.score(c.text) for c in out.outputs])
                for s in scores:
                    curriculum.update(p.task, float(s))
                rewards.extend(scores.tolist())
                if scores.std() < 1e-6:
                    continue  # every answer scored the same: no learning signal in this group
                adv = (scores - scores.mean()) / (scores.std() + 1e-4)
                for seq, a in zip(request.seqs, adv):
                    ids = seq.prompt_ids + seq.output_ids
                    examples.append(Example(ids, ids, request.images, request.videos, p.task))
                    prompt_lens.append(len(seq.prompt_ids))
                    advantages.append(float(a))
            stats = {"step": step + 1, "reward": float(np.mean(rewards)), "groups_used": len(examples) // r.group_size}
            opt.zero_grad(set_to_none=True)
            if examples:
                batch = to_device(collate(examples, pad), self.device)
                logp, mask = sequence_logprobs(policy, batch, prompt_lens)
                with torch.no_grad():
                    ref_logp, _ = sequence_logprobs(reference, batch, prompt_lens)
                adv = torch.tensor(advantages, device=self.device)[:, None]
                # on-policy: exp(logp - logp.detach()) == 1 but carries the policy gradient A * grad(logp)
                pg = -(adv * torch.exp(logp - logp.detach()))
                kl = torch.exp(ref_logp - logp) - (ref_logp - logp) - 1  # k3: unbiased, always >= 0
                per_token = (pg + r.kl_coef * kl) * mask
                loss = (per_token.sum(1) / mask.sum(1).clamp(min=1)).mean()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable, r.max_grad_norm)
                opt.step()
                with torch.no_grad():
                    balance_routers(policy)
                stats.update(loss=loss.item(), kl=((kl * mask).sum() / mask.sum()).item())
            with warnings.catch_warnings():  # the schedule follows steps, also those with no signal (no opt.step)
                warnings.filterwarnings("ignore", r"Detected call of `lr_scheduler.step\(\)` before")
                sched.step()
            step += 1
            stats["seconds"] = time.perf_counter() - t0
            stats["pass_rate"] = {t: round(v, 3) for t, v in curriculum.rate.items()}
            stats.update(spread(policy))
            history.append(stats)
            log.write(json.dumps(stats) + "\n")
            log.flush()
            bar.update(1)
            bar.set_postfix(reward=f"{stats['reward']:.3f}")
            if step % r.save_every == 0 or step == end:
                save_training(policy, self.model_dir, self.out, step, opt, sched, r.keep_checkpoints,
                              curriculum=curriculum.rate)
        bar.close()
        log.close()
        if step == r.steps:
            save_checkpoint(policy.eval(), self.model_dir, self.out / "final")
        return history
