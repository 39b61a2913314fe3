"""Fine-tuning a checkpoint (`stage: finetune`): LoRA, DoRA or all weights, on your JSONL conversations and on world
tasks, with the supervised trainer's loop (glmv.train.trainer: schedule, accumulation, clipping, log, exact
resume).

What this trainer changes in that loop:
- data: the recipe's sources (glmv.train.finetune_recipe) form one pool; every epoch visits the pool in an order
  drawn from (seed, epoch), so the examples of step k are a pure function of the seed and k (resume is exact);
  each example is in the thinking or `/nothink` format as the recipe's `thinking` fraction decides (as in SFT);
- model: method lora / dora puts fresh adapters on the base (glmv.lora.apply_lora; their init is a function of
  the seed) and trains only them, base weights and router biases stay bit-identical; method full trains every
  parameter outside `freeze` (vit, projector, llm or prefixes) and balances the routers when the decoder trains;
- precision: base weights in fp32 on CPU; `dtype: auto` loads them in bf16 under an adapter on a GPU with bf16
  (adapters stay fp32), and forward passes run under bf16 autocast there;
- memory: `gradient_checkpointing` recomputes each decoder layer in the backward pass (glmv.train.recompute);
- files: a lora / dora run writes `checkpoint-NNNNNN/` as an adapter in peft's layout (adapter_config.json +
  adapter_model.safetensors) plus trainer_state.pt, and `final/` as the adapter alone: serve it with
  `LLM(base, lora="OUT/final")`, merge it with `glmv convert BASE DST --merge-lora OUT/final`. A full run writes
  Hugging Face checkpoints, as every other stage.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch

from glmv.lora import adapter_parameters, apply_lora, load_adapter, save_adapter
from glmv.train import recompute
from glmv.train.checkpoint import prune_checkpoints, rng_state, write_atomically
from glmv.train.data import Example, collate, encode_example
from glmv.train.finetune_recipe import FinetuneSpec, JsonlSource, WorldSource, freeze_prefixes
from glmv.train.optim import trainable_parameters
from glmv.train.recipe import Recipe
from glmv.train.trainer import Trainer
from glmv.train.user_data import Conversation, encode_line, read_jsonl
from glmv.weights import load_model

ORDER_STREAM = 0xF17E  # seed word of the per-epoch order, apart from the thinking coins' stream

WorldItem = tuple[str, int, float]  # (task, index in the train split, variety)
Item = Conversation | WorldItem


def build_pool(sources: tuple[JsonlSource | WorldSource, ...]) -> list[Item]:
    """Every example of an epoch: the JSONL conversations and world samples of the sources, each `repeat` times."""
    pool: list[Item] = []
    for source in sources:
        if isinstance(source, JsonlSource):
            items: list[Item] = list(read_jsonl(source.path))
        else:
            items = [(task, i, source.variety) for task in source.tasks for i in range(source.n)]
        pool += items * source.repeat
    return pool


class FinetuneTrainer(Trainer):
    def __init__(self, recipe: Recipe, model_dir: Path, device: str | torch.device = "cpu", progress: bool = True):
        self.spec = FinetuneSpec.from_recipe(recipe)
        super().__init__(recipe, model_dir, device=device, progress=progress)
        self.pool = build_pool(self.spec.data)
        self._orders: dict[int, np.ndarray] = {}
        self.balance = False
        self.model: torch.nn.Module | None = None  # the model being trained (after `train`: the trained one)

    # --- data -------------------------------------------------------------------------------------------------
    def order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            self._orders = {e: o for e, o in self._orders.items() if e >= epoch - 1}
            rng = np.random.default_rng([self.recipe.seed, ORDER_STREAM, epoch])
            self._orders[epoch] = rng.permutation(len(self.pool))
        return self._orders[epoch]

    def draw(self, draw: int, n: int) -> list[Item]:
        """The items of the `draw`-th micro-batch: slots draw*n .. draw*n+n-1 of the epoch-by-epoch order."""
        out = []
        for slot in range(draw * n, draw * n + n):
            epoch, at = divmod(slot, len(self.pool))
            out.append(self.pool[self.order(epoch)[at]])
        return out

    def example(self, item: Item, thinking: bool) -> Example:
        if isinstance(item, Conversation):
            return encode_line(self.processor, item, thinking, task="jsonl")
        from glmv.world import sample

        task, index, variety = item
        s = sample(task, "train", index, variety)
        return encode_example(self.processor, s.messages(), s.target, thinking, s.truth.get("trace"), task)

    def batch(self, step: int, micro: int) -> dict:
        r = self.recipe
        items = self.draw(step * r.grad_accum + micro, r.batch_size)
        examples = [self.example(item, t) for item, t in zip(items, self.thinking(step, micro))]
        return collate(examples, self.processor.tokenizer.pad_token_id)

    # --- model ------------------------------------------------------------------------------------------------
    def base_dtype(self) -> torch.dtype:
        if self.spec.dtype != "auto":
            return getattr(torch, self.spec.dtype)
        return torch.bfloat16 if self.spec.adapter and bf16_device(self.device) else torch.float32

    def load(self, start_dir: Path | None) -> torch.nn.Module:
        spec = self.spec
        if start_dir is None:
            torch.manual_seed(self.recipe.seed)  # adapter init and dropout: a function of the seed
        if not spec.adapter:
            model = load_model(start_dir or self.model_dir, dtype=self.base_dtype(), device=self.device, progress=False)
        else:
            model = load_model(self.model_dir, dtype=self.base_dtype(), device=self.device, progress=False)
            if start_dir is None:
                apply_lora(model, spec.lora_config())
            else:
                load_adapter(model, start_dir, trainable=True)
        if spec.gradient_checkpointing:
            recompute.enable(model)
        self.model = model.train()
        return self.model

    def trainable(self, model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
        if self.spec.adapter:
            self.balance = False  # router biases are base state: an adapter run leaves them as they are
            return list(adapter_parameters(model).items())
        named = trainable_parameters(model, freeze_prefixes(model, self.spec.freeze))
        self.balance = any(n.startswith("language_model.") for n, _ in named)
        return named

    def autocast(self):
        if bf16_device(self.device):
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def after_step(self, model: torch.nn.Module) -> None:
        if self.balance:
            super().after_step(model)

    # --- files ------------------------------------------------------------------------------------------------
    def save(self, model: torch.nn.Module, step: int, opt, sched) -> None:
        if not self.spec.adapter:
            return super().save(model, step, opt, sched)
        state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": rng_state(), "step": step,
                 **self.state()}
        write_adapter(model, self.out / f"checkpoint-{step:06d}", self.model_dir, state)
        prune_checkpoints(self.out, self.recipe.keep_checkpoints)

    def save_final(self, model: torch.nn.Module) -> None:
        if not self.spec.adapter:
            return super().save_final(model)
        model.eval()
        write_adapter(model, self.out / "final", self.model_dir)


def bf16_device(device: torch.device) -> bool:
    """bf16 autocast where the device computes in bf16: CUDA GPUs that support it (CPU trains in fp32)."""
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def write_adapter(model: torch.nn.Module, path: Path, base: Path, state: dict | None = None) -> Path:
    """The model's adapter in peft's layout at `path` (+ trainer state), written atomically like every training
    checkpoint."""
    return write_atomically(path, lambda tmp: save_adapter(model, tmp, base_model_name_or_path=str(base)), state)
