"""`glmv eval`: score a model (glmv's engine or an OpenAI-compatible server) on the world's tasks and on
multiple-choice benchmark files."""

from __future__ import annotations

import argparse

from glmv.commands._common import DEVICE_HELP


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval", help="score a model on the world's tasks",
        description="Score a model on the procedural world's tasks (greedy decoding) and print a table.\n\n"
                    "examples:\n  glmv eval --tasks count,ocr,gui_action --limit 50\n"
                    "  glmv eval --endpoint http://localhost:8000 --served-model glm-4.5v --tasks all --out r.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--model", "-m", default=None,
                       help="checkpoint directory for glmv's engine; default: the bundled nano GLM-V")
    where.add_argument("--endpoint", default=None, help="root URL of an OpenAI-compatible server instead")
    p.add_argument("--api-key", default=None, help="bearer token for --endpoint")
    p.add_argument("--served-model", default="default", help="the `model` field sent to --endpoint")
    p.add_argument("--tasks", default=None,
                   help="comma-separated task names or all (the default, unless --mc or --retrieval is given)")
    p.add_argument("--mc", action="append", default=[], help="a multiple-choice JSONL/parquet file (repeatable)")
    p.add_argument("--split", default="test",
                   help="test (default), validation, train, or heldout (a look and wordings training never uses)")
    p.add_argument("--limit", type=int, default=50, help="samples per task (default 50)")
    p.add_argument("--max-tokens", type=int, default=256, help="most tokens per answer (default 256)")
    p.add_argument("--batch-size", type=int, default=8, help="samples per engine batch / concurrent requests")
    p.add_argument("--device", default="auto", help="for --model: " + DEVICE_HELP)
    p.add_argument("--dtype", default=None, help="for --model: float32, bfloat16 or float16")
    think = p.add_mutually_exclusive_group()
    think.add_argument("--think", dest="think", action="store_true", default=None, help="let the model reason first")
    think.add_argument("--no-think", dest="think", action="store_false", help="answer directly (/nothink)")
    p.add_argument("--retrieval", type=int, default=0, metavar="SETS",
                   help="also measure image -> caption recall@1 on SETS retrieval sets of 8 through the model's "
                        "embeddings and likelihood scores (glmv's engine only)")
    p.add_argument("--out", "-o", default=None, help="write the results (every output and score) as JSON here")
    p.add_argument("--chart", default=None, help="write a bar chart of the scores (PNG) here")
    p.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    import json

    from glmv.errors import InputError
    from glmv.world import SPLITS, TASKS
    from glmv.world.evaluate import (
        bar_chart,
        evaluate,
        glmv_backend,
        load_multiple_choice,
        openai_backend,
        table,
    )

    names = args.tasks or ("" if args.mc or args.retrieval else "all")  # --mc / --retrieval alone: just those
    tasks = sorted(TASKS) if names == "all" else [t for t in names.split(",") if t]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:  # before loading a model: a typo should not cost a minute
        raise InputError(f"unknown task(s) {', '.join(unknown)}; see `glmv world list`")
    if args.split not in SPLITS:
        raise InputError(f"unknown split {args.split!r}; use one of {', '.join(SPLITS)}")
    benches = tasks + [load_multiple_choice(p, limit=args.limit) for p in args.mc]
    if not benches and not args.retrieval:
        raise InputError("nothing to evaluate: give --tasks, --mc and/or --retrieval")
    if args.retrieval and args.endpoint:
        raise InputError("--retrieval runs on glmv's engine: give --model (or nothing, for the bundled model)")
    if args.retrieval:
        return _eval_retrieval(args, benches)
    if args.endpoint:
        answer = openai_backend(args.endpoint, args.served_model, args.api_key, args.max_tokens, args.think,
                                concurrency=args.batch_size)
    else:
        answer = glmv_backend(args.model, args.max_tokens, args.think, args.batch_size, args.device, args.dtype)
    results = evaluate(answer, benches, args.split, args.limit)
    print(table(results))
    _write(args, results)
    if args.chart:
        bar_chart(results, args.chart)
    return 0


def _eval_retrieval(args: argparse.Namespace, benches: list) -> int:
    """The world's tasks (if any) and retrieval recall@1 with one loaded model."""
    from glmv.engine.llm import LLM
    from glmv.world.evaluate import evaluate, llm_backend, table
    from glmv.world.retrieval import evaluate_retrieval

    llm = LLM(args.model, dtype=args.dtype, device=args.device)
    results = {}
    if benches:
        results = evaluate(llm_backend(llm, args.max_tokens, args.think, args.batch_size), benches, args.split,
                           args.limit)
        print(table(results))
    results["retrieval"] = evaluate_retrieval(llm, args.split, args.retrieval)
    r = results["retrieval"]
    print(f"retrieval ({r['sets']} sets of {r['candidates']}, chance {r['chance']:.3f}): recall@1 by embedding "
          f"{r['embed_recall_at_1']:.3f}, by likelihood {r['score_recall_at_1']:.3f}")
    _write(args, results)
    return 0


def _write(args: argparse.Namespace, results: dict) -> None:
    if args.out:
        import json

        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
