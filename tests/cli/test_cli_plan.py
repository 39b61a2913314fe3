"""`glmv plan` on the real GLM-V configs (tests/fixtures/configs): printed plans, exit codes, bad sizes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from glmv.cli import build_parser, main
from glmv.commands.plan import parse_size

CONFIGS = Path(__file__).parents[1] / "fixtures" / "configs"


@pytest.fixture
def glm45v(tmp_path) -> Path:
    """A checkpoint-like directory holding GLM-4.5V's config.json."""
    shutil.copy(CONFIGS / "glm45v.json", tmp_path / "config.json")
    return tmp_path


def test_plan_is_a_command():
    assert "plan" in build_parser().format_help()


def test_h100_plan_is_printed(glm45v, capsys):
    assert main(["plan", "--model", str(glm45v), "--device", "cuda:0", "--memory", "80GB"]) == 0
    out = capsys.readouterr().out
    assert "plan: int4 routed experts + fp8 decoder; 73.91 GB of 76.00 GB usable on cuda:0" in out
    rows = [" ".join(line.split()) for line in out.splitlines()]
    assert "routed experts 99.657B 199.31 99.74 99.74 51.39 51.39 int4" in rows
    assert "KV cache: 188416 bytes/token (bf16) x 65536 tokens x 1 sequence(s) = 12.35 GB" in out


def test_a_config_json_file_is_enough(capsys):
    assert main(["plan", "--model", str(CONFIGS / "glm41v.json"), "--device", "cpu", "--memory", "32GB"]) == 0
    assert "plan: bf16;" in capsys.readouterr().out


def test_offload_uses_cpu_memory(capsys):
    args = ["plan", "--model", str(CONFIGS / "glm46v.json"), "--device", "cuda", "--memory", "80GB"]
    assert main(args + ["--cpu-memory", "128GB"]) == 0
    assert "in CPU RAM: routed experts of decoder layers 37-45" in capsys.readouterr().out
    assert main(args + ["--cpu-memory", "8GB"]) == 1
    assert "more CPU RAM for the offloaded experts" in capsys.readouterr().out


def test_nothing_fits_exits_1_with_advice(glm45v, capsys):
    assert main(["plan", "--model", str(glm45v), "--device", "cuda", "--memory", "80GB",
                 "--max-model-len", "65536", "--max-num-seqs", "64", "--cpu-memory", "16GB"]) == 1
    out = capsys.readouterr().out
    assert "does not fit" in out and "--max-model-len" in out and "--device cpu" in out


@pytest.mark.parametrize("device", ["gpu", "mps", "cuda:x"])
def test_unplannable_device_is_one_line_error(device, glm45v, capsys):
    assert main(["plan", "--model", str(glm45v), "--device", device, "--memory", "80GB"]) == 1
    assert capsys.readouterr().err == f"glmv: error: cannot plan for device {device!r}: use cuda, cuda:N or cpu\n"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_auto_memory_needs_the_device(glm45v, capsys):
    assert main(["plan", "--model", str(glm45v), "--device", "cuda"]) == 1
    assert "CUDA was asked for" in capsys.readouterr().err


def test_auto_memory_on_cpu_plans_the_bundled_model(capsys):
    assert main(["plan", "--device", "cpu"]) == 0
    assert "plan: bf16;" in capsys.readouterr().out


@pytest.mark.parametrize("text,size", [("80GiB", 80 * 2**30), ("80GB", 80 * 10**9), ("141G", 141 * 10**9),
                                       ("24 GiB", 24 * 2**30), ("123456789", 123456789), ("1.5gib", 3 * 2**29)])
def test_sizes(text, size):
    assert parse_size(text, "--memory") == size


@pytest.mark.parametrize("bad", ["80x", "GiB", "-5GB", "0", "1e9", ""])
def test_bad_memory_is_one_line_error_naming_the_forms(bad, glm45v, capsys):
    assert main(["plan", "--model", str(glm45v), "--device", "cuda", "--memory=" + bad]) == 1
    err = capsys.readouterr().err
    assert err.startswith("glmv: error: --memory") and "auto, bytes" in err and "80GiB" in err
    assert err.count("\n") == 1


def test_cpu_memory_takes_sizes_only(glm45v, capsys):
    assert main(["plan", "--model", str(glm45v), "--device", "cuda", "--memory", "80GB", "--cpu-memory", "auto"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("glmv: error: --cpu-memory 'auto' is not a size") and "auto," not in err
