"""Carrying out GUI actions: the Executor protocol, and a dry run that draws each action on the screenshot
instead of touching a real screen (to see what a model would do, and to test the mapping to pixels)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Protocol

from PIL import Image, ImageDraw, ImageFont

from glmv.agent.actions import (
    Action,
    Answer,
    Box,
    Click,
    Drag,
    Finish,
    Hover,
    KeyPress,
    LongPress,
    Mark,
    OpenApp,
    Point,
    Scroll,
    Swipe,
    TypeText,
    point_of,
    screen_point,
)

INK = (255, 0, 255)  # magenta: rare in screenshots, so the marks stand out
LABEL_INK, LABEL_PAPER = (255, 255, 255), (0, 0, 0)


class Executor(Protocol):
    """Whatever carries actions out on a screen (a device bridge, a VM, a dry run). Actions arrive as parsed,
    in thousandths; the executor knows its screen's size and maps them itself (Action.to_pixels)."""

    def execute(self, action: Action) -> None: ...


def describe(action: Action) -> str:
    """One line for people: the verb and its non-geometric arguments."""
    words = [action.name]
    target = getattr(action, "target", None)
    if isinstance(target, Mark):
        words.append(f"[{target.label}]")
    if isinstance(action, (Scroll, Swipe)):
        words.append(action.direction + (f" x{action.steps}" if isinstance(action, Scroll) and action.steps else ""))
    if isinstance(action, TypeText):
        words.append(repr(action.text))
    if isinstance(action, KeyPress):
        words.append("+".join(action.keys))
    if isinstance(action, OpenApp):
        words.append(action.app)
    if isinstance(action, Finish):
        words.append(action.status)
    if isinstance(action, Answer):
        words.append(repr(action.text))
    return " ".join(words)


class DryRunExecutor:
    """Draws every executed action onto a copy of the screenshot: a crosshair at a click (a second ring for a
    double click), a ring at a hover, a filled dot at a long press, the element's box when the action gave one,
    an arrow for a drag, scroll or swipe, and a label with the verb; actions with no place on screen (keys,
    typing into the focused field, navigation, answers, set-of-marks targets) are listed top left."""

    def __init__(self, screenshot: Image.Image):
        self.image = screenshot.convert("RGB")  # convert copies: the caller's screenshot stays as it was
        self.draw = ImageDraw.Draw(self.image)
        self.font = ImageFont.load_default()
        self.radius = max(4, min(self.image.size) // 40)
        self.width = max(1, self.radius // 3)
        self.listed = 0  # lines in the top-left list so far

    def execute(self, action: Action) -> None:
        a = action if action.pixels else action.to_pixels(*self.image.size)
        target = getattr(a, "target", None)
        if isinstance(target, Box):
            self.draw.rectangle((target.x1, target.y1, target.x2, target.y2), outline=INK, width=self.width)
        at = screen_point(action, *self.image.size)
        if isinstance(a, Drag):
            start, end = point_of(a.start), point_of(a.end)
            self._ring(start, self.radius)
            self._arrow(start, end)
            self._label(start, describe(a))
        elif isinstance(a, (Scroll, Swipe)):
            at = at or Point(self.image.width // 2, self.image.height // 2)  # the whole window / screen
            self._arrow(at, self._towards(at, a.direction, target))
            self._label(at, describe(a))
        elif at is None:
            self._list(describe(a))
        else:
            if isinstance(a, Click):
                self._crosshair(at)
                if a.clicks > 1:
                    self._ring(at, self.radius * 1.6)
            elif isinstance(a, LongPress):
                r = self.radius * 0.6
                self.draw.ellipse((at.x - r, at.y - r, at.x + r, at.y + r), fill=INK)
            elif isinstance(a, Hover):
                self._ring(at, self.radius)
            self._label(at, describe(a))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.image.save(path)
        return path

    # --- marks ------------------------------------------------------------------------------------------------
    def _ring(self, at: Point, r: float) -> None:
        self.draw.ellipse((at.x - r, at.y - r, at.x + r, at.y + r), outline=INK, width=self.width)

    def _crosshair(self, at: Point) -> None:
        r = self.radius
        self._ring(at, r)
        self.draw.line((at.x - 2 * r, at.y, at.x + 2 * r, at.y), fill=INK, width=self.width)
        self.draw.line((at.x, at.y - 2 * r, at.x, at.y + 2 * r), fill=INK, width=self.width)

    def _towards(self, at: Point, direction: str, target: object) -> Point:
        """The arrow's head: a quarter of the scrolled region (or screen) away from `at` in `direction`."""
        w, h = ((target.x2 - target.x1), (target.y2 - target.y1)) if isinstance(target, Box) else self.image.size
        dx, dy = {"up": (0, -h / 4), "down": (0, h / 4), "left": (-w / 4, 0), "right": (w / 4, 0)}[direction]
        return Point(at.x + dx, at.y + dy)

    def _arrow(self, start: Point, end: Point) -> None:
        self.draw.line((start.x, start.y, end.x, end.y), fill=INK, width=self.width)
        angle, head = math.atan2(end.y - start.y, end.x - start.x), self.radius * 1.2
        wings = [(end.x - head * math.cos(angle + s), end.y - head * math.sin(angle + s)) for s in (0.5, -0.5)]
        self.draw.polygon([(end.x, end.y), *wings], fill=INK)

    def _label(self, at: Point, text: str) -> None:
        """Text beside a mark, on a dark plate so it reads on any screen, kept inside the image."""
        left, top, right, bottom = self.draw.textbbox((0, 0), text, font=self.font)
        x = min(at.x + self.radius * 2 + 2, self.image.width - (right - left) - 2)
        y = max(at.y - self.radius * 2 - (bottom - top) - 2, 0)
        self.draw.rectangle((x - 1, y - 1, x + right - left + 1, y + bottom + 1), fill=LABEL_PAPER)
        self.draw.text((x - left, y), text, fill=LABEL_INK, font=self.font)

    def _list(self, text: str) -> None:
        left, top, right, bottom = self.draw.textbbox((0, 0), text, font=self.font)
        y = 2 + self.listed * (bottom + 4)
        self.draw.rectangle((1, y - 1, 3 + right - left, y + bottom + 1), fill=LABEL_PAPER)
        self.draw.text((2 - left, y), text, fill=LABEL_INK, font=self.font)
        self.listed += 1
