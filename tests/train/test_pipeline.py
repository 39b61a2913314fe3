"""The bundled nano recipes, in order, on world data with a shrunken decoder: a scratch tokenizer and model,
then vision -> warm-up -> pretrain -> video -> SFT -> RL, each stage's checkpoint loading in glmv and in
transformers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import glmv
from glmv.config import GlmvConfig
from glmv.inputs.chat import normalize_messages
from glmv.inputs.processor import Processor
from glmv.testing.tiny_checkpoint import logits_gap_to_reference
from glmv.train.pipeline import run_stage, start_checkpoint
from glmv.train.recipe import Recipe
from glmv.train.release import RECIPES, STAGES
from glmv.train.tokenizer import ALL_SPECIAL

SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
             head_dim=32, moe_intermediate_size=32, n_routed_experts=4)


def recipe(name: str, out, **overrides) -> Recipe:
    return Recipe.load(RECIPES / f"{name}.yaml", out=str(out), batch_size=2, warmup=2, save_every=100, log_every=1,
                       **overrides)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    r = recipe("nano_vision", tmp_path_factory.mktemp("vision"), steps=3, tokenizer_samples=3, vocab_size=600,
               model=SMALL)
    return r, start_checkpoint(r)


def test_a_fresh_nano_model_sees_its_images(scratch):
    """Image embeddings start at the scale of the decoder's stream and differ from patch to patch; a projector
    initialised like a residual branch made them ~100x smaller than the token embeddings, and the vision tower
    never learned."""
    from glmv.world import sample

    _, path = scratch
    model = glmv.load_model(path, progress=False)
    _, media = normalize_messages(sample("color", "test", 0).messages())
    image = Processor.from_pretrained(path).process_media(media)[0][0]
    with torch.no_grad():
        feats = model.visual(image.pixel_values, torch.tensor([image.grid_thw]))
    assert feats.std() > 5 * model.language_model.embed_tokens.weight.std()
    cos = torch.nn.functional.cosine_similarity(feats[:, None], feats[None], dim=-1)
    assert cos.min() < 0.9


def test_a_fresh_tokenizer_spells_numbers_digit_by_digit(scratch):
    """Coordinates and counts get one spelling: each digit its own token (a BPE learned on the world merged only
    the frequent numbers, so `272` was one token and `860` two, and grounding collapsed to one constant box). The
    special tokens take the last ids of the recipe's vocab_size, whatever the corpus leaves unused below them."""
    from tokenizers import Tokenizer

    r, path = scratch
    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    for number in ("7", "272", "860", "1000", "[12,5,860,999]"):
        pieces = [t for t in tok.encode(number).tokens if any(c.isdigit() for c in t)]
        assert pieces == [c for c in number if c.isdigit()], number
    config = GlmvConfig.from_pretrained(path)
    assert config.text.vocab_size == r.vocab_size
    assert tok.token_to_id("<|endoftext|>") == r.vocab_size - len(ALL_SPECIAL)
    assert tok.token_to_id("<|image|>") == config.image_token_id
    assert max(tok.get_vocab().values()) == r.vocab_size - 1


def test_the_recipes_run_in_order(scratch, tmp_path):
    vision, _ = scratch
    assert [stage for stage, _ in STAGES[:2]] == ["vision", "warmup"]
    run_stage(vision)
    warmup = recipe("nano_warmup", tmp_path / "warmup", steps=10, lr=3e-3, init=f"{vision.out}/final")
    losses = run_stage(warmup)
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    previous = warmup.out
    for stage, name in STAGES[2:]:
        extra = dict(group_size=2, max_new_tokens=6) if stage == "rl" else {}
        run_stage(recipe(name, tmp_path / stage, steps=2, init=f"{previous}/final", **extra))
        previous = tmp_path / stage
    assert logits_gap_to_reference(previous / "final") < 1e-4
