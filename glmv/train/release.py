"""Evaluate every stage of a nano run and install the last one as the bundled model, with its card.

    python -m glmv.train.release runs/nano [--limit 50] [--bundle]

Reads RUN/{vision,warmup,pretrain,video,sft,rl}/final. Each LM stage is evaluated on the world's test split
(plain samples) and on its heldout split (a look and a wording no training sample had): RUN/eval-STAGE.json and
RUN/heldout-STAGE.json; the RL stage also on the validation split's mean reward against SFT. The vision
tower is probed (glmv.train.probe) at random init, after the vision stage and in the last stage's model
(RUN/probe.json). Then the card is written.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from glmv.train.recipe import Recipe

STAGES = [("vision", "nano_vision"), ("warmup", "nano_warmup"), ("pretrain", "nano_pretrain"), ("video", "nano_video"), ("sft", "nano_sft"),
          ("rl", "nano_rl")]
EVAL_TASKS = ["color", "shape", "count", "ground", "ocr", "chart_json", "video_order", "caption", "chart_value",
              "count_sum", "count_more"]
RECIPES = Path(__file__).parent / "recipes"
SPLITS = {"test": "eval", "heldout": "heldout"}  # evaluated split -> file prefix in the run directory


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


def probe_run(run: Path, last: str, n: int) -> dict:
    """Linear probes of the random tower, the vision stage's and the last stage's (cached in RUN/probe.json)."""
    from glmv.train.probe import probe_models

    out = run / "probe.json"
    if not out.is_file():
        models = {"random init": run / "vision" / "init", "vision": run / "vision" / "final",
                  last: run / last / "final"}
        results = probe_models([str(p) for p in models.values()], n)
        names = {str(p): name for name, p in models.items()}
        out.write_text(json.dumps({label: {names[m]: v for m, v in row.items()} for label, row in results.items()}))
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--limit", type=int, default=50)
    ap.add_argument("--bundle", action="store_true", help="install the last stage as glmv/assets/nano")
    ap.add_argument("--notes", default="", help="a file whose text ends the card")
    ap.add_argument("--probe-n", type=int, default=500, help="images per vision-probe label")
    args = ap.parse_args(argv)
    from glmv.model_path import BUNDLED
    from glmv.train.bundle import bundle
    from glmv.train.card import write_card

    done = [(name, recipe) for name, recipe in STAGES if (args.run / name / "final" / "config.json").is_file()]
    results: dict[str, dict[str, dict]] = {split: {} for split in SPLITS}
    stages = []
    times = json.loads((args.run / "times.json").read_text()) if (args.run / "times.json").is_file() else {}
    for name, recipe_name in done:
        recipe = Recipe.load(RECIPES / f"{recipe_name}.yaml")
        stages.append((name, recipe, args.run / name, times.get(name)))
        if recipe.stage == "vision":
            continue  # no language model yet: the probes below measure this stage
        for split, prefix in SPLITS.items():
            results[split][name] = evaluate_stage(args.run / name / "final", args.run / f"{prefix}-{name}.json",
                                                  args.limit, split=split)
    probes = probe_run(args.run, done[-1][0], args.probe_n) if done and done[0][0] == "vision" else None
    if args.bundle and done:
        last = args.run / done[-1][0] / "final"
        bundle(last, BUNDLED)
        # the numbers behind the card travel with the model: per-stage evaluations and training logs
        (BUNDLED / "eval").mkdir()
        for f in [*sorted(args.run.glob("eval-*.json")), *sorted(args.run.glob("heldout-*.json")),
                  *sorted(args.run.glob("valreward-*.json")), *sorted(args.run.glob("probe.json"))]:
            shutil.copy(f, BUNDLED / "eval" / f.name)
        (BUNDLED / "logs").mkdir()
        for name, _ in done:
            shutil.copy(args.run / name / "log.jsonl", BUNDLED / "logs" / f"{name}.jsonl")
        notes = Path(args.notes).read_text() if args.notes else ""
        if {"sft", "rl"} <= {name for name, _ in done}:
            notes = rl_gain(args.run, args.limit) + "\n\n" + notes
        write_card(BUNDLED / "README.md", BUNDLED, stages, results, notes, probes)


if __name__ == "__main__":
    main()
