"""glmv's engine over a tensor/expert-parallel model (glmv.distributed.serving): the driver process runs the engine
unchanged, one worker process follows every forward; batched greedy generation, a chat with an image and scores
equal the 1-process LLM's."""

from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp

from glmv.distributed.testing import check_parallel_engine
from glmv.testing.tiny_checkpoint import make_tiny_model_dir


@pytest.mark.slow  # ~20-27 s on 2 busy cores: two LLM setups (tokenizer, grammar vocabulary) and a worker process
def test_engine_over_driver_and_worker_equals_one_process(tmp_path):
    base = make_tiny_model_dir(tmp_path / "base", "glm4v_moe")
    # the driver is a fresh process (it starts its own worker and process group): not this pytest process
    driver = mp.get_context("spawn").Process(target=check_parallel_engine, args=(str(base), str(tmp_path), "ep"))
    driver.start()
    driver.join(timeout=240)
    assert driver.exitcode == 0
    got = torch.load(tmp_path / "engine.pt")
    assert got["kv_heads"] == (1,)  # the paged pool holds 2 / 2 kv heads per rank
    assert got["parallel"]["ids"] == got["ref"]["ids"]  # two batched prompts, then a chat with an image
    assert max(abs(a - b) for a, b in zip(got["parallel"]["scores"], got["ref"]["scores"])) <= 1e-5


@pytest.mark.parametrize("size", [0, -2, 1.5])
def test_a_bad_tensor_parallel_size_is_one_clear_error(tmp_path, size):
    from glmv import LLM
    from glmv.errors import ConfigError

    with pytest.raises(ConfigError, match="tensor_parallel_size must be a positive integer"):
        LLM(make_tiny_model_dir(tmp_path / "m"), tensor_parallel_size=size, progress=False)
