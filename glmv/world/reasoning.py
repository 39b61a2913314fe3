"""Visual reasoning with verifiable answers, in the thinking format: a short trace, then a boxed answer."""

from __future__ import annotations

from glmv.world import scoring
from glmv.world.core import register
from glmv.world.draw import boxed
from glmv.world.scenes import scene


def objects_of(n: int, colour: str) -> str:
    return f"{n} {colour} object{'' if n == 1 else 's'}"


def _colour_counts(objects: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for o in objects:
        counts[o["colour"]] = counts.get(o["colour"], 0) + 1
    return counts


@register("count_sum", "reasoning", lambda out, s: scoring.numeric(out, s.truth["answer"]), thinking=True)
def count_sum(rng):
    """Count two colours and add them."""
    img, objects = scene(rng, int(rng.integers(2, 7)), distinct=False, size_range=(0.14, 0.22))
    counts = _colour_counts(objects)
    colours = sorted(counts)
    a = colours[rng.integers(len(colours))]
    others = [c for c in ("red", "green", "blue", "yellow", "purple", "orange") if c != a]
    b = others[rng.integers(len(others))]
    na, nb = counts.get(a, 0), counts.get(b, 0)
    trace = f"I count {objects_of(na, a)} and {objects_of(nb, b)}. {na} + {nb} = {na + nb}."
    return dict(image=img, prompt=f"How many {a} and {b} objects are there in total?",
                target=f"<think>{trace}</think>{boxed(str(na + nb))}", truth={"answer": na + nb, "trace": trace})


@register("count_more", "reasoning", lambda out, s: scoring.text_match(out, s.truth["answer"]), thinking=True)
def count_more(rng):
    """Which of two colours has more objects (never a tie)."""
    while True:
        img, objects = scene(rng, int(rng.integers(3, 7)), distinct=False, size_range=(0.14, 0.22))
        counts = _colour_counts(objects)
        if len(counts) >= 2:
            a, b = sorted(counts)[:2]
            if counts[a] != counts[b]:
                break
    winner = a if counts[a] > counts[b] else b
    trace = f"I count {objects_of(counts[a], a)} and {objects_of(counts[b], b)}. {max(counts[a], counts[b])} is more."
    return dict(image=img, prompt=f"Are there more {a} or {b} objects?",
                target=f"<think>{trace}</think>{boxed(winner)}", truth={"answer": winner, "trace": trace})
