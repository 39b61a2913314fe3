"""A GLM-V GUI-agent answer -> one typed action (glmv.agent.actions).

What the action spaces are, from the official repository zai-org/GLM-V (THUDM/GLM-4.1V-Thinking is the same
history; read at commit 8fc9756), examples/gui-agent/glm-41v/agent.md, glm-41v/gui_agent_41v.py,
glm-45v/agent.md and glm-45v/gui_agent_45v.py.
GLM-4.1V and GLM-4.5V share the three spaces; only the prompts around them differ (glmv.agent.prompts):

- mobile (AndroidWorld): one JSON object after "Action:", `{"action_type": ..., ...}`, inside box tokens in
  GLM-4.5V's answers: status(goal_status complete|infeasible), answer(text), click(box_2d), long_press(box_2d),
  input_text(text, box_2d, override), keyboard_enter, navigate_home, navigate_back,
  swipe(direction up|down|left|right, box_2d optional), open_app(app_name), wait. box_2d is
  [[xmin,ymin,xmax,ymax]], "normalized to 0-999 ... a ratio (‰) of the screenshot width or height". A swipe's
  direction is the finger's, the opposite of a scroll's (agent.md, Recommendations).
- desktop (OSWorld, "Ubuntu"): one Python-style call, in box tokens: left_click / right_click / middle_click /
  hover / left_double_click(start_box='[x,y]', element_info=''), left_drag(start_box, end_box, element_info),
  key(keys='ctrl+c') ("use '+' to connect the keys"; the same prompt's own example writes key(key='ctrl+c'), so
  both are read), type(content=''), scroll(start_box, direction='down/up', step=k, element_info) with step
  defaulting to 5, WAIT(), DONE(), FAIL(). Points are [x,y] in thousandths: "0-999" in GLM-4.5V's prompt,
  "0-1000" in GLM-4.1V's, which also says the box "usually should be the bounding box of a specific target
  element" -- so a four-number start_box is read as a box whose centre is the point.
- web (WebVoyager): set-of-marks text, no coordinates: `Click [N]`, `Type [N]; [text]`,
  `Scroll [N or WINDOW]; [up or down]`, `Wait`, `GoBack`, `Bing`, `ANSWER; <content>text</content>`,
  `Key; [Return]`, after "Action:" and before "Memory_Updated:" (both examples' web parsers expect the reply
  inside <answer>…</answer>; GLM-4.1V's desktop parser does too).

Where the reference parsers look (parse_mobile_response / parse_pc_response / parse_web_response): the boxed
text, else the text after "Action:", else (desktop) the first `name(...)` in the answer. glmv tries the same
places in that order, after dropping any <think> block. Web verbs match with the reference's capitals only:
lower-case "click ..." is prose, not a set-of-marks action.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

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
    Navigate,
    OpenApp,
    Point,
    Scroll,
    Swipe,
    TypeText,
    Wait,
)
from glmv.agent.literals import call_arguments, coordinates, object_at
from glmv.engine.outputs import BOX_CLOSE, BOX_OPEN, parse_reasoning
from glmv.errors import InputError

SPACES = ("mobile", "desktop", "web")
_BOXED = re.compile(re.escape(BOX_OPEN) + r"(.*?)(?:" + re.escape(BOX_CLOSE) + r"|$)", re.S)
_ANSWER_TAG = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.S)
_ACTION_PART = re.compile(r"Action:(.*?)(?:\n\s*Memory(?:_Updated)?:|$)", re.S)


def parse_action(text: str, space: str | None = None) -> Action:
    """The action in a model's answer (reasoning, box tokens, Memory/Reason/Thought parts and all), in the
    given space's form, or in whichever form it is when `space` is None. Raises InputError naming what it saw
    when there is no action, or an action with missing or malformed arguments."""
    if space is not None and space not in SPACES:
        raise InputError(f"unknown action space {space!r}; use one of {', '.join(SPACES)}")
    forms = [_FORMS[space]] if space else list(_FORMS.values())
    for candidate in _candidates(text):
        for form in forms:
            action = form(candidate)
            if action is not None:
                return action
    raise InputError(f"no {space or 'GUI'} action in the model's answer: {_shown(text)}")


def _candidates(text: str) -> Iterator[str]:
    """Where the action may be, most specific first: boxed text (last box first), the Action: part, the whole
    answer."""
    _, content = parse_reasoning(text)
    tagged = _ANSWER_TAG.search(content)
    if tagged:
        content = tagged.group(1)
    yield from reversed(_BOXED.findall(content))
    plain = content.replace(BOX_OPEN, "").replace(BOX_CLOSE, "")
    parts = _ACTION_PART.findall(plain)
    if parts:
        yield parts[-1].strip()
    yield plain.strip()


def _shown(text: str, limit: int = 200) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def _bad(space: str, verb: str, what: str, seen: Any) -> InputError:
    return InputError(f"{space} action {verb} {what}; saw {_shown(str(seen))}")


def _choice(value: Any, allowed: tuple[str, ...], space: str, verb: str, field: str) -> str:
    word = str(value).strip().lower()
    if word not in allowed:
        raise _bad(space, verb, f"needs {field} in {'|'.join(allowed)}", value)
    return word


def _geometry(value: Any, space: str, verb: str, field: str, box_only: bool = False) -> Point | Box:
    try:
        numbers = coordinates(value)
    except (ValueError, TypeError, OverflowError):
        raise _bad(space, verb, f"needs {field} coordinates", value) from None
    if len(numbers) == 4:
        return Box(*numbers)
    if len(numbers) == 2 and not box_only:
        return Point(*numbers)
    raise _bad(space, verb, f"needs {field} as {'[[x1,y1,x2,y2]]' if box_only else '[x,y]'}", value)


# --- mobile: {"action_type": ...} ------------------------------------------------------------------------------
def _mobile_action(obj: dict) -> Action:
    verb = str(obj["action_type"])

    def box() -> Box:
        if "box_2d" not in obj:
            raise _bad("mobile", verb, "needs box_2d", obj)
        return _geometry(obj["box_2d"], "mobile", verb, "box_2d", box_only=True)

    def field(key: str) -> Any:
        if key not in obj:
            raise _bad("mobile", verb, f"needs {key}", obj)
        return obj[key]

    builders: dict[str, Callable[[], Action]] = {
        "click": lambda: Click(name=verb, target=box()),
        "long_press": lambda: LongPress(name=verb, target=box()),
        # override is required by the reference prompt; the world's targets leave it out, so it may be absent
        "input_text": lambda: TypeText(name=verb, text=str(field("text")), target=box(),
                                       override=None if obj.get("override") is None else bool(obj["override"])),
        "keyboard_enter": lambda: KeyPress(name=verb, keys=("enter",)),
        "navigate_home": lambda: Navigate(name=verb, to="home"),
        "navigate_back": lambda: Navigate(name=verb, to="back"),
        "swipe": lambda: Swipe(name=verb, direction=_choice(field("direction"), ("up", "down", "left", "right"),
                                                            "mobile", verb, "direction"),
                               target=box() if obj.get("box_2d") else None),
        "open_app": lambda: OpenApp(name=verb, app=str(field("app_name"))),
        "wait": lambda: Wait(name=verb),
        "status": lambda: Finish(name=verb, status=_choice(field("goal_status"), ("complete", "infeasible"),
                                                           "mobile", verb, "goal_status")),
        "answer": lambda: Answer(name=verb, text=str(field("text"))),
    }
    if verb not in builders:
        raise InputError(f"unknown mobile action_type {verb!r} (the space has {', '.join(builders)}); "
                         f"saw {_shown(str(obj))}")
    return builders[verb]()


def _mobile_form(text: str) -> Action | None:
    for at in (m.start() for m in re.finditer(r"\{", text)):
        if "action_type" not in text[at:]:
            return None  # no object from here on can be an action
        obj = object_at(text, at)
        if isinstance(obj, dict) and "action_type" in obj:
            return _mobile_action(obj)
    return None


# --- desktop: name(key='value', ...) ---------------------------------------------------------------------------
_DESKTOP_VERBS = ("left_click", "right_click", "middle_click", "hover", "left_double_click", "left_drag", "key",
                  "type", "scroll", "WAIT", "DONE", "FAIL")
_CALL = re.compile(r"\b(" + "|".join(_DESKTOP_VERBS) + r")\(")


def _desktop_action(verb: str, kw: dict[str, Any]) -> Action:
    def at(key: str) -> Point | Box:
        if key not in kw:
            raise _bad("desktop", verb, f"needs {key}", kw)
        return _geometry(kw[key], "desktop", verb, key)

    element = str(kw.get("element_info") or "") or None
    if verb in ("left_click", "right_click", "middle_click"):
        return Click(name=verb, target=at("start_box"), button=verb.split("_")[0], element=element)
    if verb == "left_double_click":
        return Click(name=verb, target=at("start_box"), clicks=2, element=element)
    if verb == "hover":
        return Hover(name=verb, target=at("start_box"), element=element)
    if verb == "left_drag":
        return Drag(name=verb, start=at("start_box"), end=at("end_box"), element=element)
    if verb == "key":
        keys = kw.get("keys", kw.get("key"))
        if not keys:
            raise _bad("desktop", verb, "needs keys='a+b'", kw)
        return KeyPress(name=verb, keys=tuple(k.strip() for k in str(keys).split("+") if k.strip()))
    if verb == "type":
        if "content" not in kw:
            raise _bad("desktop", verb, "needs content", kw)
        return TypeText(name=verb, text=str(kw["content"]))
    if verb == "scroll":
        try:
            steps = int(kw.get("step", 5))
        except (TypeError, ValueError):
            raise _bad("desktop", verb, "needs an integer step", kw) from None
        return Scroll(name=verb, target=at("start_box"), steps=steps, element=element,
                      direction=_choice(kw.get("direction"), ("up", "down"), "desktop", verb, "direction"))
    if verb == "WAIT":
        return Wait(name=verb)
    return Finish(name=verb, status="complete" if verb == "DONE" else "infeasible")


def _desktop_form(text: str) -> Action | None:
    call = _CALL.search(text)
    return _desktop_action(call.group(1), call_arguments(text, call.start())) if call else None


# --- web: set-of-marks text -----------------------------------------------------------------------------------
_WEB = re.compile(r"(Click|Type|Scroll|Wait|GoBack|Bing|ANSWER|Key)\b\s*(.*)", re.S)


def _unbracket(text: str) -> str:
    text = text.strip()
    if text.endswith("].") or text.endswith(")."):
        text = text[:-1]  # the reference writes its formats as sentences: "Type [2]; [5$]."
    return text[1:-1].strip() if text[:1] == "[" and text[-1:] == "]" else text


def _web_action(verb: str, rest: str) -> Action:
    head, _, tail = rest.partition(";")
    first = rest.split("\n", 1)[0]

    def mark() -> Mark:
        number = re.fullmatch(r"\d+", _unbracket(head.split("\n", 1)[0]))
        if not number:
            raise _bad("web", verb, "needs an element number [N]", first)
        return Mark(int(number.group()))

    if verb == "Click":
        return Click(name=verb, target=mark())
    if verb == "Type":
        return TypeText(name=verb, target=mark(), text=_unbracket(tail.split("\n", 1)[0]))
    if verb == "Scroll":
        window = _unbracket(head).upper() == "WINDOW"
        return Scroll(name=verb, target=None if window else mark(),
                      direction=_choice(_unbracket(tail.split("\n", 1)[0]), ("up", "down"), "web", verb, "direction"))
    if verb == "Key":
        key = _unbracket(tail.split("\n", 1)[0])
        if not key:
            raise _bad("web", verb, "needs a key: Key; [Return]", first)
        return KeyPress(name=verb, keys=tuple(k.strip() for k in key.split("+") if k.strip()))
    if verb == "ANSWER":
        content = re.search(r"<content>(.*?)(?:</content>|$)", rest, re.S)
        return Answer(name=verb, text=(content.group(1) if content else _unbracket(tail)).strip())
    if verb == "Wait":
        return Wait(name=verb)
    return Navigate(name=verb, to="back" if verb == "GoBack" else "bing")


def _web_form(text: str) -> Action | None:
    found = _WEB.match(text)
    return _web_action(found.group(1), found.group(2)) if found else None


_FORMS: dict[str, Callable[[str], Action | None]] = {"mobile": _mobile_form, "desktop": _desktop_form, "web": _web_form}
