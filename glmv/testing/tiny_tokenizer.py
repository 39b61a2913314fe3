"""A tiny byte-level BPE tokenizer with every GLM-V special token, and small processor configs, for tests.

The special tokens sit at scattered, non-GLM ids in reverse order, so code that hard-codes GLM ids fails.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

SPECIAL_TOKENS = (  # added tokens that decoding with skip_special_tokens removes
    "<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>", "<|system|>", "<|user|>", "<|assistant|>",
    "<|observation|>", "<|begin_of_image|>", "<|end_of_image|>", "<|begin_of_video|>", "<|end_of_video|>",
    "<|image|>", "<|video|>",
)
TEXT_TOKENS = (  # added tokens that survive skip_special_tokens, as in the GLM-4.5V tokenizer
    "<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<arg_key>",
    "</arg_key>", "<arg_value>", "</arg_value>", "/nothink", "<|begin_of_box|>", "<|end_of_box|>",
)
TINY_VOCAB_SIZE = 512

_CORPUS = """The quick brown fox jumps over the lazy dog. What kind of dog is this? Describe this image in detail.
A red square, a blue circle and a green triangle are on a white background. How many objects are there?
There are 3 objects: 1 square, 1 circle and 1 triangle. The answer is 42. Count the cars in the picture.
Help me to locate the cat in the image and give me its bounding boxes. [[120, 340, 560, 780]]
Please describe the video. The man walks to the left, then turns around and waves at the camera.
What is written on the sign? It says "STOP". Read the chart and output JSON: {"year": 2024, "value": 3.5}
You are a helpful assistant. Think step by step, then give the final answer. seconds minutes hours
0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 30 40 50 60 70 80 90 100 0.5 1.0 2.0 12.0 seconds
click(start_box='[100,200]') type(content='hello world') scroll down up left right yes no true false null
The weather in Paris is sunny and warm today, with a light breeze from the west in the afternoon.
"""


def _special_ids() -> dict[str, int]:
    # Reverse order, every 16th id from 30: nothing near GLM's 151329.. and not in GLM's order.
    names = (*SPECIAL_TOKENS, *TEXT_TOKENS)
    return {name: 30 + 16 * k for k, name in enumerate(reversed(names))}


def build_tiny_tokenizer() -> tuple[Tokenizer, dict[str, int]]:
    """The tokenizer object and its {special token: id} map (deterministic)."""
    special = _special_ids()
    trainer = trainers.BpeTrainer(vocab_size=TINY_VOCAB_SIZE - len(special), min_frequency=1, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    learner = Tokenizer(models.BPE())
    learner.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    learner.train_from_iterator(_CORPUS.splitlines(), trainer)
    learned = json.loads(learner.to_str())["model"]
    regular = sorted(learned["vocab"], key=learned["vocab"].get)
    free_ids = [i for i in range(len(regular) + len(special)) if i not in set(special.values())]
    vocab = {**dict(zip(regular, free_ids)), **special}
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in learned["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in TEXT_TOKENS])
    return tok, special


def make_tiny_tokenizer(path: str | Path) -> dict[str, int]:
    """Write tokenizer.json + tokenizer_config.json into ``path``; return {token: id} for all GLM special tokens."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok, special = build_tiny_tokenizer()
    tok.save(str(path / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "padding_side": "left",
        "clean_up_tokenization_spaces": False,
        "model_max_length": 8192,
        "added_tokens_decoder": {
            str(i): {"content": t, "special": t in SPECIAL_TOKENS, "normalized": False, "lstrip": False,
                     "rstrip": False, "single_word": False}
            for t, i in sorted(special.items(), key=lambda kv: kv[1])
        },
    }
    (path / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return dict(special)


def write_processor_configs(path: str | Path, min_pixels: int = 2 * 28 * 28, max_pixels: int = 2 * 28 * 28 * 16,
                            video_max_pixels: int | None = None, glm46v: bool = False) -> None:
    """preprocessor_config.json + video_preprocessor_config.json with small pixel budgets (default: images of
    at most 16 LLM tokens, videos of at most 4× that over all frames); ``glm46v`` picks the GLM-4.6V video rule."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    common = {
        "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2, "resample": 3, "rescale_factor": 1 / 255,
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
        "do_resize": True, "do_rescale": True, "do_normalize": True, "do_convert_rgb": True,
        "processor_class": "Glm46VProcessor" if glm46v else "Glm4vProcessor",
    }
    image = {**common, "image_processor_type": "Glm4vImageProcessor",
             "size": {"shortest_edge": min_pixels, "longest_edge": max_pixels}}
    video = {**common, "video_processor_type": "Glm46VVideoProcessor" if glm46v else "Glm4vVideoProcessor",
             "fps": 2, "max_duration": 300, "do_sample_frames": True,
             "size": {"shortest_edge": min_pixels, "longest_edge": video_max_pixels or 4 * max_pixels}}
    (path / "preprocessor_config.json").write_text(json.dumps(image, indent=2))
    (path / "video_preprocessor_config.json").write_text(json.dumps(video, indent=2))
