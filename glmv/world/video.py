"""Short videos of shapes appearing, disappearing and moving: event order, timing, counting, direction."""

from __future__ import annotations

import numpy as np
from PIL import Image

from glmv.world import scoring
from glmv.world.core import register
from glmv.world.draw import COLOURS, SHAPES, Painter, boxed, canvas
from glmv.world.scenes import name
from glmv.world.style import Style

FPS = 2.0
SIZE = 112


def quadrant(slot: int) -> tuple[float, float, float, float]:
    """The box of a shape in one of the four quadrants of a frame (0 top left .. 3 bottom right)."""
    x, y = (slot % 2) * SIZE / 2 + 8, (slot // 2) * SIZE / 2 + 8
    return x, y, x + SIZE / 2 - 16, y + SIZE / 2 - 16


def appearing(rng: np.random.Generator, style: Style, n: int):
    """Shapes appearing one after another (one every 1-2 s); returns frames and events [(second, object)]."""
    pairs = [(c, s) for c in COLOURS for s in SHAPES]
    kinds = [pairs[i] for i in rng.permutation(len(pairs))[:n]]
    turns = [style.turn() for _ in kinds]  # once per shape: it keeps its angle from frame to frame
    background = canvas(rng, style, SIZE, SIZE)
    slots = rng.permutation(4)[:n]  # four quadrants, so shapes never overlap
    times, t = [], 0
    for _ in range(n):
        t += int(rng.integers(1, 3))
        times.append(t)
    frames, events = [], []
    length = times[-1] + 1
    for f in range(int(length * FPS)):
        second = f / FPS
        img = background.copy()
        paint = Painter(img, style)
        for (colour, shape), slot, start, angle in zip(kinds, slots, times, turns):
            if second >= start:
                paint.shape(shape, quadrant(slot), COLOURS[colour], angle=angle)
        frames.append(img)
    events = [(start, {"colour": c, "shape": s}) for (c, s), start in zip(kinds, times)]
    return frames, events


@register("video_order", "video", lambda out, s: scoring.order_match(out, s.truth["order"]),
          lambda out, s: scoring.order_reward(out, s.truth["order"]))
def video_order(rng, style):
    frames, events = appearing(rng, style, int(rng.integers(2, 4)))
    order = [name(o) for _, o in events]
    return dict(frames=frames, fps=FPS, prompt=style.ask("video_order"), target=", ".join(order),
                truth={"order": order, "events": [(t, name(o)) for t, o in events]})


@register("video_time", "video", lambda out, s: scoring.numeric(out, s.truth["answer"], tolerance=1))
def video_time(rng, style):
    frames, events = appearing(rng, style, int(rng.integers(1, 4)))
    t, o = events[rng.integers(len(events))]
    return dict(frames=frames, fps=FPS, prompt=style.ask("video_time", object=name(o)), target=boxed(str(t)),
                truth={"answer": t})


@register("video_count", "video", lambda out, s: scoring.numeric(out, s.truth["count"]))
def video_count(rng, style):
    frames, events = appearing(rng, style, int(rng.integers(1, 5)))
    return dict(frames=frames, fps=FPS, prompt=style.ask("video_count"), target=boxed(str(len(events))),
                truth={"count": len(events)})


@register("video_motion", "video", lambda out, s: scoring.text_match(out, s.truth["answer"]))
def video_motion(rng, style):
    direction = ("left", "right", "up", "down")[rng.integers(4)]
    colour, shape = list(COLOURS)[rng.integers(len(COLOURS))], SHAPES[rng.integers(len(SHAPES))]
    angle = style.turn()
    background = canvas(rng, style, SIZE, SIZE)
    side, frames = 28, []
    start = rng.uniform(10, 20)
    dx, dy = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}[direction]
    for f in range(6):
        step = f * 11
        x = (SIZE - side - start - step) if dx < 0 else (start + step) if dx > 0 else SIZE / 2 - side / 2
        y = (SIZE - side - start - step) if dy < 0 else (start + step) if dy > 0 else SIZE / 2 - side / 2
        img = background.copy()
        Painter(img, style).shape(shape, (x, y, x + side, y + side), COLOURS[colour], angle=angle)
        frames.append(img)
    return dict(frames=frames, fps=FPS, prompt=style.ask("video_motion", object=f"{colour} {shape}"),
                target=boxed(direction),
                truth={"answer": direction})


def comings_and_goings(rng: np.random.Generator, style: Style, n: int):
    """n shapes in distinct quadrants; each is there from the start or appears at a whole second, and may later
    disappear. Every event has its own second (so their order is unambiguous) and there are at least two.
    Returns frames and events [(second, object name, "appears" | "disappears")], sorted by time."""
    pairs = [(c, s) for c in COLOURS for s in SHAPES]
    kinds = [pairs[i] for i in rng.permutation(len(pairs))[:n]]
    turns = [style.turn() for _ in kinds]
    background = canvas(rng, style, SIZE, SIZE)
    slots = rng.permutation(4)[:n]
    while True:
        seconds = iter(int(t) for t in rng.permutation(np.arange(1, 7)))  # distinct event seconds
        spans = []  # [start, end) of visibility; end None = stays to the end
        for _ in kinds:
            start = 0 if rng.integers(2) else next(seconds)
            end = next(seconds) if rng.integers(2) else None
            if end is not None and end < start:  # it cannot go before it comes: it was there from the start
                start = 0
            spans.append((start, end))
        events = sorted([(a, f"{c} {s}", "appears") for (c, s), (a, _) in zip(kinds, spans) if a] +
                        [(e, f"{c} {s}", "disappears") for (c, s), (_, e) in zip(kinds, spans) if e])
        if len(events) >= 2:
            break
    frames = []
    for f in range(int((events[-1][0] + 1) * FPS)):
        second = f / FPS
        img = background.copy()
        paint = Painter(img, style)
        for (colour, shape), slot, (start, end), angle in zip(kinds, slots, spans, turns):
            if start <= second and (end is None or second < end):
                paint.shape(shape, quadrant(slot), COLOURS[colour], angle=angle)
        frames.append(img)
    return frames, events


def event_text(event: tuple[int, str, str]) -> str:
    return f"{event[0]}s: {event[1]} {event[2]}"


@register("video_events", "video", lambda out, s: scoring.order_match(out, s.truth["order"]),
          lambda out, s: scoring.order_reward(out, s.truth["order"]))
def video_events(rng, style):
    """Every appearance and disappearance with its second, in order ("2s: red circle appears, 4s: ...")."""
    frames, events = comings_and_goings(rng, style, int(rng.integers(2, 4)))
    order = [event_text(e) for e in events]
    return dict(frames=frames, fps=FPS, prompt=style.ask("video_events"),
                target=", ".join(order), truth={"order": order, "events": events})


@register("video_disappear", "video", lambda out, s: scoring.numeric(out, s.truth["answer"], tolerance=1))
def video_disappear(rng, style):
    """When a named shape disappears (tolerance 1 s, like video_time)."""
    while True:
        frames, events = comings_and_goings(rng, style, int(rng.integers(2, 4)))
        gone = [e for e in events if e[2] == "disappears"]
        if gone:
            break
    t, obj, _ = gone[rng.integers(len(gone))]
    return dict(frames=frames, fps=FPS, prompt=style.ask("video_disappear", object=obj), target=boxed(str(t)),
                truth={"answer": t, "events": events})


def write_video(frames: list[Image.Image], fps: float, path: str) -> None:
    """Encode frames as an H.264 (or MPEG-4) file with PyAV, for benchmarks and servers that take files."""
    import av

    with av.open(path, "w") as container:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        stream = container.add_stream(codec, rate=int(fps))
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = "yuv420p"
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_image(img)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
