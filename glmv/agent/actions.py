"""Typed GUI-agent actions: one class per kind of thing an agent does, whichever action space (mobile JSON,
desktop function calls, web set-of-marks) the model wrote it in; `name` keeps the verb it used.

Geometry is in thousandths of the screenshot (GLM-V's convention, see glmv.agent.parse) until `to_pixels`
maps it onto a width x height screen.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Literal, TypeVar

# Coordinates are thousandths of the screenshot's width / height: "a ratio (‰) of the screenshot width or height"
# (zai-org/GLM-V examples/gui-agent/glm-45v/agent.md). The reference shows no mapping to pixels; v / 1000 * size
# is what ‰ means, and what glmv.engine.outputs.boxes_to_pixels does for grounding boxes.
SCALE = 1000


@dataclass(frozen=True)
class Point:
    x: float
    y: float

    def to_pixels(self, width: int, height: int) -> Point:
        """In pixels, kept inside the screen: a pixel index runs to width - 1."""
        return Point(_clamp(round(self.x / SCALE * width), width - 1),
                     _clamp(round(self.y / SCALE * height), height - 1))


@dataclass(frozen=True)
class Box:
    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def centre(self) -> Point:
        return Point((self.x1 + self.x2) / 2, (self.y1 + self.y2) / 2)

    def as_list(self) -> list[float]:
        return [self.x1, self.y1, self.x2, self.y2]

    def to_pixels(self, width: int, height: int) -> Box:
        """In pixels, clamped to the screen, corners ordered whichever way the model wrote them (as
        glmv.engine.outputs.boxes_to_pixels does)."""
        xs = sorted(_clamp(round(v / SCALE * width), width) for v in (self.x1, self.x2))
        ys = sorted(_clamp(round(v / SCALE * height), height) for v in (self.y1, self.y2))
        return Box(xs[0], ys[0], xs[1], ys[1])


@dataclass(frozen=True)
class Mark:
    """A set-of-marks element number (the web space labels elements on the screenshot instead of giving
    coordinates): where it is on screen only the page that drew the labels knows."""

    label: int


Target = Point | Box | Mark


def _clamp(v: int, top: int) -> int:
    return min(max(v, 0), top)


def point_of(target: Target | None) -> Point | None:
    """Where a pointer goes for a target: a box's centre, a point itself; None for a mark or no target."""
    if isinstance(target, Box):
        return target.centre
    return target if isinstance(target, Point) else None


def screen_point(action: Action, width: int, height: int) -> Point | None:
    """The pixel a pointer goes to for `action` on a width x height screen: its target point, or its target
    box's centre (the mobile space names boxes; the reference does not say where in the box to tap, and the
    centre is the usual reading); None for an action without a place on screen or a set-of-marks target."""
    at = point_of(getattr(action, "target", None))
    return at if at is None or action.pixels else at.to_pixels(width, height)


A = TypeVar("A", bound="Action")


@dataclass(frozen=True, kw_only=True)
class Action:
    name: str  # the verb as written in its action space: "left_double_click", "keyboard_enter", "GoBack"
    pixels: bool = False  # geometry is in screen pixels (a to_pixels copy), not thousandths

    def to_pixels(self: A, width: int, height: int) -> A:
        """A copy with every point and box in pixels of a width x height screen."""
        if self.pixels:
            raise ValueError(f"{self.name} is already in pixels")
        moved = {f.name: getattr(self, f.name).to_pixels(width, height) for f in fields(self)
                 if isinstance(getattr(self, f.name), (Point, Box))}
        return replace(self, pixels=True, **moved)

    def to_dict(self) -> dict:
        return {"type": type(self).__name__, **asdict(self)}


@dataclass(frozen=True, kw_only=True)
class Click(Action):
    target: Target
    button: Literal["left", "right", "middle"] = "left"
    clicks: int = 1
    element: str | None = None  # the model's description of what it clicks (desktop `element_info`)


@dataclass(frozen=True, kw_only=True)
class LongPress(Action):
    target: Target


@dataclass(frozen=True, kw_only=True)
class Hover(Action):
    target: Target
    element: str | None = None


@dataclass(frozen=True, kw_only=True)
class Drag(Action):
    start: Point | Box
    end: Point | Box
    element: str | None = None


@dataclass(frozen=True, kw_only=True)
class Scroll(Action):
    """The mouse wheel: `direction` is where the view moves (the opposite of a swipe's finger)."""

    direction: Literal["up", "down"]
    target: Target | None = None  # None: the whole window
    steps: int | None = None  # wheel clicks; the desktop space's default is 5
    element: str | None = None


@dataclass(frozen=True, kw_only=True)
class Swipe(Action):
    """A finger gesture: `direction` is where the finger moves ("up" reveals what is below)."""

    direction: Literal["up", "down", "left", "right"]
    target: Box | None = None  # None: the whole screen


@dataclass(frozen=True, kw_only=True)
class TypeText(Action):
    text: str
    target: Target | None = None  # None: the focused field (desktop `type`)
    override: bool | None = None  # mobile `input_text`: clear the field first


@dataclass(frozen=True, kw_only=True)
class KeyPress(Action):
    keys: tuple[str, ...]  # pressed together, as "ctrl+c" names them


@dataclass(frozen=True, kw_only=True)
class Navigate(Action):
    to: Literal["home", "back", "bing"]


@dataclass(frozen=True, kw_only=True)
class OpenApp(Action):
    app: str


@dataclass(frozen=True, kw_only=True)
class Wait(Action):
    pass


@dataclass(frozen=True, kw_only=True)
class Finish(Action):
    status: Literal["complete", "infeasible"]


@dataclass(frozen=True, kw_only=True)
class Answer(Action):
    text: str
