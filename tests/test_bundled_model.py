"""The bundled nano GLM-V: loads with no --model, answers world test samples in the trained formats, reads its
images (accuracy floors on the test and held-out splits), thinks when asked and not when told /nothink, and runs
from the CLI offline. The card in glmv/assets/nano/README.md has the measured scores."""

from __future__ import annotations

import json
import re

import pytest

from glmv.model_path import BUNDLED

pytestmark = pytest.mark.skipif(not (BUNDLED / "config.json").is_file(), reason="no bundled model in this copy")

# What a trained answer looks like, per task: the format the world's targets teach (an untrained model fails
# every one of these).
FORMATS = {
    "color": r"<\|begin_of_box\|>(red|green|blue|yellow|purple|orange)<\|end_of_box\|>",
    "count": r"<\|begin_of_box\|>\d+<\|end_of_box\|>",
    # one box of four 0-1000 coordinates (where it puts the box is another matter: the card's grounding row)
    "ground": r"<\|begin_of_box\|>\[\d{1,4},\d{1,4},\d{1,4},\d{1,4}\]<\|end_of_box\|>",
    "chart_json": r"\{.*\}",
}
N = 8


@pytest.fixture(scope="module")
def llm():
    from glmv import LLM

    return LLM(progress=False)


def answer_test_samples(llm, task: str, n: int, max_tokens: int, split: str = "test"):
    """The first n samples of a task's split and the model's greedy answers to them, thinking off."""
    from glmv import SamplingParams
    from glmv.world import sample

    samples = [sample(task, split, i) for i in range(n)]
    params = SamplingParams(temperature=0, max_tokens=max_tokens, skip_special_tokens=False)
    return samples, llm.chat([s.messages() for s in samples], params, enable_thinking=False)


@pytest.mark.parametrize("task", sorted(FORMATS))
def test_bundled_model_answers_in_the_trained_format(llm, task):
    _, outs = answer_test_samples(llm, task, N, max_tokens=40)
    for o in outs:
        assert re.search(FORMATS[task], o.outputs[0].text), o.outputs[0].text
        assert o.outputs[0].finish_reason == "stop"  # it learned to end its turn


# Accuracy on the first N_READ samples of the test split and of the held-out split (a renderer variant and
# wordings never trained on), floors a margin below what the bundled model scores there (over 50: colour and
# shape 1.00 on both, count 0.58 on test), each above the best constant answer (colour ~0.2, shape ~0.3, count
# "1": 0.33), so a model answering from language priors, or one that memorised the training renderer and wordings,
# fails them. Count is asserted on test only: on its held-out wording this model scores 0.42 (card), too near a
# floor above the constant answer's 0.24 there.
FLOORS = {"color": {"test": 0.8, "heldout": 0.8}, "shape": {"test": 0.8, "heldout": 0.8}, "count": {"test": 0.4}}
N_READ = 30


@pytest.mark.parametrize(("task", "split"), [(t, split) for t in sorted(FLOORS) for split in FLOORS[t]])
def test_bundled_model_reads_its_images(llm, task, split):
    from glmv.world import TASKS

    samples, outs = answer_test_samples(llm, task, N_READ, max_tokens=16, split=split)
    answers = [o.outputs[0].text for o in outs]
    accuracy = sum(TASKS[task].score(a, s) for a, s in zip(answers, samples)) / N_READ
    assert accuracy >= FLOORS[task][split], (accuracy, answers)
    assert len({o.outputs[0].answer for o in outs}) > 1  # not one constant answer


def test_bundled_model_thinks_unless_told_not_to(llm):
    from glmv import SamplingParams
    from glmv.world import sample

    s = sample("count_sum", "test", 0)  # a reasoning task: its SFT targets carry a trace
    params = SamplingParams(temperature=0, max_tokens=96)
    thinking, direct = (llm.chat([s.messages()], params, enable_thinking=on)[0].outputs[0] for on in (True, False))
    assert thinking.reasoning and thinking.answer is not None, thinking.text  # <think>trace</think> + boxed answer
    assert not direct.reasoning and direct.answer is not None, direct.text  # /nothink: the answer directly


def test_cli_runs_the_bundled_model_offline(tmp_path, capsys):
    from glmv.cli import main
    from glmv.world import sample

    photo = tmp_path / "photo.png"
    sample("color", "test", 0).image.save(photo)
    assert main(["run", "--image", str(photo), "--json", "--no-think", "--max-tokens", "16", "What colour is the square?"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["usage"]["completion_tokens"] >= 1 and out["finish_reason"] in ("stop", "length")
