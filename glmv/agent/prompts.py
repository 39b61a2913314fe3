"""The user turn of one GUI-agent step, as GLM-4.5V's official agent example builds it (zai-org/GLM-V,
examples/gui-agent/glm-45v/agent.md and gui_agent_45v.py: get_mobile_prompt, get_pc_prompt, get_web_prompt).

Kept: the preamble, the Task / Task Platform / Action Space / history / Output Format sections, each action's
calling rule and schema, and where the screenshot goes (mobile and web: before the text; desktop: after it, under
"Current Screenshot:"). Left out, because they belong to one benchmark rather than to the action space: the
AndroidWorld app list and app tips, the OSWorld passwords, the web page's element list and the Beijing time.
Schemas are written as JSON (the desktop reference writes Python-ish dicts with unescaped quotes). One step, no
history: the history sections say so. `bare` sends only the task, as glmv's world GUI task asks it.
"""

from __future__ import annotations

import json

from PIL import Image

PROMPT_STYLES = ("glm-4.5v", "bare")

PREAMBLE = (
    "You are a GUI Agent, and your primary task is to respond accurately to user requests or questions. In "
    "addition to directly answering the user's queries, you can also use tools or perform GUI operations directly "
    "until you fulfill the user's request or provide a correct answer. You should carefully read and understand the "
    "images and questions provided by the user, and engage in thinking and reflection when appropriate. The "
    "coordinates involved are all represented in thousandths (0-999)."
)
_BOX = "The box_2d should be [[xmin,ymin,xmax,ymax]] normalized to 0-999, indicating the position of the element."

# (name, calling rule, description, {parameter: (type or None, description, enum or None)}, required)
MOBILE_ACTIONS = (
    ("status", '{"action_type": "status", "goal_status": "<complete|infeasible>"}',
     "Finish the task by using the status action with complete or infeasible as goal_status.",
     {"goal_status": ("string", "The goal status of the task.", ["complete", "infeasible"])}, ["goal_status"]),
    ("answer", '{"action_type": "answer", "text": "<answer_text>"}', "Answer user's question.",
     {"text": ("string", "The answer text.", None)}, ["text"]),
    ("click", '{"action_type": "click", "box_2d": [[xmin,ymin,xmax,ymax]]}',
     "Click/tap on an element on the screen. Use the box_2d to indicate which element you want to click.",
     {"box_2d": ("array", _BOX, None)}, ["box_2d"]),
    ("long_press", '{"action_type": "long_press", "box_2d": [[xmin,ymin,xmax,ymax]]}',
     "Long press on an element on the screen, similar with the click action above, use the box_2d to indicate "
     "which element you want to long press.", {"box_2d": ("array", _BOX, None)}, ["box_2d"]),
    ("input_text",
     '{"action_type": "input_text", "text": "<text_input>", "box_2d": [[xmin,ymin,xmax,ymax]], "override": true/false}',
     "Type text into a text field (this action contains clicking the text field, typing in the text and pressing "
     "the enter). Use the box_2d to indicate the target text field.",
     {"text": (None, "The text to be input. Can be from the command, the memory, or the current screen.", None),
      "box_2d": (None, _BOX, None),
      "override": (None, "If true, the text field will be cleared before typing. If false, the text will be "
                         "appended.", None)}, ["text", "box_2d", "override"]),
    ("keyboard_enter", '{"action_type": "keyboard_enter"}', "Press the Enter key.", {}, []),
    ("navigate_home", '{"action_type": "navigate_home"}', "Navigate to the home screen.", {}, []),
    ("navigate_back", '{"action_type": "navigate_back"}', "Navigate back.", {}, []),
    ("swipe",
     '{"action_type": "swipe", "direction": "<up|down|left|right>", "box_2d": [[xmin,ymin,xmax,ymax]](optional)}',
     "Swipe the screen or a scrollable UI element in one of the four directions.",
     {"direction": ("string", "The direction to swipe.", ["up", "down", "left", "right"]),
      "box_2d": ("array", "The box_2d to swipe a specific UI element, leave it empty when swiping the whole "
                          "screen.", None)}, ["direction"]),
    ("open_app", '{"action_type": "open_app", "app_name": "<name>"}',
     "Open an app (nothing will happen if the app is not installed).",
     {"app_name": ("string", "The name of the app to open.", None)}, ["app_name"]),
    ("wait", '{"action_type": "wait"}', "Wait for the screen to update.", {}, []),
)

_POINT = "Coordinates [x,y] {}, normalized to 0-999 range."
_INFO = ("string", "Optional text description of the UI element {}.", None)
DESKTOP_ACTIONS = (
    ("{left,right,middle}_click", "{left,right,middle}_click(start_box='[x,y]', element_info='')",
     "Perform a left/right/middle mouse click at the specified coordinates on the screen.",
     {"start_box": ("array", _POINT.format("where to perform the click"), None),
      "element_info": (_INFO[0], _INFO[1].format("being clicked"), None)}, ["start_box"]),
    ("hover", "hover(start_box='[x,y]', element_info='')",
     "Move the mouse pointer to the specified coordinates without performing any click action.",
     {"start_box": ("array", _POINT.format("where to move the mouse pointer"), None),
      "element_info": (_INFO[0], _INFO[1].format("being hovered over"), None)}, ["start_box"]),
    ("left_double_click", "left_double_click(start_box='[x,y]', element_info='')",
     "Perform a left mouse double-click at the specified coordinates on the screen.",
     {"start_box": ("array", _POINT.format("where to perform the double-click"), None),
      "element_info": (_INFO[0], _INFO[1].format("being double-clicked"), None)}, ["start_box"]),
    ("left_drag", "left_drag(start_box='[x1,y1]', end_box='[x2,y2]', element_info='')",
     "Drag the mouse from starting coordinates to ending coordinates while holding the left mouse button.",
     {"start_box": ("array", "Starting coordinates [x1,y1] for the drag operation, normalized to 0-999 range.", None),
      "end_box": ("array", "Ending coordinates [x2,y2] for the drag operation, normalized to 0-999 range.", None),
      "element_info": (_INFO[0], _INFO[1].format("being dragged"), None)}, ["start_box", "end_box"]),
    ("key", "key(keys='')", "Simulate pressing a single key or combination of keys on the keyboard.",
     {"keys": ("string", "The key or key combination to press. Use '+' to separate keys in combinations (e.g., "
                         "'ctrl+c', 'alt+tab').", None)}, ["keys"]),
    ("type", "type(content='')",
     "Type text content into the currently focused text input field. This action only performs typing and does "
     "not handle field activation or clearing.",
     {"content": ("string", "The text content to be typed into the active text field.", None)}, ["content"]),
    ("scroll", "scroll(start_box='[x,y]', direction='', step=5, element_info='')",
     "Scroll an element at the specified coordinates in the specified direction by a given number of wheel steps.",
     {"start_box": ("array", _POINT.format("of the element or area to scroll"), None),
      "direction": ("string", "The direction to scroll: 'down' or 'up'.", ["down", "up"]),
      "step": ("integer", "Number of wheel steps to scroll, default is 5.", None),
      "element_info": (_INFO[0], _INFO[1].format("being scrolled"), None)}, ["start_box", "direction"]),
    ("WAIT", "WAIT()", "Wait for 5 seconds before proceeding to the next action.", {}, []),
    ("DONE", "DONE()",
     "Indicate that the current task has been completed successfully and no further actions are needed.", {}, []),
    ("FAIL", "FAIL()", "Indicate that the current task cannot be completed or is impossible to accomplish.", {}, []),
)

WEB_ACTIONS = """Action should STRICTLY follow the format:
    - Click [Numerical_Label]. For example the Action "Click [1]" means clicking on the web element with a Numerical_Label of "1".
    - Type [Numerical_Label]; [The input content]. For example the Action "Type [2]; [5$]" means typing "5$" in the web element with a Numerical_Label of "2".
    - Scroll [Numerical_Label or WINDOW]; [up or down]. For example the Action "Scroll [6]; [up]" means scrolling up in the web element with a Numerical_Label of "6".
    - Wait. For example the Action "Wait" means waiting for 5 seconds.
    - GoBack. For example the Action "GoBack" means going back to the previous webpage.
    - Bing. For example the Action "Bing" means jumping to the Bing search page.
    - ANSWER; <content>The content of the answer</content>. For example the Action "ANSWER; <content>Guatemala</content>" means answering the task with "Guatemala".
    - Key; [The key name]. For example the Action "Key; [Return]" means pressing the Enter key"""

OUTPUT_FORMAT = {
    "mobile": """# Output Format
1. Memory: important information you want to remember for the future actions. The memory should be only contents on the screen that will be used in the future actions. It should satisfy that: you cannnot determine one or more future actions without this memory.
2. Reason: the reason for the action and the memory. Your reason should include, but not limited to:- the content of the GUI, especially elements that are tightly related to the user goal- the step-by-step thinking process of how you come up with the new action.
3. Action: the action you want to take, in the correct JSON format. The action should be one of the above list.

Your answer should look like:
Memory: ...
Reason: ...
Action: {"action_type":...}

# Some Additional Notes
- Swipe up means swiping from bottom to top, swipe down means swiping from top to bottom, swipe left means swiping from right to left, swipe right means swiping from left to right.""",
    "desktop": """Memory:
[]
# Output Format
Plain text explanation with action(param='...')
Memory:
[{"key": "value"}, ...]

# Some Additional Notes
- You should put the key information you *have to remember* in a seperated memory part and I'll give it to you in the next round. The content in this part should be a dict list. If you no longer need some given information, you should remove it from the memory. Even if you don't need to remember anything, you should also output an empty list.

Current Screenshot:
""",
    "web": """# Output Format
Your reply should strictly follow the format:
Thought: {Your brief thoughts (briefly summarize the info that will help ANSWER)}
Action: {One Action format you choose}
Memory_Updated: {The latest version of memory generated by modifying or supplementing the original memory content based on the visual information in the current screenshot.}

# Some Additional Notes
The provided image is a screenshot of the webpage you are viewing at this step. This screenshot will feature Numerical Labels placed in the TOP LEFT corner of each Web Element. Execute only one action per iteration.""",
}
PLATFORM = {"mobile": "Mobile", "desktop": "Ubuntu", "web": "Web"}
HISTORY = {"mobile": "You just started, no action has been performed yet.", "desktop": "History:",
           "web": "You have **already performed the following actions** (format: Thought,Action,The Observation "
                  "after the Action):\n\nThe \"Memory\" in the current step as follow:\nMemory:[]"}


def _schema_section(name: str, rule: str, description: str, params: dict, required: list[str], label: str) -> str:
    properties = {k: {**({"type": t} if t else {}), "description": d, **({"enum": e} if e else {})}
                  for k, (t, d, e) in params.items()}
    schema = {"name": name, "description": description,
              "parameters": {"type": "object", "properties": properties, "required": required}}
    return f"### {name}\n\n{label}: `{rule}`\n{json.dumps(schema, indent=4, ensure_ascii=False)}"


def action_space(space: str) -> str:
    """The Action Space section of `space`'s prompt."""
    if space == "web":
        return WEB_ACTIONS
    # the reference says "Calling rule" in the mobile prompt and "Call rule" in the desktop one
    table, label = (MOBILE_ACTIONS, "Calling rule") if space == "mobile" else (DESKTOP_ACTIONS, "Call rule")
    return "\n\n".join(_schema_section(*row, label) for row in table)


def agent_prompt(space: str, task: str) -> str:
    """GLM-4.5V's prompt text for one step of `task` on a `space` screen."""
    return (f"{PREAMBLE}\n\n# Task:\n{task}\n\n# Task Platform\n{PLATFORM[space]}\n\n# Action Space\n"
            f"{action_space(space)}\n\n# Historical Actions and Current Memory\n{HISTORY[space]}\n\n"
            f"{OUTPUT_FORMAT[space]}")


def agent_messages(space: str, task: str, screenshot: Image.Image, style: str = "glm-4.5v") -> list[dict]:
    """The one user message of a step: the screenshot and the prompt, in the order the reference sends them."""
    image = {"type": "image", "image": screenshot}
    if style == "bare":
        return [{"role": "user", "content": [image, {"type": "text", "text": task}]}]
    text = {"type": "text", "text": agent_prompt(space, task)}
    return [{"role": "user", "content": [text, image] if space == "desktop" else [image, text]}]
