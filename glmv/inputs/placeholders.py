"""Expand the template's one-token media placeholders into the runs the model reads (spec §5).

Works on token ids: the placeholders are added tokens, so the tokenizer splits the text around them and
expanding ids gives exactly what transformers gets by expanding the text and tokenizing it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from glmv.errors import InputError
from glmv.inputs.image import ImageFeatures
from glmv.inputs.tokenizer import Tokenizer
from glmv.inputs.video import VideoFeatures, frame_label

TEXT, IMAGE, VIDEO = 0, 1, 2  # mm_token_type_ids values, as in transformers


@dataclass(frozen=True)
class MediaTokens:
    """Ids of the media tokens, looked up by name in the checkpoint's tokenizer."""

    image: int
    video: int
    begin_image: int
    end_image: int
    begin_video: int
    end_video: int

    @classmethod
    def from_tokenizer(cls, tok: Tokenizer) -> "MediaTokens":
        return cls(tok.token_id("<|image|>"), tok.token_id("<|video|>"), tok.token_id("<|begin_of_image|>"),
                   tok.token_id("<|end_of_image|>"), tok.token_id("<|begin_of_video|>"), tok.token_id("<|end_of_video|>"))


def expand_placeholders(ids: Sequence[int], images: Sequence[ImageFeatures], videos: Sequence[VideoFeatures],
                        tokens: MediaTokens, encode: Callable[[str], list[int]], rule: str = "glm4v",
                        ) -> tuple[list[int], list[int]]:
    """Each ``<|image|>`` → ``<|image|>``×(h·w/4); each ``<|video|>`` → per temporal patch
    ``<|begin_of_image|><|image|>×(h·w/4)<|end_of_image|>`` + the frame's time label. Returns the ids and the
    matching mm_token_type_ids (1 for image tokens of images, 2 for image tokens of video frames, else 0)."""
    n_images = sum(1 for i in ids if i == tokens.image)
    n_videos = sum(1 for i in ids if i == tokens.video)
    if n_images != len(images) or n_videos != len(videos):
        raise InputError(f"the prompt has {n_images} image and {n_videos} video placeholders but {len(images)} "
                         f"images and {len(videos)} videos were given (is '<|image|>' typed into the text?)")
    out: list[int] = []
    types: list[int] = []
    image_iter, video_iter = iter(images), iter(videos)
    in_video = False
    labels: dict[str, list[int]] = {}
    for token in ids:
        if token == tokens.image:
            n = next(image_iter).num_tokens
            out += [tokens.image] * n
            types += [VIDEO if in_video else IMAGE] * n
        elif token == tokens.video:
            video = next(video_iter)
            n = video.tokens_per_frame
            for seconds in video.timestamps:
                label = frame_label(rule, seconds)
                label_ids = labels.get(label) or labels.setdefault(label, encode(label))
                run = [tokens.begin_image, *[tokens.image] * n, tokens.end_image, *label_ids]
                out += run
                types += [TEXT] + [VIDEO] * n + [TEXT] * (1 + len(label_ids))
        else:
            in_video = (in_video or token == tokens.begin_video) and token != tokens.end_video
            out.append(token)
            types.append(TEXT)
    return out, types
