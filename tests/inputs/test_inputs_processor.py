"""Processor end to end: input_ids equal transformers' tokenizer + Glm4vProcessor placeholder expansion."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

import glmv
from glmv.errors import InputError
from glmv.inputs.media import VideoInfo
from glmv.inputs.video import sample_glm4v


@pytest.fixture(scope="module")
def processor(ckpt):
    return glmv.Processor.from_pretrained(ckpt)


@pytest.fixture(scope="module")
def reference(processor):
    """transformers' Glm4vProcessor expansion methods on an instance built without __init__ (which needs a
    torchvision video processor), with the PIL image processor configured like the tiny checkpoint."""
    from types import SimpleNamespace

    from transformers.models.glm4v.image_processing_pil_glm4v import (
        Glm4vImageProcessorPil,
    )
    from transformers.models.glm4v.processing_glm4v import Glm4vProcessor
    from transformers.models.glm4v.video_processing_glm4v import Glm4vVideoProcessor

    ref = Glm4vProcessor.__new__(Glm4vProcessor)
    cfg = processor.image_config
    ref.image_processor = Glm4vImageProcessorPil(size={"shortest_edge": cfg.min_pixels, "longest_edge": cfg.max_pixels})
    ref.video_processor = SimpleNamespace(merge_size=2)
    ref.image_token, ref.video_token = "<|image|>", "<|video|>"
    sampler = Glm4vVideoProcessor.__new__(Glm4vVideoProcessor)
    sampler.fps, sampler.max_duration, sampler.temporal_patch_size = 2, 300, 2
    ref.sample_frames = sampler.sample_frames
    return ref


def _image(h, w, seed):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _reference_ids(processor, reference, ref_tokenizer, messages, videos=(), **render_kwargs):
    """Render with transformers' renderer, expand with Glm4vProcessor's methods, tokenize with its tokenizer."""
    from transformers.models.glm4v.video_processing_glm4v import smart_resize
    from transformers.utils.chat_template_utils import render_jinja_template
    from transformers.video_utils import read_video_pyav

    text = render_jinja_template([messages], chat_template=processor.template.source, add_generation_prompt=True,
                                 **processor.tokenizer.special_tokens_map, **render_kwargs)[0][0]
    images = [p["image"] for m in messages if isinstance(m["content"], list) for p in m["content"]
              if p["type"] == "image"]
    image_inputs = reference.image_processor(images, return_tensors="pt") if images else None
    video_inputs = {"video_grid_thw": [], "video_metadata": []}
    for path in videos:
        frames, meta = read_video_pyav(str(path), reference.sample_frames)
        cfg = processor.video_config.vision
        h, w = smart_resize(len(meta.frames_indices), frames.shape[1], frames.shape[2], 2, 28, cfg.min_pixels,
                            cfg.max_pixels)
        video_inputs["video_grid_thw"].append(torch.tensor([(len(meta.frames_indices) + 1) // 2, h // 14, w // 14]))
        video_inputs["video_metadata"].append(meta)
    counters = {"<|image|>": 0, "<|video|>": 0}

    def expand(match):
        token = match.group(0)
        idx = counters[token]
        counters[token] += 1
        if token == "<|image|>":
            return reference.replace_image_token(image_inputs, idx)
        return reference.replace_video_token(video_inputs, idx)

    expanded = re.sub(r"<\|image\|>|<\|video\|>", expand, text)
    ids = ref_tokenizer(expanded, add_special_tokens=False)["input_ids"]
    return ids, image_inputs, video_inputs


def test_single_image_prompt(processor, reference, ref_tokenizer):
    messages = [{"role": "user", "content": [{"type": "image", "image": _image(60, 90, 0)},
                                             {"type": "text", "text": "What kind of dog is this?"}]}]
    out = processor.apply_chat_template(messages)
    ids, image_inputs, _ = _reference_ids(processor, reference, ref_tokenizer, messages)
    assert out["input_ids"][0].tolist() == ids
    assert torch.equal(out["image_grid_thw"], image_inputs["image_grid_thw"])
    assert (out["pixel_values"] - image_inputs["pixel_values"]).abs().max() <= 1e-5
    assert out["attention_mask"].all() and out["pixel_values_videos"] is None and out["video_grid_thw"] is None
    assert out["input_ids"].dtype == torch.long and out["input_ids"].shape[0] == 1


def test_multi_image_multi_turn_history(processor, reference, ref_tokenizer):
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": [{"type": "text", "text": "Compare "}, {"type": "image", "image": _image(30, 2000, 1)},
                                     {"type": "text", "text": " and "}, {"type": "image", "image": _image(300, 200, 2)}]},
        {"role": "assistant", "content": "<think>look</think>The first is wider."},
        {"role": "user", "content": [{"type": "image", "image": _image(3, 5, 3)}, {"type": "text", "text": "And this?"}]},
    ]
    for thinking in (None, False):
        kwargs = {} if thinking is None else {"enable_thinking": thinking}
        out = processor.apply_chat_template(messages, **kwargs)
        ids, image_inputs, _ = _reference_ids(processor, reference, ref_tokenizer, messages, **kwargs)
        assert out["input_ids"][0].tolist() == ids
        assert torch.equal(out["image_grid_thw"], image_inputs["image_grid_thw"])
        assert (out["pixel_values"] - image_inputs["pixel_values"]).abs().max() <= 1e-5


@pytest.mark.parametrize("num_frames,fps", [(9, 4), (50, 25)])
def test_video_and_image_prompt(processor, reference, ref_tokenizer, video_tools, tmp_path, num_frames, fps):
    path = tmp_path / "clip.mp4"
    path.write_bytes(video_tools.make_video(num_frames, fps))
    messages = [{"role": "user", "content": [{"type": "image", "image": _image(64, 64, 5)},
                                             {"type": "video", "video": str(path)},
                                             {"type": "text", "text": "What happens?"}]}]
    out = processor.apply_chat_template(messages)
    ids, _, video_inputs = _reference_ids(processor, reference, ref_tokenizer, messages, videos=[path])
    assert out["input_ids"][0].tolist() == ids
    assert out["video_grid_thw"].tolist() == [g.tolist() for g in video_inputs["video_grid_thw"]]
    t, h, w = out["video_grid_thw"][0].tolist()
    assert out["pixel_values_videos"].shape == (t * h * w, 1176)
    types = out["mm_token_type_ids"][0]
    assert (types == 1).sum() == out["image_grid_thw"].prod() // 4 and (types == 2).sum() == t * h * w // 4


def test_frame_list_video_with_fps(processor):
    frames = [np.full((56, 56, 3), i * 20, dtype=np.uint8) for i in range(6)]
    messages = [{"role": "user", "content": [{"type": "video", "video": frames, "fps": 1}, "Count."]}]
    out = processor.apply_chat_template(messages)
    indices = sample_glm4v(VideoInfo(6, 1.0, 56, 56))
    assert out["video_grid_thw"][0, 0] == len(indices) // 2
    text = processor.decode(out["input_ids"][0], skip_special_tokens=True)
    assert text.startswith("\n") and "024" in text  # one whole-second label per temporal patch (0 s, 2 s, 4 s)


def test_openai_shapes_and_data_urls(processor):
    import base64
    import io

    buf = io.BytesIO()
    _image(40, 40, 9).save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                             {"type": "text", "text": "hi"}]}]
    out = processor.apply_chat_template(messages)
    ref = processor.apply_chat_template([{"role": "user", "content": [{"type": "image", "image": _image(40, 40, 9)},
                                                                       {"type": "text", "text": "hi"}]}])
    assert torch.equal(out["input_ids"], ref["input_ids"]) and torch.equal(out["pixel_values"], ref["pixel_values"])


def test_batch_is_left_padded(processor):
    short = [{"role": "user", "content": "Hi"}]
    long = [{"role": "user", "content": [{"type": "image", "image": _image(80, 80, 4)}, "Describe this image in detail."]}]
    batch = processor.apply_chat_template([short, long])
    single = [processor.apply_chat_template(c)["input_ids"][0] for c in (short, long)]
    width = batch["input_ids"].shape[1]
    assert width == max(len(s) for s in single)
    pad = width - len(single[0])
    assert batch["input_ids"][0, :pad].eq(processor.tokenizer.pad_token_id).all()
    assert batch["attention_mask"][0].tolist() == [0] * pad + [1] * len(single[0])
    assert batch["input_ids"][0, pad:].tolist() == single[0].tolist()
    assert batch["input_ids"][1].tolist() == single[1].tolist()
    assert batch["image_grid_thw"].shape == (1, 3)


def test_errors_name_the_part(processor):
    messages = [{"role": "user", "content": [{"type": "text", "text": "x"}, {"type": "image", "image": b"not an image"}]}]
    with pytest.raises(InputError, match=r"message 0, part 1 \(image\)"):
        processor.apply_chat_template(messages)
    typed = processor.apply_chat_template([{"role": "user", "content": "typed <|image|> here"}])  # text, not an image
    assert processor.media_tokens.image not in typed["input_ids"][0].tolist()
    with pytest.raises(InputError, match="unknown role"):
        processor.apply_chat_template([{"role": "wizard", "content": "x"}])


def test_decode_round_trip(processor):
    text = "Ünïcode ✓ 12.0 seconds <think>a</think>"
    ids = processor.tokenizer.encode(text)
    assert processor.decode(ids) == text
    assert processor.decode(torch.tensor([ids])) == text


def test_glm46v_checkpoint_uses_its_video_rule(tmp_path):
    from glmv.inputs.video import sample_glm46v
    from glmv.testing.tiny_tokenizer import make_tiny_tokenizer, write_processor_configs

    make_tiny_tokenizer(tmp_path)
    write_processor_configs(tmp_path, glm46v=True)
    proc = glmv.Processor.from_pretrained(tmp_path)
    assert proc.video_config.rule == "glm46v"
    frames = [np.full((28, 28, 3), i, dtype=np.uint8) for i in range(8)]
    out = proc.apply_chat_template([{"role": "user", "content": [{"type": "video", "video": frames, "fps": 2}]}])
    indices = sample_glm46v(VideoInfo(8, 2.0, 28, 28))
    assert out["video_grid_thw"][0, 0] == len(indices) // 2
    text = proc.decode(out["input_ids"][0], skip_special_tokens=True)
    assert "0.0 seconds" in text and f"{indices[2] / 2:.1f} seconds" in text
