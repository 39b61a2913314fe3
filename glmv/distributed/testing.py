"""The multi-process checks tests/distributed runs: each is `fn(rank, world_size, ...)` for glmv.distributed.launch
.spawn (importable by name, which spawned processes need), and writes what it measured to `out/rank{r}.pt`.

Tiny checkpoints only (glmv.testing.tiny_checkpoint), fp32, gloo on CPU.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor

from glmv.model.positions import continuation_positions
from glmv.testing.prompts import image_tokens, random_pixels, random_text
from glmv.weights import load_model


def tiny_prompt() -> dict:
    """Two left-padded rows, one with a 4x6 image: the inputs of a batched prefill."""
    a = random_text(3, 1) + image_tokens(4, 6) + random_text(9, 2)
    b = random_text(11, 3)
    n = max(len(a), len(b))
    ids = torch.tensor([[0] * (n - len(a)) + a, [0] * (n - len(b)) + b])
    mask = (torch.arange(n)[None] >= torch.tensor([[n - len(a)], [n - len(b)]])).long()
    grids = torch.tensor([(1, 4, 6)])
    return dict(input_ids=ids, attention_mask=mask, pixel_values=random_pixels(grids.tolist(), 7), image_grid_thw=grids)


@torch.no_grad()
def greedy_run(model, prompt: dict, steps: int, make_cache) -> dict:
    """Full (uncached) prefill logits, then a cached prefill and `steps` greedy decode steps: every step's logits,
    the chosen ids and the cache's key shape."""
    full = model(**prompt).logits
    ids, mask = prompt["input_ids"], prompt["attention_mask"]
    cache = make_cache(model, ids.shape[0], ids.shape[1] + steps)
    out = model(**prompt, cache=cache)
    logits, chosen = [out.logits[:, -1]], []
    real = mask.sum(1)
    for _ in range(steps):
        nxt = logits[-1].argmax(-1, keepdim=True)
        chosen.append(nxt)
        mask = torch.cat([mask, torch.ones_like(nxt)], 1)
        pos = continuation_positions(out.rope_deltas, real, 1)
        step = model(nxt, attention_mask=mask, position_ids=pos, cache=cache)
        logits.append(step.logits[:, -1])
        real = real + 1
    return dict(full=full, cached_prefill=out.logits, steps=torch.stack(logits, 1), ids=torch.cat(chosen, 1),
                kv_shape=tuple(cache.k[0].shape))


def check_parallel_inference(rank: int, world_size: int, checkpoint: str, configs: dict[str, dict], out: str,
                             steps: int = 4) -> None:
    """For each named parallelize() config: the sharded model's greedy run beside the unsharded one's (both in this
    process). Writes {name: {full, cached_prefill, steps: max |diff|, same_ids, ids, kv_shape, ref_kv_shape,
    local_shapes (of the DTensor parameters), heads (local query / kv heads of layer 0)}}."""
    from glmv.distributed.parallel import make_kv_cache, parallelize

    mesh = init_device_mesh("cpu", (world_size,))
    prompt = tiny_prompt()
    ref = greedy_run(load_model(checkpoint, dtype=torch.float32, progress=False), prompt, steps, make_kv_cache)
    results = {}
    for name, kwargs in configs.items():
        model = parallelize(load_model(checkpoint, dtype=torch.float32, progress=False), mesh, **kwargs)
        got = greedy_run(model, prompt, steps, make_kv_cache)
        results[name] = {key: float((got[key] - ref[key]).abs().max()) for key in ("full", "cached_prefill", "steps")}
        attn = model.language_model.layers[0].self_attn
        results[name].update(same_ids=bool(torch.equal(got["ids"], ref["ids"])), ids=got["ids"],
                             kv_shape=got["kv_shape"], ref_kv_shape=ref["kv_shape"], heads=(attn.heads, attn.kv_heads),
                             local_shapes={n: tuple(p.to_local().shape) for n, p in model.named_parameters()
                                           if isinstance(p, DTensor)})
    torch.save(results, Path(out) / f"rank{rank}.pt")
    dist.barrier()


# --- FSDP2 training ----------------------------------------------------------------------------------------------

IMAGE_GRID = (1, 4, 4)  # 16 patch rows -> 4 image tokens per row


def synthetic_batch(step: int, rows: int = 4, seed: int = 0) -> dict:
    """The global batch of step `step` (a pure function of step and seed), in glmv.train.data.collate's layout:
    rows of different lengths, left padded, each with one image, the loss on an answer of 3-6 tokens."""
    from glmv.train.data import IGNORE

    g = torch.Generator().manual_seed(seed * 100_003 + step)
    seqs, targets = [], []
    for _ in range(rows):
        def draw(lo: int, hi: int) -> int:
            return int(torch.randint(lo, hi, (1,), generator=g))

        prompt = random_text(draw(2, 6), draw(0, 10**6)) + image_tokens(*IMAGE_GRID[1:])
        prompt = prompt + random_text(3, draw(0, 10**6))
        answer = random_text(draw(3, 7), draw(0, 10**6))
        seqs.append(prompt + answer)
        targets.append([IGNORE] * len(prompt) + answer)
    n = max(len(s) for s in seqs)
    ids = torch.tensor([[0] * (n - len(s)) + s for s in seqs])
    labels = torch.tensor([[IGNORE] * (n - len(t)) + t for t in targets])
    mask = torch.tensor([[0] * (n - len(s)) + [1] * len(s) for s in seqs])
    grids = torch.tensor([IMAGE_GRID] * rows)
    pixels = random_pixels(grids.tolist(), seed * 7919 + step)
    return dict(input_ids=ids, attention_mask=mask, labels=labels, pixel_values=pixels, image_grid_thw=grids,
                pixel_values_videos=None, video_grid_thw=None)


def split_batch(batch: dict, rank: int, world_size: int) -> dict:
    """Rank `rank`'s contiguous share of the rows (and of their images: one per row)."""
    rows = batch["input_ids"].shape[0]
    lo, hi = rank * rows // world_size, (rank + 1) * rows // world_size
    patches = int(torch.tensor(IMAGE_GRID).prod())
    out = {k: (v[lo:hi] if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
    out["pixel_values"] = batch["pixel_values"][lo * patches : hi * patches]
    return out


def tiny_recipe(out: str, steps: int = 5):
    from glmv.train.recipe import Recipe

    return Recipe(stage="sft", out=out, steps=steps, lr=2e-3, warmup=2, min_lr_ratio=0.1, weight_decay=0.05,
                  max_grad_norm=1.0)


def reference_trajectory(model_dir: str, steps: int, out: str) -> tuple[list[float], dict[str, torch.Tensor]]:
    """One process, the whole global batch, the single-process trainer's step (glmv.train.trainer.Trainer.train
    with grad_accum 1): the losses and the final weights."""
    from glmv.train.optim import build_optimizer, trainable_parameters
    from glmv.train.trainer import balance_routers, token_loss

    recipe = tiny_recipe(out, steps)
    model = load_model(model_dir, dtype=torch.float32, progress=False).train()
    trainable = trainable_parameters(model, recipe.freeze)
    opt, sched = build_optimizer(trainable, recipe, recipe.weight_decay)
    losses = []
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        loss, _ = token_loss(model, synthetic_batch(step))
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in trainable], recipe.max_grad_norm)
        opt.step()
        sched.step()
        with torch.no_grad():
            balance_routers(model)
        losses.append(loss.item())
    return losses, {k: v.detach().clone() for k, v in model.state_dict().items()}


def check_fsdp_training(rank: int, world_size: int, model_dir: str, out: str, steps: int = 5,
                        resume_at: int = 3) -> None:
    """`steps` FSDP2 steps over the ranks, every layer's activations recomputed in the backward (a DCP checkpoint
    after step `resume_at`, an HF export at the end), then a fresh run resumed from that checkpoint for the
    remaining steps. Writes {losses, resumed_losses, resumed_step, local_shapes, resumed_vs_uninterrupted (max
    |diff| of the full weights)}; rank 0 also the final
    full state dict (final_state.pt)."""
    from glmv.distributed.fsdp import FSDPTraining

    out = Path(out)
    mesh = init_device_mesh("cpu", (world_size,))
    run = FSDPTraining(model_dir, tiny_recipe(str(out), steps), mesh, recompute=True)
    local_shapes = {n: tuple(p.to_local().shape) for n, p in run.model.named_parameters()}
    losses = []
    for step in range(steps):
        losses.append(run.step(split_batch(synthetic_batch(step), rank, world_size)))
        if step + 1 == resume_at:
            run.save(out / "dcp")
            run.export(out / f"hf-step{resume_at}")  # what export_dcp must reproduce from the DCP files
    run.export(out / "hf", side_files_from=model_dir)
    final = run.full_state_dict()
    if rank == 0:
        torch.save(final, out / "final_state.pt")

    resumed = FSDPTraining(model_dir, tiny_recipe(str(out), steps), mesh, recompute=True)
    resumed.load(out / "dcp")
    resumed_step = resumed.step_count
    resumed_losses = [resumed.step(split_batch(synthetic_batch(step), rank, world_size))
                      for step in range(resumed_step, steps)]
    resumed_final = resumed.full_state_dict()
    gap = max((float((resumed_final[k] - final[k]).abs().max()) for k in final), default=0.0)
    torch.save(dict(losses=losses, resumed_losses=resumed_losses, resumed_step=resumed_step,
                    local_shapes=local_shapes, resumed_vs_uninterrupted=gap), out / f"rank{rank}.pt")
    dist.barrier()


# --- serving: the engine over a driver and its workers ----------------------------------------------------------

def engine_outputs(llm) -> dict:
    """Greedy generations (a batch of two text prompts; a chat with an image) and scores through `llm`."""
    from PIL import Image

    from glmv.engine.sampling import SamplingParams

    params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    texts = llm.generate(["a red square and", "count the circles:"], params)
    image = Image.new("RGB", (56, 84), (200, 40, 40))
    chat = llm.chat([{"role": "user", "content": [{"type": "image", "image": image},
                                                   {"type": "text", "text": "What colour is it?"}]}], params)
    scores = llm.score("What colour is it?", ["red", "blue"])
    return dict(ids=[o.outputs[0].token_ids for o in texts + chat], scores=[s.outputs.score for s in scores])


def local_pool(llm) -> None:
    """Give the engine a paged pool of the model's local kv heads (what distributed_wiring.diff makes Engine
    allocate itself: it reads the heads off the model's attention, not config.json)."""
    from glmv.distributed.parallel import local_kv_heads
    from glmv.engine.paged_kv import PagedKVCache

    e, kv = llm.engine, llm.engine.kv
    pool = PagedKVCache(len(kv.k), kv.num_blocks, kv.block_size, local_kv_heads(llm.model), kv.k[0].shape[2],
                        kv.k[0].dtype, kv.k[0].device)
    e.kv = e.runner.cache = pool


def check_parallel_engine(model_dir: str, out: str, experts: str) -> None:
    """In a fresh (non-daemon) process: the 1-process LLM's outputs, then the same through LLM.from_model over
    load_parallel's driver (this process) and one worker. Writes {ref, parallel, kv_heads} to out/engine.pt."""
    from glmv.distributed.serving import load_parallel
    from glmv.engine.llm import LLM

    torch.set_num_threads(1)
    ref = engine_outputs(LLM(model_dir, dtype=torch.float32, progress=False))
    driver = load_parallel(model_dir, 2, dtype=torch.float32, experts=experts, threads=1)
    llm = LLM.from_model(driver, model_dir)
    local_pool(llm)
    got = engine_outputs(llm)
    kv_heads = tuple(llm.engine.kv.k[0].shape[1:2])
    driver.shutdown()
    torch.save(dict(ref=ref, parallel=got, kv_heads=kv_heads), Path(out) / "engine.pt")


# --- the recipe trainer over FSDP2 ------------------------------------------------------------------------------

def colour_example(processor):
    """Trainer.make_example for a tiny model dir: a noisy colour swatch (56 x 56 .. 84 x 56) and its colour."""
    import numpy as np
    from PIL import Image

    from glmv.train.data import encode_example

    colours = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}

    def make(task: str, index: int, thinking: bool):
        name = sorted(colours)[index % 3]
        if index % 8 in (2, 3):  # text only: in every other micro-batch, rank 1's share holds no image at all
            messages = [{"role": "user", "content": [{"type": "text", "text": f"Say {name}."}]}]
            return encode_example(processor, messages, f"It is {name}.", thinking, task=task)
        rng = np.random.default_rng(index)
        h = 56 + 28 * (index % 2)  # two image sizes: rows hold different numbers of image tokens
        pixels = np.clip(np.array(colours[name]) + rng.integers(-20, 20, (h, 56, 3)), 0, 255).astype(np.uint8)
        messages = [{"role": "user", "content": [{"type": "image", "image": Image.fromarray(pixels)},
                                                 {"type": "text", "text": "What colour is this?"}]}]
        return encode_example(processor, messages, f"It is {name}.", thinking, task=task)
    return make


def trainer_recipe(out: str, steps: int = 3):
    from glmv.train.recipe import Recipe

    return Recipe(stage="sft", out=out, tasks={"colour": 1.0}, steps=steps, batch_size=4, grad_accum=2, lr=3e-3,
                  warmup=1, save_every=2, log_every=1, thinking=0.5, keep_checkpoints=1)


def reference_trainer_losses(model_dir: str, out: str, steps: int = 3) -> list[float]:
    """glmv.train.trainer.Trainer, one process, on the same recipe and data."""
    from glmv.train.trainer import Trainer

    trainer = Trainer(trainer_recipe(out, steps), Path(model_dir), progress=False)
    trainer.make_example = colour_example(trainer.processor)
    return trainer.train()


def check_fsdp_trainer(rank: int, world_size: int, model_dir: str, out: str, steps: int = 3, stop_at: int = 2) -> None:
    """FSDPTrainer on the recipe: stopped after `stop_at` steps (checkpointed), then resumed by a new trainer to
    the end. Writes {first, resumed} losses to out/rank{r}.pt."""
    from glmv.distributed.trainer import FSDPTrainer

    from glmv.distributed.trainer import split_rows

    mesh = init_device_mesh("cpu", (world_size,))
    losses = {}
    for name, kw in (("first", dict(stop_after=stop_at)), ("resumed", dict(resume=True))):
        trainer = FSDPTrainer(trainer_recipe(out, steps), Path(model_dir), mesh, progress=False)
        trainer.make_example = colour_example(trainer.processor)
        losses[name] = trainer.train(**kw)
    # how many of this rank's micro-batches held no image (the vision tower idle here, busy on the other rank)
    model = load_model(model_dir, progress=False)
    imageless = 0
    for step in range(steps):
        for micro in range(trainer.recipe.grad_accum):
            batch = trainer.batch(step, micro)
            mine = split_rows(batch, model.token_types(batch["input_ids"]), rank, world_size, 4)
            imageless += mine["pixel_values"] is None
    losses["imageless_micro_batches"] = imageless
    torch.save(losses, Path(out) / f"rank{rank}.pt")
    dist.barrier()
