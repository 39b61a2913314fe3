"""The bundled nano GLM-V: loads with no --model, answers world test samples in the trained formats, and runs
from the CLI offline. (Accuracy floors join these tests when a full-length training run is bundled; the card in
glmv/assets/nano/README.md has the measured scores.)"""

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
    "ground": r"<\|begin_of_box\|>\[\d+(,\d+)+\]<\|end_of_box\|>",
    "chart_json": r"\{.*\}",
}
N = 8


@pytest.fixture(scope="module")
def llm():
    from glmv import LLM

    return LLM(progress=False)


@pytest.mark.parametrize("task", sorted(FORMATS))
def test_bundled_model_answers_in_the_trained_format(llm, task):
    from glmv import SamplingParams
    from glmv.world import sample

    samples = [sample(task, "test", i) for i in range(N)]
    outs = llm.chat([s.messages() for s in samples], SamplingParams(temperature=0, max_tokens=40, skip_special_tokens=False),
                    enable_thinking=False)
    for o in outs:
        assert re.search(FORMATS[task], o.outputs[0].text), o.outputs[0].text
        assert o.outputs[0].finish_reason == "stop"  # it learned to end its turn


def test_cli_runs_the_bundled_model_offline(tmp_path, capsys):
    from glmv.cli import main
    from glmv.world import sample

    photo = tmp_path / "photo.png"
    sample("color", "test", 0).image.save(photo)
    assert main(["run", "--image", str(photo), "--json", "--no-think", "--max-tokens", "16", "What colour is the square?"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["usage"]["completion_tokens"] >= 1 and out["finish_reason"] in ("stop", "length")
