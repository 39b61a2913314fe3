"""The glmv command line on a tiny checkpoint: run, chat, bench, help and errors."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
from PIL import Image

from glmv.cli import build_parser, main
from glmv.model_path import BUNDLED
from glmv.testing.tiny_checkpoint import make_tiny_model_dir


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("cli"))


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "photo.png"
    Image.new("RGB", (80, 60), "red").save(path)
    return path


def test_run_json_answers_with_usage(model_dir, image, capsys):
    assert main(["run", "--model", str(model_dir), "--image", str(image), "--json", "--max-tokens", "6",
                 "--temperature", "0", "What is in this image?"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["usage"]["completion_tokens"] >= 1 and out["usage"]["prompt_tokens"] > 16  # 16 image tokens + text
    assert out["finish_reason"] in ("stop", "length")


def test_run_streams_the_same_text_as_json(model_dir, image, capsys):
    args = ["run", "--model", str(model_dir), "--image", str(image), "--max-tokens", "8", "--temperature", "0", "Hi"]
    main(args)
    streamed = capsys.readouterr().out
    main(args[:1] + ["--json"] + args[1:])
    assert streamed == json.loads(capsys.readouterr().out)["text"] + "\n"


def test_chat_keeps_history_and_handles_commands(model_dir, image):
    from glmv.commands import chat

    args = build_parser().parse_args(["chat", "--model", str(model_dir), "--max-tokens", "4", "--temperature", "0"])
    stdin = io.StringIO(f"/image {image}\nWhat is this?\n/think\nAnd now?\n/reset\n/help\nbye\n/exit\n")
    stdout = io.StringIO()
    assert chat.run(args, stdin, stdout) == 0
    text = stdout.getvalue()
    assert f"attached {image}" in text and "thinking off" in text and "new conversation" in text and "/video" in text


def test_bad_image_is_one_line_error(model_dir, tmp_path, capsys):
    bad = tmp_path / "x.png"
    bad.write_bytes(b"not an image")
    assert main(["run", "--model", str(model_dir), "--image", str(bad), "hi"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("glmv: error: message 0, part 0 (image)") and "Traceback" not in err


@pytest.mark.skipif((BUNDLED / "config.json").is_file(), reason="the bundled model is installed")
def test_no_model_says_what_to_pass(capsys):
    assert main(["run", "hello"]) == 1
    assert "pass a checkpoint directory" in capsys.readouterr().err


def test_bench_json(model_dir, capsys):
    assert main(["bench", "--model", str(model_dir), "--prompt-tokens", "16", "--decode-tokens", "4", "--batch", "2",
                 "--image-size", "56", "--repeats", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["decode_tokens_per_s_batch2"] > 0 and out["prefill_tokens_per_s"] > 0 and out["image_tokens"] > 0
    assert out["caption_latency_s"] > 0


def test_help_is_fast_and_lists_commands():
    out = subprocess.run([sys.executable, "-m", "glmv.cli", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("run", "chat", "bench"):
        assert command in out
