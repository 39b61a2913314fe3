"""Continuous batching: sequences that join a running batch generate exactly what they generate alone."""

from __future__ import annotations

import pytest
from PIL import Image

from glmv import LLM, SamplingParams
from glmv.testing.tiny_checkpoint import make_tiny_model_dir


@pytest.fixture(scope="module")
def llm(tmp_path_factory):
    return LLM(make_tiny_model_dir(tmp_path_factory.mktemp("batching")), progress=False)


def conv(text: str, image: Image.Image | None = None) -> list[dict]:
    parts = ([{"type": "image", "image": image}] if image else []) + [{"type": "text", "text": text}]
    return [{"role": "user", "content": parts}]


def test_joining_mid_flight_equals_running_alone(llm):
    params = SamplingParams(temperature=0, max_tokens=10, ignore_eos=True)
    first = [conv("Hello"), conv("What is in this image?", Image.new("RGB", (70, 50), "red"))]
    later = [conv("Describe this image in detail please.", Image.new("RGB", (40, 90), "blue")), conv("Hi")]
    alone = [llm.chat(c, params)[0].outputs[0].token_ids for c in first + later]

    engine = llm.engine
    seqs_a = [s for r in llm.prepare_chat(first, params) for s in r.seqs]
    seqs_b = [s for r in llm.prepare_chat(later, SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)) for s in r.seqs]
    for seq in seqs_a:
        engine.add(seq)
    while min(len(s.output_ids) for s in seqs_a) < 3:
        engine.step()
    for seq in seqs_b:  # join after the first two made 3 tokens
        engine.add(seq)
    seqs_a[0].finish_reason = "abort"  # and one of the first ones is cancelled meanwhile
    while engine.has_work():
        engine.step()
    assert seqs_a[0].output_ids == alone[0][:3]
    assert seqs_a[1].output_ids == alone[1]
    assert [s.output_ids for s in seqs_b] == [alone[2][:6], alone[3][:6]]
    assert engine.blocks.num_free == engine.kv.num_blocks  # every block given back
