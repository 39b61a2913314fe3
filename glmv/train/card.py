"""The nano model's card: architecture and size, the recipe of every stage (steps, data mix, time, final loss or
reward), the per-stage evaluation tables on the world's test and held-out splits and the vision tower's linear
probes, written from the run's own files."""

from __future__ import annotations

import json
from pathlib import Path

from glmv.config import GlmvConfig
from glmv.train.recipe import Recipe

TARGETS = {  # issue N2's acceptance targets, per task (held-out split; the test split at least as good)
    "color": 0.9, "shape": 0.9, "count": 0.8, "ground": 0.7, "ocr": 0.7, "chart_json": 0.6, "video_order": 0.6,
    "caption": 0.5,
}


def _log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def stage_row(name: str, recipe: Recipe, run_dir: Path, seconds: float | None) -> str:
    log = _log(run_dir / "log.jsonl")
    last = log[-1] if log else {}
    metric = f"loss {last['loss']:.3f}" if "loss" in last and recipe.stage != "rl" else \
        f"reward {sum(h['reward'] for h in log[-5:]) / max(len(log[-5:]), 1):.3f} (last 5 steps)" if log else "-"
    mix = ", ".join(f"{t} {w:g}" for t, w in sorted(recipe.tasks.items(), key=lambda kv: -kv[1]))
    if recipe.variety:
        mix += f"; variety {recipe.variety:g}"
    time = f"{seconds / 60:.0f} min" if seconds else "-"
    steps = last.get("step", 0)
    return f"| {name} | {recipe.stage} | {steps} x {recipe.batch_size} | {time} | {metric} | {mix} |"


def eval_table(results: dict[str, dict]) -> str:
    """results: stage name -> evaluate() output (per task 'score'). One column per stage, targets last."""
    stages = list(results)
    tasks = sorted({t for r in results.values() for t in r.get("tasks", {})})
    head = "| task | " + " | ".join(stages) + " | target |"
    lines = [head, "|" + "---|" * (len(stages) + 2)]
    for t in tasks:
        cells = []
        for s in stages:
            row = results[s].get("tasks", {}).get(t)
            cells.append(f"{row['score']:.2f}" if row else "-")
        target = TARGETS.get(t)
        lines.append(f"| {t} | " + " | ".join(cells) + f" | {'>= %.2f' % target if target else ''} |")
    return "\n".join(lines)


def probe_section(probes: dict[str, dict[str, dict]] | None) -> str:
    """probes: label -> model name -> linear_probe() result (RUN/probe.json)."""
    if not probes:
        return ""
    from glmv.train.probe import probe_table

    return f"""## Vision tower (linear probes, glmv.train.probe)
Held-out accuracy of a ridge classifier on the projector's output tokens, pooled per image, on world test images:

{probe_table(probes)}

"""


def _learned(model_dir: Path) -> int:
    """How many ids of the tokenizer are learned BPE tokens (the rest of the embedding's rows below the special
    tokens are unused, as in GLM's own checkpoints)."""
    tok = json.loads((Path(model_dir) / "tokenizer.json").read_text())
    return len(tok["model"]["vocab"]) - len(tok["added_tokens"])


def write_card(path: Path, model_dir: Path, stages: list[tuple[str, Recipe, Path, float | None]],
               results: dict[str, dict[str, dict]], notes: str, probes: dict | None = None) -> None:
    """results: split ("test", "heldout") -> stage name -> evaluate() output."""
    config = GlmvConfig.from_pretrained(model_dir)
    t, v = config.text, config.vision
    size = sum(f.stat().st_size for f in Path(model_dir).glob("*.safetensors"))
    text = f"""# nano GLM-V

A GLM-4.5V-architecture model (model_type `glm4v_moe`) trained from scratch by glmv's own pipeline on glmv's
procedural world, bundled so that glmv works offline. It is a demonstration of the architecture and the
pipeline, not a general model: it knows only the world's tasks.

## Architecture
- decoder: {t.num_hidden_layers} layers of width {t.hidden_size} ({t.first_k_dense_replace} dense, then MoE with {t.n_routed_experts} experts, top-{t.num_experts_per_tok}, {t.n_shared_experts} shared), {t.num_attention_heads} query / {t.num_key_value_heads} KV heads of {t.head_dim}, partial rotary {t.partial_rotary_factor} with mrope sections {t.mrope_section}, vocabulary {t.vocab_size} ids ({_learned(model_dir)} of them BPE tokens learned on the world's text, every digit a token of its own; the GLM special tokens by name at the end)
- vision: {v.depth} blocks of width {v.hidden_size}, {v.patch_size} px patches, 2D rotary, learned {v.image_size // v.patch_size}x{v.image_size // v.patch_size} position table resampled per image, {v.spatial_merge_size}x{v.spatial_merge_size} merge, projector to {v.out_hidden_size}
- weights on disk: {size / 1e6:.1f} MB (bf16; the engine computes in fp32 on CPU)

## Training (glmv train, recipes in glmv/train/recipes/)
| stage | kind | steps x batch | time (2 CPU cores) | final | data mix (task weights) |
|---|---|---|---|---|---|
""" + "\n".join(stage_row(*s) for s in stages) + f"""

## Evaluation (glmv eval, world test split, greedy)
{eval_table(results["test"])}

## Evaluation on the held-out split (glmv eval --split heldout: a look and a wording no training sample had)
{eval_table(results["heldout"])}

{probe_section(probes)}{notes}
"""
    Path(path).write_text(text)
