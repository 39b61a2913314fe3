"""Inputs: what a user sends (messages, media) → what the model reads (token ids, pixel rows, grids).

media.py/fetch.py load safely, image.py/video.py process, tokenizer.py/chat.py/placeholders.py make the prompt,
processor.py ties them together as ``glmv.Processor``.
"""

from glmv.inputs.limits import MediaLimits

__all__ = ["MediaLimits"]
