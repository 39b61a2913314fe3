"""Wall-clock timing for benchmarks and `glmv bench`."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from glmv.errors import GlmvError

# A sample shorter than this many clock ticks is mostly clock noise (and 0 when the work fits within one tick).
MIN_SAMPLE_S = 1000 * time.get_clock_info("perf_counter").resolution
MAX_CALLS_PER_SAMPLE = 100_000  # work that never adds up to MIN_SAMPLE_S is a broken measurement, not a fast one


def median_time(fn: Callable[[], object], repeats: int = 3) -> float:
    """Median seconds of one call of fn over `repeats` samples, after one warm-up call."""

    def call() -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    return median_seconds(call, repeats)


def median_seconds(measure: Callable[[], float], repeats: int = 3) -> float:
    """Median of `repeats` samples of measure() (which does some work and returns the seconds it took), after one
    warm-up call. Work too short for the clock is measured again and again until the calls add up to
    MIN_SAMPLE_S, and a sample is their mean: every result is a true, nonzero time, never a rounding artefact."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    measure()
    return statistics.median(_sample(measure) for _ in range(repeats))


def _sample(measure: Callable[[], float]) -> float:
    total, calls = 0.0, 0
    while total < MIN_SAMPLE_S:
        if calls == MAX_CALLS_PER_SAMPLE:
            raise GlmvError(f"{calls} measurements added up to {total:.3g} s, under the {MIN_SAMPLE_S:.3g} s the "
                            "clock can time: measure a larger piece of work")
        total += measure()
        calls += 1
    return total / calls
