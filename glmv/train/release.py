"""Evaluate every stage of a nano run and install the last one as the bundled model, with its card.

    python -m glmv.train.release runs/nano [--limit 50] [--bundle]

Reads RUN/{warmup,pretrain,video,sft,rl}/final, evaluates each on the world's test split (results in
RUN/eval-STAGE.json; the RL stage also on the validation split's mean reward against SFT), writes the card.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from glmv.train.recipe import Recipe

STAGES = [("warmup", "nano_warmup"), ("pretrain", "nano_pretrain"), ("video", "nano_video"), ("sft", "nano_sft"),
          ("rl", "nano_rl")]
EVAL_TASKS = ["color", "shape", "count", "ground", "ocr", "chart_json", "video_order", "caption", "chart_value",
              "count_sum", "count_more"]
RECIPES = Path(__file__).parent / "recipes"


def evaluate_stage(model_dir: Path, out: Path, limit: int, tasks: list[str] = EVAL_TASKS, split: str = "test",
                   thinking: bool = False) -> dict:
    """Greedy evaluation of one checkpoint (cached in `out`)."""
    from glmv.world.evaluate import evaluate, glmv_backend

    if out.is_file():
        return json.loads(out.read_text())
    results = evaluate(glmv_backend(str(model_dir), max_tokens=96, enable_thinking=thinking, batch_size=16),
                       tasks, split=split, limit=limit)
    out.write_text(json.dumps(results))
    return results


def rl_gain(run: Path, limit: int) -> str:
    """Mean reward of the SFT and RL models on the validation split of the RL recipe's tasks (thinking on)."""
    tasks = list(Recipe.load(RECIPES / "nano_rl.yaml").tasks)
    rows = []
    for name in ("sft", "rl"):
        r = evaluate_stage(run / name / "final", run / f"valreward-{name}.json", limit, tasks, "validation", True)
        rows.append((name, r["reward"]))
    return ("Mean reward on the validation split of the RL tasks (thinking on, greedy): "
            + ", ".join(f"{name} {value:.3f}" for name, value in rows) + ".")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--limit", type=int, default=50)
    ap.add_argument("--bundle", action="store_true", help="install the last stage as glmv/assets/nano")
    ap.add_argument("--notes", default="", help="a file whose text ends the card")
    args = ap.parse_args(argv)
    from glmv.model_path import BUNDLED
    from glmv.train.bundle import bundle
    from glmv.train.card import write_card

    done = [(name, recipe) for name, recipe in STAGES if (args.run / name / "final" / "config.json").is_file()]
    results, stages = {}, []
    for name, recipe in done:
        final = args.run / name / "final"
        results[name] = evaluate_stage(final, args.run / f"eval-{name}.json", args.limit)
        times = json.loads((args.run / "times.json").read_text()) if (args.run / "times.json").is_file() else {}
        stages.append((name, Recipe.load(RECIPES / f"{recipe}.yaml"), args.run / name, times.get(name)))
    if args.bundle and done:
        last = args.run / done[-1][0] / "final"
        bundle(last, BUNDLED)
        # the numbers behind the card travel with the model: per-stage evaluations and training logs
        (BUNDLED / "eval").mkdir()
        for f in sorted(args.run.glob("eval-*.json")) + sorted(args.run.glob("valreward-*.json")):
            shutil.copy(f, BUNDLED / "eval" / f.name)
        (BUNDLED / "logs").mkdir()
        for name, _ in done:
            shutil.copy(args.run / name / "log.jsonl", BUNDLED / "logs" / f"{name}.jsonl")
        notes = Path(args.notes).read_text() if args.notes else ""
        if {"sft", "rl"} <= {name for name, _ in done}:
            notes = rl_gain(args.run, args.limit) + "\n\n" + notes
        write_card(BUNDLED / "README.md", BUNDLED, stages, results, notes)


if __name__ == "__main__":
    main()
