"""The command line where it used to break: `python -m glmv`, devices this machine lacks (one clear error, `auto` by
default), and `glmv bench` never printing an absurd rate."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
import time

import pytest
import torch

from glmv.cli import build_parser, main
from glmv.device import resolve_device
from glmv.engine.llm import LLM
from glmv.errors import ConfigError, GlmvError
from glmv.testing.tiny_checkpoint import make_tiny_model_dir
from glmv.timing import median_seconds, median_time

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
NO_MPS = pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("robust"))


def test_python_m_glmv_is_the_cli():
    done = subprocess.run([sys.executable, "-m", "glmv", "--help"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: glmv ") and "bench" in done.stdout and "train" in done.stdout


# --- devices ------------------------------------------------------------------------------------------------------
def commands(model_dir, tmp_path) -> dict[str, list[str]]:
    """Every command that takes --device, with arguments that would otherwise get as far as loading a model."""
    return {
        "run": ["run", "--model", str(model_dir), "hi"],
        "chat": ["chat", "--model", str(model_dir)],
        "bench": ["bench", "--model", str(model_dir), "--repeats", "1"],
        "serve": ["serve", "--model", str(model_dir), "--port", "0"],
        "eval": ["eval", "--model", str(model_dir), "--tasks", "count", "--limit", "1"],
        "train": ["train", "nano_sft", "--out", str(tmp_path / "run"), "--init", str(model_dir)],
        "ground": ["ground", "--model", str(model_dir), str(tmp_path / "scene.png"), "the cat"],
        "agent": ["agent", "--model", str(model_dir), "--screenshot", str(tmp_path / "screen.png"), "Click OK"],
    }


def test_every_device_option_defaults_to_auto(model_dir, tmp_path):
    for name, argv in commands(model_dir, tmp_path).items():
        assert build_parser().parse_args(argv).device == "auto", name


@pytest.mark.parametrize("device, message", [
    pytest.param("cuda", "CUDA was asked for (device 'cuda') but", marks=NO_CUDA),
    pytest.param("mps", "MPS (Apple GPU) was asked for but", marks=NO_MPS),
])
@pytest.mark.parametrize("command", ["run", "chat", "bench", "serve", "eval", "train"])
def test_missing_device_is_one_clear_error(model_dir, tmp_path, capsys, command, device, message):
    assert main(commands(model_dir, tmp_path)[command] + ["--device", device]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"glmv: error: {message}") and "--device cpu" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # refused before any work


def test_unknown_device_names_the_choices():
    with pytest.raises(ConfigError, match=r"unknown device 'gpu': use auto, cpu, cuda, cuda:N or mps"):
        resolve_device("gpu")


def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_cuda_build_without_a_usable_gpu(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no CUDA GPU is visible.*nvidia-smi.*--device cpu"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match=r"'cuda:3' was asked for but this machine has 1 CUDA GPU\(s\) \(cuda:0 to"):
        resolve_device("cuda:3")
    assert resolve_device("cuda:0") == torch.device("cuda:0")


@NO_CUDA
@NO_MPS
def test_llm_takes_auto_and_keeps_fp32_on_cpu(model_dir):
    llm = LLM(model_dir, device="auto", progress=False)
    assert llm.model.device == torch.device("cpu") and llm.model.dtype == torch.float32
    with pytest.raises(ConfigError, match="CUDA was asked for"):
        LLM(model_dir, device="cuda", progress=False)


# --- bench --------------------------------------------------------------------------------------------------------
TICKS = itertools.count()


def ticking_clock() -> float:
    """A clock too coarse to see fast work: each reading is one 1 ms tick after the last, however long the work
    between them took (so a run with decoding and one without measure the same)."""
    return next(TICKS) * 1e-3


@pytest.mark.parametrize("clock", ["real", "coarse"])
def test_bench_rates_are_finite_and_plausible(model_dir, capsys, monkeypatch, clock):
    if clock == "coarse":
        monkeypatch.setattr(time, "perf_counter", ticking_clock)
    assert main(["bench", "--model", str(model_dir), "--device", "cpu", "--prompt-tokens", "16", "--decode-tokens",
                 "4", "--batch", "2", "--batch", "4", "--image-size", "56", "--repeats", "1"]) == 0
    rates = {line.split()[0]: float(line.split()[1]) for line in capsys.readouterr().out.splitlines()
             if "_per_s" in line}
    assert set(rates) == {"prefill_tokens_per_s", "decode_tokens_per_s_batch2", "decode_tokens_per_s_batch4"}
    for name, rate in rates.items():
        assert math.isfinite(rate) and 0 < rate < 1e9, (name, rate)


@pytest.mark.parametrize("flag, value, message", [
    ("--repeats", "0", "--repeats must be at least 1, got 0"),
    ("--decode-tokens", "1", "--decode-tokens must be at least 2, got 1"),
    ("--batch", "0", "--batch sizes must be at least 1, got [0]"),
])
def test_bench_refuses_settings_that_measure_nothing(model_dir, capsys, flag, value, message):
    assert main(["bench", "--model", str(model_dir), "--device", "cpu", flag, value]) == 1
    assert capsys.readouterr().err == f"glmv: error: {message}\n"


def test_timing_measures_until_the_clock_can_tell():
    assert median_time(lambda: None, repeats=1) > 0
    with pytest.raises(GlmvError, match="measure a larger piece of work"):
        median_seconds(lambda: 0.0, repeats=1)
    with pytest.raises(ValueError, match="repeats must be at least 1"):
        median_time(lambda: None, repeats=0)


def test_threads_sets_torchs_thread_count(model_dir, capsys):
    import torch

    before = torch.get_num_threads()
    try:
        assert main(["run", "--model", str(model_dir), "--threads", "1", "--max-tokens", "1", "hi"]) == 0
        assert torch.get_num_threads() == 1
        assert main(["run", "--model", str(model_dir), "--threads", "0", "hi"]) == 1
        assert "--threads must be at least 1" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)


def test_default_threads_leave_the_cores_other_processes_use():
    from glmv.device import default_threads

    assert default_threads(cores=2, load=0.1) == 2
    assert default_threads(cores=2, load=1.0) == 1  # one other busy process: one thread, not a waiting team
    assert default_threads(cores=2, load=7.5) == 1  # never fewer than one
    assert default_threads(cores=16, load=3.4) == 13
    assert default_threads(cores=4, load=-1.0) == 4  # never more than the cores this process may use
    assert 1 <= default_threads() <= len(__import__("os").sched_getaffinity(0))
