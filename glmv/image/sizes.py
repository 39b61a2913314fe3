"""GLM-Image's resolution rules (spec 2.6), checked before any work so that a bad size is one clear InputError.

Both sides are multiples of 32 (an AR token covers 32x32 px; diffusers checks only W % 4, and a W of 16 mod 32 then
breaks the token count), between 32 px (one token) and 2048 px (the largest size the model card describes; 1K-2K
is the intended range).
"""

from __future__ import annotations

import re

from glmv.errors import InputError

MULTIPLE, MIN_SIDE, MAX_SIDE = 32, 32, 2048


def check_size(height: int, width: int) -> None:
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{name} must be an integer number of pixels, got {value!r}")
        if not MIN_SIDE <= value <= MAX_SIDE:
            raise InputError(f"{name} {value} is out of range: GLM-Image draws {MIN_SIDE} to {MAX_SIDE} px per side")
        if value % MULTIPLE:
            lower = max(MIN_SIDE, value // MULTIPLE * MULTIPLE)
            raise InputError(f"{name} {value} is not a multiple of {MULTIPLE} (one image token covers {MULTIPLE} px); "
                             f"use {lower} or {lower + MULTIPLE}")


def parse_size(size: str) -> tuple[int, int]:
    """'WIDTHxHEIGHT' (the OpenAI images API's form, e.g. '1024x768') -> (height, width), checked."""
    m = re.fullmatch(r"\s*(\d{1,5})\s*[xX]\s*(\d{1,5})\s*", size) if isinstance(size, str) else None
    if m is None:
        raise InputError(f"size must be 'WIDTHxHEIGHT' in pixels, such as '1024x1024', got {size!r}")
    width, height = int(m.group(1)), int(m.group(2))
    check_size(height, width)
    return height, width
