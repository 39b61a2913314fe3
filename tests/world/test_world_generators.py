"""The world's generators: deterministic, disjoint splits, targets their own scorers accept."""

from __future__ import annotations

import hashlib

import pytest

from glmv.errors import InputError
from glmv.world import TASKS, sample


def fingerprint(s) -> str:
    h = hashlib.sha256()
    for img in ([s.image] if s.image is not None else []) + s.frames:  # raw pixels: as strict as PNG, faster
        h.update(f"{img.mode}{img.size}".encode())
        h.update(img.tobytes())
    h.update((s.prompt + "\x00" + s.target).encode())
    return h.hexdigest()


@pytest.mark.parametrize("task", sorted(TASKS))
def test_same_seed_same_bytes(task):
    assert fingerprint(sample(task, "train", 11)) == fingerprint(sample(task, "train", 11))
    assert fingerprint(sample(task, "train", 11)) != fingerprint(sample(task, "train", 12))


@pytest.mark.parametrize("task", sorted(TASKS))
def test_splits_are_disjoint(task):
    seen = {split: {fingerprint(sample(task, split, i)) for i in range(25)} for split in ("train", "validation", "test")}
    assert not seen["train"] & seen["test"] and not seen["train"] & seen["validation"]
    assert not seen["validation"] & seen["test"]


@pytest.mark.parametrize("task", sorted(TASKS))
def test_targets_score_one_and_wrong_answers_less(task):
    t = TASKS[task]
    for i in range(25):
        s = sample(task, "validation", i)
        assert t.score(s.target, s) == 1.0, (s.prompt, s.target)
        assert t.reward(s.target, s) == 1.0
        other = sample(task, "validation", i + 1000)
        if other.target != s.target and t.score(other.target, s) < 1.0:
            break
    else:
        pytest.fail("no wrong answer scored below 1")
    for junk in ("", "I don't know", "<think>unfinished", "[[", "{\"broken\": ", "<|begin_of_box|>"):
        assert 0.0 <= t.score(junk, s) <= 1.0 and 0.0 <= t.reward(junk, s) <= 1.0


def test_messages_carry_the_media():
    img = sample("count", "test", 0).messages()[0]["content"]
    assert img[0]["type"] == "image" and img[-1]["type"] == "text"
    vid = sample("video_order", "test", 0).messages()[0]["content"]
    assert vid[0]["type"] == "video" and vid[0]["fps"] == 2.0 and len(vid[0]["video"]) >= 4


def test_thinking_tasks_have_traces():
    for name, t in TASKS.items():
        s = sample(name, "train", 0)
        assert s.target.startswith("<think>") == t.thinking


def test_unknown_task_and_split():
    with pytest.raises(InputError, match="unknown task"):
        sample("nope", "train", 0)
    with pytest.raises(InputError, match="unknown split"):
        sample("count", "dev", 0)
