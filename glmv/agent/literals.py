"""Reading the literals inside a model's action text: JSON or Python-style objects, call arguments, coordinate
lists. Models write both `true` and `True` (GLM-4.1V's mobile prompt itself shows `'override': True/False`), and
the official AndroidWorld scorer allows leading zeros in boxes, so every reader here is lenient in those ways."""

from __future__ import annotations

import ast
import json
import math
import re
import warnings
from typing import Any

_NAMES = {"true": True, "false": False, "null": None, "True": True, "False": False, "None": None}
_LEADING_ZEROS = re.compile(r"(?<![\w.])0+(?=\d)")  # "[[012,5,...]]": not JSON, not Python 3 either
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
# what reading model text as Python can raise (null bytes, unhashable keys, deep nesting, huge literals)
_NOT_PYTHON = (SyntaxError, ValueError, TypeError, RecursionError, MemoryError)


def _parse(source: str) -> ast.expr:
    with warnings.catch_warnings():  # model text is not code: "[1a]" need not warn about decimal literals
        warnings.simplefilter("ignore", SyntaxWarning)
        return ast.parse(source, mode="eval").body


class _Constants(ast.NodeTransformer):
    def visit_Name(self, node: ast.Name) -> ast.AST:
        return ast.copy_location(ast.Constant(_NAMES[node.id]), node) if node.id in _NAMES else node


def python_literal(source: str) -> Any:
    """A Python literal (dicts, lists, strings, numbers) that may spell constants the JSON way; raises
    ValueError or SyntaxError when it is not one."""
    try:
        tree = _parse(source.strip())
    except SyntaxError:
        tree = _parse(_LEADING_ZEROS.sub("", source.strip()))
    return ast.literal_eval(_Constants().visit(tree))


def closing(text: str, start: int) -> int | None:
    """Where the brace or parenthesis opened at text[start] closes (those inside quoted strings do not count),
    or None: one pass, so a long or deeply nested answer costs no more than reading it."""
    opener = text[start]
    closer = {"{": "}", "(": ")"}[opener]
    depth, quote, i = 0, None, start
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\":
                i += 1  # an escaped character, maybe the quote itself
            elif c == quote:
                quote = None
        elif c in "'\"":
            quote = c
        elif c == opener:
            depth += 1
        elif c == closer:
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def object_at(text: str, start: int) -> Any:
    """The JSON or Python object that starts at text[start] ("{"), or None."""
    try:
        return json.JSONDecoder().raw_decode(text[start:])[0]
    except (json.JSONDecodeError, RecursionError):
        pass
    end = closing(text, start)
    try:
        return None if end is None else python_literal(text[start : end + 1])
    except _NOT_PYTHON:
        return None


# key='value' (the value ends at a quote followed by the next argument or the closing parenthesis, so quotes
# and commas inside it survive), key="value" or key=bare.
_VALUE_ENDS = r"(?=\s*(?:,\s*\w+\s*=|\)|$))"
_ARGUMENT = re.compile(rf"""(\w+)\s*=\s*(?:'(.*?)'{_VALUE_ENDS}|"(.*?)"{_VALUE_ENDS}|([^,()]+))""", re.S)


def call_arguments(text: str, start: int) -> dict[str, Any]:
    """The keyword arguments of the call `name(...)` whose name starts at text[start]: read as Python when the
    call is valid Python (escapes honoured), else argument by argument."""
    opened = text.index("(", start)
    end = closing(text, opened)
    if end is not None:
        try:
            call = _parse(text[start : end + 1])
            if isinstance(call, ast.Call):
                return {k.arg: ast.literal_eval(_Constants().visit(k.value)) for k in call.keywords if k.arg}
        except _NOT_PYTHON:
            pass  # not Python (an unescaped quote, a bare word): read it as text below
    return {m[1]: m[2] if m[2] is not None else m[3] if m[3] is not None else m[4].strip()
            for m in _ARGUMENT.finditer(text[opened + 1 :])}


def coordinates(value: Any) -> list[float]:
    """The numbers of a coordinate argument: "[x,y]", "[[x1,y1,x2,y2]]", [x, y] or [[x1, y1, x2, y2]]; of a
    list of boxes, the first. Raises ValueError when there are none."""
    if isinstance(value, str):
        numbers = [float(n) for n in NUMBER.findall(value)]
    elif isinstance(value, (list, tuple)):
        while value and isinstance(value[0], (list, tuple)):
            value = value[0]
        numbers = [float(v) for v in value]
    else:
        raise ValueError(f"not coordinates: {value!r}")
    if not numbers or not all(math.isfinite(n) for n in numbers):
        raise ValueError(f"no coordinates in {value!r}")
    return [int(n) if n.is_integer() else n for n in numbers]
