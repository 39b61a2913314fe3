"""log.jsonl after an interrupted run is resumed: every step exactly once and in order, for SFT and GRPO alike
(the steps the interrupted run logged after its last checkpoint are dropped, then logged again by the resumed
run)."""

from __future__ import annotations

import json

import pytest

from glmv.testing.tiny_checkpoint import make_tiny_model_dir
from glmv.train.checkpoint import open_log
from glmv.train.data import encode_example
from glmv.train.recipe import Recipe
from glmv.train.rl import GRPOTrainer, Prompt
from glmv.train.trainer import Trainer


class Interrupted(Exception):
    """Stands for whatever stops a run between checkpoints (a crash, a killed job)."""


def interrupt_at(trainer, method: str, step_arg: int, step: int) -> None:
    """Make the trainer's `method`, whose positional argument `step_arg` is the 0-based step, raise at `step`."""
    real = getattr(trainer, method)

    def wrapped(*args):
        if args[step_arg] == step:
            raise Interrupted
        return real(*args)

    setattr(trainer, method, wrapped)


def logged_steps(out) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("logbase"), "glm4v_moe")


def sft(base, out) -> Trainer:
    recipe = Recipe(stage="sft", out=str(out), tasks={"count": 1.0}, steps=6, batch_size=2, lr=3e-3, warmup=1,
                    save_every=3, log_every=1)
    trainer = Trainer(recipe, base, progress=False)

    def make(task: str, index: int, thinking: bool):
        target = " ".join(str(i) for i in range(index % 4 + 1))
        return encode_example(trainer.processor, [{"role": "user", "content": "Count."}], target, thinking, task=task)

    trainer.make_example = make
    return trainer


def grpo(base, out) -> GRPOTrainer:
    recipe = Recipe(stage="rl", out=str(out), tasks={"say": 1.0}, steps=4, batch_size=1, group_size=2, lr=1e-2,
                    warmup=1, max_new_tokens=4, save_every=2)
    prompt = lambda task, index: Prompt(task, [{"role": "user", "content": f"Say {index}"}], len, thinking=False)
    return GRPOTrainer(recipe, base, prompt, progress=False)


def test_sft_resume_logs_every_step_once(base, tmp_path):
    interrupted = sft(base, tmp_path)
    interrupt_at(interrupted, "batch", 0, 5)  # during step 6 (1-based): steps 4 and 5 logged after checkpoint 3
    with pytest.raises(Interrupted):
        interrupted.train()
    assert logged_steps(tmp_path) == [1, 2, 3, 4, 5]
    before = (tmp_path / "log.jsonl").read_text().splitlines()
    sft(base, tmp_path).train(resume=True)
    after = (tmp_path / "log.jsonl").read_text().splitlines()
    assert logged_steps(tmp_path) == [1, 2, 3, 4, 5, 6]
    assert after[:3] == before[:3]  # the entries up to the checkpoint are kept as they were


def test_grpo_resume_logs_every_step_once(base, tmp_path):
    interrupted = grpo(base, tmp_path)
    interrupt_at(interrupted, "_rollouts", 2, 3)  # during step 4 (1-based): step 3 logged after checkpoint 2
    with pytest.raises(Interrupted):
        interrupted.train()
    assert logged_steps(tmp_path) == [1, 2, 3]
    grpo(base, tmp_path).train(resume=True)
    assert logged_steps(tmp_path) == [1, 2, 3, 4]


def test_open_log_keeps_entries_up_to_the_checkpoint(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"st')  # the last line cut short by the interruption
    with open_log(tmp_path) as f:  # a fresh (not resumed) run leaves what is there
        pass
    assert log.read_text().endswith('{"st')
    with open_log(tmp_path, resumed_at=2) as f:
        f.write('{"step": 3}\n')
    assert log.read_text() == '{"step": 1}\n{"step": 2}\n{"step": 3}\n'
