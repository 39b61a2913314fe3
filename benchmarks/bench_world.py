"""Samples per second of every world task's generator, single-threaded (one core; nothing here is parallel).

Run: python benchmarks/bench_world.py [--n 100] [--tasks a,b]. Each rate is the best of 3 passes over the
same n train indices, after one warm-up sample (font loading), so a busy machine affects it less.
"""

from __future__ import annotations

import argparse
import time

from glmv.world import TASKS, sample


def rate(task: str, n: int, repeats: int = 3) -> float:
    sample(task, "train", 0)  # warm-up: fonts load on first use
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(n):
            sample(task, "train", i)
        best = min(best, time.perf_counter() - start)
    return n / best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100, help="samples per pass (default 100)")
    parser.add_argument("--tasks", default="all", help="comma-separated task names (default all)")
    args = parser.parse_args()
    tasks = sorted(TASKS, key=lambda t: (TASKS[t].family, t)) if args.tasks == "all" else args.tasks.split(",")
    print(f"{'task':<18} {'family':<10} {'samples/s':>10}")
    for t in tasks:
        print(f"{t:<18} {TASKS[t].family:<10} {rate(t, args.n):>10.1f}", flush=True)


if __name__ == "__main__":
    main()
