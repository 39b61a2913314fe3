"""The typed GUI-action parser on every action form of GLM-4.5V's and GLM-4.1V's mobile, desktop and web spaces,
written the way each model's official answers wrap them (zai-org/GLM-V examples/gui-agent), the mapping to
pixels, the errors on malformed answers, the prompts, and the world's GUI task scored through the parser."""

from __future__ import annotations

import json
import random

import pytest

from glmv.agent import (
    SPACES,
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
    agent_messages,
    agent_prompt,
    parse_action,
    screen_point,
)
from glmv.engine.outputs import BOX_CLOSE, BOX_OPEN
from glmv.errors import InputError
from glmv.world import sample, scoring

BOX = [[120, 340, 560, 410]]
TYPED = Box(120, 340, 560, 410)

MOBILE = [  # (action as the model writes it, the typed action)
    ('{"action_type": "status", "goal_status": "complete"}', Finish(name="status", status="complete")),
    ('{"action_type": "status", "goal_status": "infeasible"}', Finish(name="status", status="infeasible")),
    ('{"action_type": "answer", "text": "3 recipes"}', Answer(name="answer", text="3 recipes")),
    (f'{{"action_type": "click", "box_2d": {BOX}}}', Click(name="click", target=TYPED)),
    (f'{{"action_type": "long_press", "box_2d": {BOX}}}', LongPress(name="long_press", target=TYPED)),
    (f'{{"action_type": "input_text", "text": "Tracker", "box_2d": {BOX}, "override": true}}',
     TypeText(name="input_text", text="Tracker", target=TYPED, override=True)),
    ('{"action_type": "keyboard_enter"}', KeyPress(name="keyboard_enter", keys=("enter",))),
    ('{"action_type": "navigate_home"}', Navigate(name="navigate_home", to="home")),
    ('{"action_type": "navigate_back"}', Navigate(name="navigate_back", to="back")),
    ('{"action_type": "swipe", "direction": "up"}', Swipe(name="swipe", direction="up")),
    (f'{{"action_type": "swipe", "direction": "left", "box_2d": {BOX}}}',
     Swipe(name="swipe", direction="left", target=TYPED)),
    ('{"action_type": "open_app", "app_name": "Broccoli"}', OpenApp(name="open_app", app="Broccoli")),
    ('{"action_type": "wait"}', Wait(name="wait")),
]

DESKTOP = [
    ("left_click(start_box='[586,446]', element_info='OK button')",
     Click(name="left_click", target=Point(586, 446), element="OK button")),
    ("right_click(start_box='[10, 20]', element_info='')",
     Click(name="right_click", target=Point(10, 20), button="right")),
    ("middle_click(start_box='[999,0]')", Click(name="middle_click", target=Point(999, 0), button="middle")),
    ("left_double_click(start_box='[300,150]', element_info='file')",
     Click(name="left_double_click", target=Point(300, 150), clicks=2, element="file")),
    ("hover(start_box='[50,950]', element_info='menu')", Hover(name="hover", target=Point(50, 950), element="menu")),
    ("left_drag(start_box='[100,500]', end_box='[800,200]', element_info='slider')",
     Drag(name="left_drag", start=Point(100, 500), end=Point(800, 200), element="slider")),
    ("key(keys='ctrl+c')", KeyPress(name="key", keys=("ctrl", "c"))),
    ("key(keys='Return')", KeyPress(name="key", keys=("Return",))),
    ("type(content='drip coffee maker black')", TypeText(name="type", text="drip coffee maker black")),
    ("scroll(start_box='[500,600]', direction='down', step=3, element_info='page')",
     Scroll(name="scroll", target=Point(500, 600), direction="down", steps=3, element="page")),
    ("scroll(start_box='[500,600]', direction='up')",
     Scroll(name="scroll", target=Point(500, 600), direction="up", steps=5)),
    ("WAIT()", Wait(name="WAIT")),
    ("DONE()", Finish(name="DONE", status="complete")),
    ("FAIL()", Finish(name="FAIL", status="infeasible")),
]

WEB = [
    ("Click [1]", Click(name="Click", target=Mark(1))),
    ("Type [2]; [5$]", TypeText(name="Type", target=Mark(2), text="5$")),
    ("Scroll [6]; [up]", Scroll(name="Scroll", target=Mark(6), direction="up")),
    ("Scroll [WINDOW]; [down]", Scroll(name="Scroll", direction="down")),
    ("Wait", Wait(name="Wait")),
    ("GoBack", Navigate(name="GoBack", to="back")),
    ("Bing", Navigate(name="Bing", to="bing")),
    ("ANSWER; <content>Guatemala</content>", Answer(name="ANSWER", text="Guatemala")),
    ("Key; [Return]", KeyPress(name="Key", keys=("Return",))),
]


# How each model's answers wrap the action (agent.md and the parse_*_response functions of the examples).
def glm45v_mobile(action: str) -> str:
    return (f"<think>The list is open.</think>Memory: []\nReason: the item is visible.\n"
            f"Action: {BOX_OPEN}{action}{BOX_CLOSE}")


def glm41v_mobile(action: str) -> str:
    # GLM-4.1V's history shows Python-style dicts: {'action_type': 'open_app', 'app_name': 'Broccoli'}
    as_python = repr(json.loads(action))
    return f"<think>Let me look.</think><answer>Memory: None\nReason: next step.\nAction: {as_python}</answer>"


def glm45v_desktop(action: str) -> str:
    return (f"<think>I see the dialog.</think>I'll do it now. {BOX_OPEN}{action}{BOX_CLOSE}\n"
            'Memory:\n[{"user_email": "x@gmail.com"}]')


def glm41v_desktop(action: str) -> str:
    # no box tokens: the reference falls back to the first name(...) of the answer
    return f"<think>ok</think><answer>The button is at the bottom (right side). {action}\nMemory:\n[]</answer>"


def glm45v_web(action: str) -> str:
    return f"<think>hm</think>Thought: the search box is labelled.\nAction: {action}\nMemory_Updated: {{\"a\": \"1\"}}"


def glm41v_web(action: str) -> str:
    return f"<think>hm</think><answer>Thought: done.\nAction: {action}\nMemory_Updated: {{}}</answer>"


@pytest.mark.parametrize("wrap", [glm45v_mobile, glm41v_mobile, lambda a: a])
@pytest.mark.parametrize("written,expected", MOBILE)
def test_every_mobile_action(written, expected, wrap):
    assert parse_action(wrap(written), "mobile") == expected
    assert parse_action(wrap(written)) == expected  # recognised without naming the space


@pytest.mark.parametrize("wrap", [glm45v_desktop, glm41v_desktop, lambda a: a])
@pytest.mark.parametrize("written,expected", DESKTOP)
def test_every_desktop_action(written, expected, wrap):
    assert parse_action(wrap(written), "desktop") == expected
    assert parse_action(wrap(written)) == expected


@pytest.mark.parametrize("wrap", [glm45v_web, glm41v_web, lambda a: a])
@pytest.mark.parametrize("written,expected", WEB)
def test_every_web_action(written, expected, wrap):
    assert parse_action(wrap(written), "web") == expected
    assert parse_action(wrap(written)) == expected


@pytest.mark.parametrize("written,expected", [
    # GLM-4.1V's desktop prompt shows key(key='ctrl+c') beside its keys= rule
    ("key(key='ctrl+alt+t')", KeyPress(name="key", keys=("ctrl", "alt", "t"))),
    # a box where a point is asked ("usually should be the bounding box of a specific target element")
    ("left_click(start_box='[100,200,300,400]')", Click(name="left_click", target=Box(100, 200, 300, 400))),
    ("left_click(start_box='[[10,20]]')", Click(name="left_click", target=Point(10, 20))),
    ("left_click(start_box=[10, 20])", Click(name="left_click", target=Point(10, 20))),
    ("type(content='it\\'s 5, ok')", TypeText(name="type", text="it's 5, ok")),
    ("type(content='it's 5, ok')", TypeText(name="type", text="it's 5, ok")),  # not valid Python: read by argument
    ('{"action_type": "click", "box_2d": [[012, 5, 100, 200]]}', Click(name="click", target=Box(12, 5, 100, 200))),
    ('{"action_type": "click", "box_2d": [12.5, 5, 100, 200]}', Click(name="click", target=Box(12.5, 5, 100, 200))),
    ("{'action_type': 'input_text', 'text': 'a', 'box_2d': [[1,2,3,4]], 'override': False}",
     TypeText(name="input_text", text="a", target=Box(1, 2, 3, 4), override=False)),
    ("Click [12].", Click(name="Click", target=Mark(12))),
    ("Type [3]; [Mr. Smith].", TypeText(name="Type", target=Mark(3), text="Mr. Smith")),
])
def test_variants_the_reference_allows(written, expected):
    assert parse_action(written) == expected


def test_the_action_not_the_memory_or_the_thinking():
    memory_first = 'Memory: {"action_type": "wait"}\nReason: r\nAction: {"action_type": "navigate_back"}'
    assert parse_action(memory_first) == Navigate(name="navigate_back", to="back")
    thought = '<think>maybe {"action_type": "wait"} or DONE()</think>left_click(start_box=\'[1,2]\')'
    assert parse_action(thought) == Click(name="left_click", target=Point(1, 2))


@pytest.mark.parametrize("text,space,said", [
    ("", None, "no GUI action in the model's answer: ''"),
    (" 2, orange square", "mobile", "no mobile action in the model's answer: ' 2, orange square'"),
    ("left_click(start_box='[1,2]')", "mobile", "no mobile action"),  # another space's form
    ('{"action_type": "click"}', "web", "no web action"),
    ('{"action_type": "click"}', "mobile", "mobile action click needs box_2d"),
    ('{"action_type": "click", "box_2d": "the OK button"}', "mobile", "needs box_2d coordinates"),
    ('{"action_type": "click", "box_2d": [[1, 2]]}', "mobile", "needs box_2d as [[x1,y1,x2,y2]]"),
    ('{"action_type": "click", "box_2d": [[1e999, 2, 3, 4]]}', "mobile", "needs box_2d coordinates"),
    ('{"action_type": "swipe", "direction": "sideways"}', "mobile", "needs direction in up|down|left|right"),
    ('{"action_type": "status", "goal_status": "done"}', "mobile", "needs goal_status in complete|infeasible"),
    ('{"action_type": "input_text", "box_2d": [[1,2,3,4]]}', "mobile", "input_text needs text"),
    ('{"action_type": "fly"}', "mobile", "unknown mobile action_type 'fly'"),
    ("left_click(element_info='OK')", "desktop", "left_click needs start_box"),
    ("left_click(start_box='[1,2,3]')", "desktop", "needs start_box as [x,y]"),
    ("left_drag(start_box='[1,2]')", "desktop", "left_drag needs end_box"),
    ("scroll(start_box='[1,2]', direction='left')", "desktop", "needs direction in up|down"),
    ("scroll(start_box='[1,2]', direction='up', step='many')", "desktop", "needs an integer step"),
    ("key()", "desktop", "key needs keys"),
    ("type(text='x')", "desktop", "type needs content"),
    ("Click the OK button", "web", "web action Click needs an element number [N]; saw 'the OK button'"),
    ("Scroll [WINDOW]; [left]", "web", "needs direction in up|down"),
    ("Key; []", "web", "Key needs a key"),
])
def test_malformed_answers_raise_input_error_naming_what_was_seen(text, space, said):
    with pytest.raises(InputError) as e:
        parse_action(text, space)
    assert said in str(e.value)


def test_unknown_space():
    with pytest.raises(InputError, match="unknown action space 'phone'"):
        parse_action("{}", "phone")


def test_any_mangled_answer_gives_an_action_or_an_input_error():
    """Seeded mutations of well-formed answers: the parser never raises anything else, and what it returns
    maps to pixels."""
    seeds = [w for w, _ in MOBILE + DESKTOP + WEB] + [glm45v_desktop(DESKTOP[0][0]), glm41v_mobile(MOBILE[3][0])]
    pieces = list("{}[]()'\",;:=<>_ \n019x") + [BOX_OPEN, BOX_CLOSE, "<think>", "</think>", "Action:", "\x00", "True"]
    rnd, parsed = random.Random(0), 0
    for _ in range(1500):
        text = list(rnd.choice(seeds))
        for _ in range(rnd.randint(1, 5)):
            at = rnd.randint(0, len(text))
            if rnd.random() < 0.5 and text:
                del text[min(at, len(text) - 1)]
            else:
                text.insert(at, rnd.choice(pieces))
        try:
            action = parse_action("".join(text), rnd.choice((None, *SPACES)))
        except InputError:
            continue
        assert isinstance(action, Action)
        action.to_pixels(1920, 1080)
        parsed += 1
    assert 100 < parsed < 1500  # both outcomes were exercised


def test_thousandths_map_to_screen_pixels():
    click = parse_action("left_click(start_box='[500,250]')").to_pixels(1920, 1080)
    assert click.pixels and click.target == Point(960, 270)
    corner = parse_action("left_click(start_box='[1000,1000]')").to_pixels(1920, 1080)
    assert corner.target == Point(1919, 1079)  # kept on the screen
    tap = parse_action('{"action_type": "click", "box_2d": [[600, 100, 200, 300]]}')
    assert tap.to_pixels(1000, 500).target == Box(200, 50, 600, 150)  # corners ordered
    assert screen_point(tap, 1000, 500) == Point(400, 100)  # the box's centre
    drag = parse_action("left_drag(start_box='[0,0]', end_box='[999,999]')").to_pixels(100, 200)
    assert (drag.start, drag.end) == (Point(0, 0), Point(100 - 1, 200 - 1))
    mark = parse_action("Click [4]")
    assert mark.to_pixels(100, 100).target == Mark(4) and screen_point(mark, 100, 100) is None
    assert screen_point(parse_action("key(keys='a')"), 100, 100) is None
    with pytest.raises(ValueError, match="already in pixels"):
        click.to_pixels(1920, 1080)


def test_to_dict_is_json_with_the_type():
    d = parse_action(f'{{"action_type": "input_text", "text": "hi", "box_2d": {BOX}}}').to_dict()
    assert json.loads(json.dumps(d)) == {"type": "TypeText", "name": "input_text", "pixels": False, "text": "hi",
                                         "target": {"x1": 120, "y1": 340, "x2": 560, "y2": 410}, "override": None}


@pytest.mark.parametrize("space,written", [("mobile", MOBILE), ("desktop", DESKTOP), ("web", WEB)])
def test_each_prompt_offers_every_verb_the_parser_reads(space, written):
    prompt = agent_prompt(space, "Open the settings")
    assert prompt.startswith("You are a GUI Agent") and "# Task:\nOpen the settings" in prompt
    for text, action in written:
        name = action.name
        if space == "desktop" and action.name.endswith("_click") and "double" not in name:
            name = "{left,right,middle}_click"
        assert (f"### {name}" if space != "web" else f"- {name}") in prompt


def test_messages_put_the_screenshot_where_the_reference_does():
    from PIL import Image

    shot = Image.new("RGB", (8, 8))
    kinds = {space: [p["type"] for p in agent_messages(space, "t", shot)[0]["content"]] for space in SPACES}
    assert kinds == {"mobile": ["image", "text"], "desktop": ["text", "image"], "web": ["image", "text"]}
    bare = agent_messages("desktop", "Click Save", shot, "bare")[0]["content"]
    assert bare == [{"type": "image", "image": shot}, {"type": "text", "text": "Click Save"}]


def test_world_gui_task_is_scored_through_the_parser():
    s = next(s for s in (sample("gui_action", "test", i) for i in range(50)) if "text" in s.truth["action"])
    score, reward = scoring.action_match, scoring.action_iou
    expected = s.truth["action"]
    assert score(s.target, expected) == 1.0
    # a GLM-4.5V-style answer around the same action, and GLM-4.1V's Python-style dict
    assert reward(glm45v_mobile(json.dumps(expected)), expected) == 1.0
    assert reward(glm41v_mobile(json.dumps(expected)), expected) == 1.0
    assert reward(json.dumps({**expected, "text": "other"}), expected) == 0.0
    assert reward("left_click(start_box='[1,2]')", expected) == 0.0  # another space's form
    assert reward('{"action_type": "input_text"', expected) == 0.0  # cut off
