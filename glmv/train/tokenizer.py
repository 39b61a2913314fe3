"""Train a byte-level BPE tokenizer carrying every GLM-V special token, and write it in the checkpoint layout
(tokenizer.json + tokenizer_config.json with the chat template), as the real GLM-V checkpoints ship theirs."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

# Tokens that decoding with skip_special_tokens removes (roles, media markers), as in the GLM-4.5V tokenizer ...
SPECIAL_TOKENS = (
    "<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>", "<|system|>", "<|user|>", "<|assistant|>",
    "<|observation|>", "<|begin_of_image|>", "<|end_of_image|>", "<|begin_of_video|>", "<|end_of_video|>",
    "<|image|>", "<|video|>",
)
# ... and added tokens that survive it (thinking, tools, boxes).
TEXT_TOKENS = (
    "<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<arg_key>",
    "</arg_key>", "<arg_value>", "</arg_value>", "/nothink", "<|begin_of_box|>", "<|end_of_box|>",
)
ALL_SPECIAL = (*SPECIAL_TOKENS, *TEXT_TOKENS)


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    """Every digit its own pre-token (as Qwen2 and LLaMA split numbers), then GPT-2's byte-level split. A BPE learned
    on a small corpus otherwise merges only the frequent numbers: in the stop-25 nano model `272` was one token and
    `860` was `8` + `60`, so a 0-1000 coordinate had no consistent spelling and grounding collapsed to one constant
    box. With single digits every number is spelled the same way, from ten tokens that each see all the data."""
    return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                    pre_tokenizers.ByteLevel(add_prefix_space=False)])


def build_bpe_tokenizer(corpus: Iterable[str], vocab_size: int, special_ids: dict[str, int] | None = None) -> tuple[Tokenizer, dict[str, int]]:
    """Learn BPE merges on `corpus` so that, with the GLM special tokens, the vocabulary has at most `vocab_size`
    ids. A corpus too small for that many merges leaves unused ids below the special tokens, as GLM's embedding
    (151552 rows) is larger than its tokenizer.

    special_ids: where each special token goes; by default the last ids of `vocab_size`, in GLM's order (as in the
    real tokenizer, where they start at 151329)."""
    n_regular = vocab_size - len(ALL_SPECIAL)
    trainer = trainers.BpeTrainer(vocab_size=n_regular, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    learner = Tokenizer(models.BPE())
    learner.pre_tokenizer = _pre_tokenizer()
    learner.train_from_iterator(corpus, trainer)
    learned = json.loads(learner.to_str())["model"]
    regular = sorted(learned["vocab"], key=learned["vocab"].get)
    if special_ids is None:
        special_ids = {name: n_regular + k for k, name in enumerate(ALL_SPECIAL)}
    taken = set(special_ids.values())
    free = [i for i in range(vocab_size) if i not in taken]
    vocab = {**dict(zip(regular, free)), **special_ids}
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in learned["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = _pre_tokenizer()
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in TEXT_TOKENS])
    return tok, dict(special_ids)


def write_tokenizer(tok: Tokenizer, special_ids: dict[str, int], path: str | Path, chat_template: str | None = None) -> None:
    """tokenizer.json + tokenizer_config.json (eos/pad `<|endoftext|>`, the added tokens, the chat template)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
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
            for t, i in sorted(special_ids.items(), key=lambda kv: kv[1])
        },
    }
    if chat_template:
        config["chat_template"] = chat_template
    (path / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
