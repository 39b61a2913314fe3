"""`glmv agent` on a world GUI screenshot: with the bundled model's own answer, and with scripted answers through
the real model and engine (the overlay written, the JSON printed, the prompt sent, a parse failure as one error
line); and the dry run's pixels."""

from __future__ import annotations

import json
import numpy as np
import pytest
from PIL import Image

import glmv.commands.agent as agent_command
from glmv import LLM
from glmv.agent import SPACES, Click, Drag, DryRunExecutor, KeyPress, Point
from glmv.agent.executor import INK
from glmv.cli import main
from glmv.model_path import BUNDLED
from glmv.testing.scripted import ScriptedDetokenizer, pieces
from glmv.testing.tiny_checkpoint import make_tiny_model_dir
from glmv.world import sample

WHITE = (255, 255, 255)


@pytest.fixture(scope="module")
def screen(tmp_path_factory):
    """The world's first GUI test sample: its screenshot on disk, its instruction and its expected action."""
    s = sample("gui_action", "test", 0)
    path = tmp_path_factory.mktemp("agent") / "screen.png"
    s.image.save(path)
    return path, s.prompt, s.truth["action"]


@pytest.fixture
def script(monkeypatch):
    """script(answer): every following chat 'writes' `answer` (a scripted detokenizer, glmv/testing/scripted.py);
    the rest is the real path: the command loads the model, renders the prompt and runs the engine. Returns the
    list the conversations sent go to."""
    prepare, sent = LLM.prepare_chat, []

    def use(answer: str) -> list:
        def scripted(self, conversations, *args, **kwargs):
            sent.extend(conversations)
            requests = prepare(self, conversations, *args, **kwargs)
            for r in requests:
                r.detoks = [ScriptedDetokenizer(pieces(answer)) for _ in r.seqs]
            return requests

        monkeypatch.setattr(LLM, "prepare_chat", scripted)
        return sent

    return use


@pytest.fixture(scope="module")
def long_context_model(tmp_path_factory):
    """A tiny checkpoint whose context holds the official desktop prompt (the bundled model's 2048 cannot)."""
    return make_tiny_model_dir(tmp_path_factory.mktemp("agent-model") / "tiny", text={"max_position_embeddings": 16384})


@pytest.mark.skipif(not (BUNDLED / "config.json").is_file(), reason="no bundled model in this copy")
def test_bundled_model_step_is_an_action_and_an_overlay_or_one_error_line(screen, tmp_path, capsys):
    """The bundled model's greedy answer either parses (an overlay that differs from the screenshot) or is
    reported as one error line quoting it: never a traceback."""
    path, prompt, _ = screen
    out = tmp_path / "overlay.png"
    code = main(["agent", "--screenshot", str(path), prompt, "--out", str(out), "--json", "--device", "cpu",
                 "--temperature", "0", "--max-tokens", "48"])
    captured = capsys.readouterr()
    if code == 0:
        result = json.loads(captured.out)
        assert result["overlay"] == str(out) and result["action"]["name"]
        assert not np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(path).convert("RGB")))
    else:
        assert code == 1 and not out.exists() and captured.out == ""
        assert captured.err.startswith("glmv: error: no mobile action in the model's answer: ")
        assert captured.err.count("\n") == 1 and "Traceback" not in captured.err


def test_step_prints_the_typed_action_and_writes_the_overlay(screen, script, tmp_path, capsys):
    path, prompt, action = screen  # the world's answer: a click on the element's box
    sent = script(f"<|begin_of_box|>{json.dumps(action)}<|end_of_box|>")
    out = tmp_path / "step.png"
    assert main(["agent", "--screenshot", str(path), prompt, "--out", str(out), "--json", "--max-tokens", "4"]) == 0
    result = json.loads(capsys.readouterr().out)
    width, height = Image.open(path).size
    x1, y1, x2, y2 = action["box_2d"][0]
    assert result["action"] == {"type": "Click", "name": "click", "pixels": False, "button": "left", "clicks": 1,
                                "element": None, "target": {"x1": x1, "y1": y1, "x2": x2, "y2": y2}}
    assert result["screen"] == [width, height] and result["overlay"] == str(out)
    x, y = result["point"]  # the box's centre, in pixels
    assert (x, y) == (round((x1 + x2) / 2 / 1000 * width), round((y1 + y2) / 2 / 1000 * height))
    overlay = np.asarray(Image.open(out))
    assert tuple(overlay[y, x]) == INK  # the crosshair's centre
    assert overlay.shape == np.asarray(Image.open(path)).shape
    # the bundled model's defaults: the world's space (mobile JSON) and its bare instruction, screenshot first
    assert sent[-1][0]["content"][1] == {"type": "text", "text": prompt}
    assert sent[-1][0]["content"][0]["type"] == "image"


def test_plain_output_names_the_action_and_the_pixel(screen, script, tmp_path, capsys):
    path, _, _ = screen
    script("Sure. <|begin_of_box|>left_double_click(start_box='[500,500]')<|end_of_box|>\nMemory:\n[]")
    out = tmp_path / "double.png"
    assert main(["agent", "-s", str(path), "Open it", "--space", "desktop", "-o", str(out), "--max-tokens", "4"]) == 0
    width, height = Image.open(path).size
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"left_double_click at ({round(width / 2)}, {round(height / 2)}) px"
    assert lines[1].startswith("Click(name='left_double_click'") and lines[2] == f"overlay: {out}"


def test_a_model_gets_the_official_prompt_of_its_space(screen, script, long_context_model, tmp_path, capsys):
    path, _, _ = screen
    sent = script("WAIT()")
    assert main(["agent", "-s", str(path), "Open the terminal", "--space", "desktop", "-m", str(long_context_model),
                 "-o", str(tmp_path / "w.png"), "--max-tokens", "2"]) == 0
    text, image = sent[-1][0]["content"]  # desktop: the screenshot after the text, as the reference does
    assert image["type"] == "image" and text["text"].startswith("You are a GUI Agent")
    assert "# Task:\nOpen the terminal" in text["text"] and "# Task Platform\nUbuntu" in text["text"]
    assert capsys.readouterr().out.splitlines()[0] == "WAIT"
    assert Image.open(tmp_path / "w.png").size == Image.open(path).size


def test_an_answer_without_an_action_is_one_error_line(screen, script, tmp_path, capsys):
    path, prompt, _ = screen
    script(" 2, orange square, green circle")
    out = tmp_path / "none.png"
    assert main(["agent", "--screenshot", str(path), prompt, "--out", str(out), "--max-tokens", "4"]) == 1
    captured = capsys.readouterr()
    assert captured.err == "glmv: error: no mobile action in the model's answer: ' 2, orange square, green circle'\n"
    assert not out.exists()


def test_a_missing_screenshot_is_one_error_line(tmp_path, capsys):
    assert main(["agent", "--screenshot", str(tmp_path / "nope.png"), "Click OK"]) == 1
    assert capsys.readouterr().err.startswith("glmv: error:")


def test_the_command_offers_the_parser_spaces(capsys):
    assert agent_command.SPACES == SPACES
    with pytest.raises(SystemExit):
        main(["agent", "--help"])
    assert "{mobile,desktop,web}" in capsys.readouterr().out


def test_dry_run_click_marks_its_point_and_nothing_far_away():
    screenshot = Image.new("RGB", (200, 100), WHITE)
    dry_run = DryRunExecutor(screenshot)
    dry_run.execute(Click(name="left_click", target=Point(500, 500)))  # thousandths: pixel (100, 50)
    drawn = np.asarray(dry_run.image)
    assert tuple(drawn[50, 100]) == INK
    assert (drawn[80:, :40] == WHITE).all()  # the bottom-left corner: far from the mark and its label
    assert (drawn[:, :60] == WHITE).all()
    assert (np.asarray(screenshot) == WHITE).all()  # the screenshot itself is left as it was


def test_dry_run_drag_draws_its_path_and_lists_what_has_no_place():
    dry_run = DryRunExecutor(Image.new("RGB", (400, 400), WHITE))
    dry_run.execute(Drag(name="left_drag", start=Point(100, 500), end=Point(900, 500)))
    drawn = np.asarray(dry_run.image)
    assert tuple(drawn[200, 200]) == INK and tuple(drawn[200, 300]) == INK  # along the arrow
    assert (drawn[300:] == WHITE).all()
    assert (drawn[:20, :100] == WHITE).all()
    dry_run.execute(KeyPress(name="key", keys=("ctrl", "s")))  # no place on screen: listed top left
    assert not (np.asarray(dry_run.image)[:20, :100] == WHITE).all()

