"""GUI agents on GLM-V: typed actions parsed from GLM-4.1V / GLM-4.5V answers in their official action spaces
(mobile, desktop, web), the official per-space prompts, and executors that carry actions out (a dry run draws
them on the screenshot). `glmv agent` runs one step from the command line."""

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
    point_of,
    screen_point,
)
from glmv.agent.executor import DryRunExecutor, Executor, describe
from glmv.agent.parse import SPACES, parse_action
from glmv.agent.prompts import agent_messages, agent_prompt

__all__ = [
    "Action", "Answer", "Box", "Click", "Drag", "DryRunExecutor", "Executor", "Finish", "Hover", "KeyPress",
    "LongPress", "Mark", "Navigate", "OpenApp", "Point", "SPACES", "Scroll", "Swipe", "TypeText", "Wait",
    "agent_messages", "agent_prompt", "describe", "parse_action", "point_of", "screen_point",
]
