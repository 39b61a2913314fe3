"""Grounding and counting: boxes read from every form GLM-V writes, mapped to the image they refer to, counts,
and LLM.ground / LLM.count on the bundled model."""

from __future__ import annotations

import pytest
from PIL import Image

from glmv import LLM, SamplingParams
from glmv.engine.grounding import (
    COUNT_PROMPT,
    GROUND_PROMPT,
    Box,
    Count,
    Grounding,
    count,
    find_boxes,
    ground,
    parse_count,
)
from glmv.errors import InputError
from glmv.testing.scripted import ScriptedDetokenizer, pieces
from glmv.world import sample

O, C = "<|begin_of_box|>", "<|end_of_box|>"


def corners(text: str, sizes=()) -> list[tuple]:
    return [b.box_1000 for b in find_boxes(text, sizes)]


def test_one_box_in_box_tokens_maps_to_pixels():
    [box] = find_boxes(f"{O}[100,200,500,1000]{C}", [(640, 480)], label="the cat")
    assert box == Box("the cat", (100, 200, 500, 1000), (64, 96, 320, 480), 0)


@pytest.mark.parametrize("text, boxes", [
    ("[[10,20,30,40],[50,60,70,80]]", [(10, 20, 30, 40), (50, 60, 70, 80)]),
    (f"{O}[[[10,20,30,40]], [[50, 60, 70, 80]]]{C}", [(10, 20, 30, 40), (50, 60, 70, 80)]),
    ("The cat is at (10, 20, 30, 40) and the dog at <50,60,70,80>.", [(10, 20, 30, 40), (50, 60, 70, 80)]),
    ("[10.5, 20, 30, 40.25]", [(10.5, 20, 30, 40.25)]),
    (f"{O}[10,20,30,40]", [(10, 20, 30, 40)]),  # an unclosed box (the answer was cut) still counts
    ("no box here, only [1, 2, 3] and [a,b,c,d]", []),
])
def test_one_or_many_boxes_in_any_brackets(text, boxes):
    assert corners(text) == boxes


def test_boxes_inside_box_tokens_win_over_those_in_the_text():
    text = f"The circle spans [100,100,300,300], roughly. {O}[110,100,300,290]{C}"
    assert corners(text) == [(110, 100, 300, 290)]
    assert corners(f"{O}a circle{C} at [100,100,300,300]") == [(100, 100, 300, 300)]  # nothing boxed: all


def test_reasoning_is_left_out():
    assert corners(f"<think>maybe [0,0,10,10]?</think>\n{O}[100,100,300,300]{C}") == [(100, 100, 300, 300)]
    # the prompt opened <think>: the completion has only its end
    assert corners(f"maybe [0,0,10,10]</think>{O}[100,100,300,300]{C}") == [(100, 100, 300, 300)]
    assert corners("<think>never finished [0,0,10,10]") == []


def test_corners_are_ordered_and_clipped_to_the_image():
    [box] = find_boxes("[900,800,100,-50]", [(200, 100)])
    assert box.box_1000 == (100, 0, 900, 800) and box.pixels == (20, 0, 180, 80)
    [box] = find_boxes("[-20,1200,1500,500]", [(200, 100)])
    assert box.box_1000 == (0, 500, 1000, 1000) and box.pixels == (0, 50, 200, 100)


def test_without_sizes_there_are_no_pixels():
    [box] = find_boxes("[1,2,3,4]")
    assert box.pixels is None and box.image_index == 0 and box.label is None


SIZES = [(100, 100), (200, 100), (400, 400)]


def test_boxes_refer_to_the_last_image_by_default():
    assert [b.image_index for b in find_boxes("[0,0,500,500] and [500,500,1000,1000]", SIZES)] == [2, 2]
    assert find_boxes("[0,0,500,500]", SIZES)[0].pixels == (0, 0, 200, 200)


@pytest.mark.parametrize("text, indices", [
    ("Image 1: [0,0,500,500] Image 2: [0,0,500,500], [10,10,20,20]", [0, 1, 1]),  # a reference holds until the next
    ("In image 2 the cat is [0,0,500,500]", [1]),
    ("the first image: [0,0,500,500]; the second image: [0,0,500,500]", [0, 1]),
    ("In the LAST image: [0,0,500,500]; picture #1: [0,0,500,500]", [2, 0]),
    ("[0,0,500,500] is in image 1", [2]),  # only references before a box count
    ("Image 7: [0,0,500,500]; the fifth image: [0,0,500,500]", [2, 2]),  # no such image: the default
])
def test_explicit_image_references_are_honoured(text, indices):
    boxes = find_boxes(text, SIZES)
    assert [b.image_index for b in boxes] == indices
    assert all(b.pixels == (0, 0, SIZES[b.image_index][0] // 2, SIZES[b.image_index][1] // 2)
               for b in boxes if b.box_1000 == (0, 0, 500, 500))


def test_references_in_a_one_image_prompt_are_ignored():
    assert [b.image_index for b in find_boxes("Image 2: [0,0,10,10]", [(50, 50)])] == [0]


@pytest.mark.parametrize("text, expected", [
    (f"{O}3{C}", 3),
    (f"{O}0{C}", 0),
    ("There are three red circles.", 3),
    ("Twelve of them.", 12),
    (f"{O}[[1,2,3,4],[5,6,7,8]]{C}", 2),  # only boxes: their number
    (f"There are 4 circles: {O}[[1,2,3,4],[5,6,7,8]]{C}", 4),  # the number the model wrote wins
    (f"I see 2, no, {O}5{C}", 5),  # the boxed answer first
    ("In image 2 there are 3 cats at [10,20,30,40]", 3),  # coordinates and image numbers are not counts
    (f"<think>maybe 7</think>{O}6{C}", 6),
    ("I cannot tell.", None),
])
def test_parse_count(text, expected):
    assert parse_count(text) == expected


@pytest.fixture(scope="module")
def llm():
    return LLM(progress=False)  # the bundled nano model


@pytest.fixture(scope="module")
def world_ground():
    return sample("ground", "test", 0)  # a scene and GLM-V's grounding request for one of its shapes


SHORT = SamplingParams(temperature=0, max_tokens=48)


def phrase_of(s) -> str:
    return s.prompt.removeprefix("Help me to locate ").removesuffix(" in the image and give me its bounding boxes.")


def test_ground_asks_glm_v_grounding_prompt_and_returns_typed_boxes(llm, world_ground):
    phrase = phrase_of(world_ground)
    assert GROUND_PROMPT.format(phrase=phrase) == world_ground.prompt  # the world asks with the same wording
    result = llm.ground(world_ground.image, phrase, sampling_params=SHORT)
    assert isinstance(result, Grounding) and result.phrase == phrase and isinstance(result.text, str)
    assert result.boxes  # the bundled model answers this with a box
    w, h = world_ground.image.size
    for b in result.boxes:
        assert isinstance(b, Box) and b.label == phrase and b.image_index == 0
        left, top, right, bottom = b.pixels
        assert 0 <= left <= right <= w and 0 <= top <= bottom <= h
    assert result == ground(llm, world_ground.image, phrase, sampling_params=SHORT)  # greedy: the same answer


def test_count_returns_a_typed_count(llm):
    s = sample("count_hard", "test", 0)
    result = llm.count(s.image, "yellow objects", sampling_params=SHORT)
    assert isinstance(result, Count) and result.phrase == "yellow objects"
    assert result.count is None or (isinstance(result.count, int) and result.count >= 0)
    assert result.count == parse_count(result.text) and all(isinstance(b, Box) for b in result.boxes)
    assert "{phrase}" in COUNT_PROMPT


def test_ground_over_several_images_maps_boxes_to_the_one_they_refer_to(llm, world_ground, monkeypatch):
    # The nano model does not write image references: script its answer, run everything else for real.
    answer = f"Image 1: {O}[0,0,500,500]{C} and {O}[500,500,1000,1000]{C}"
    prepare, shown = llm.prepare_chat, []

    def scripted(*args, **kwargs):
        requests = prepare(*args, **kwargs)
        for req in requests:
            shown.append([f.original_size for f in req.images])
            req.detoks = [ScriptedDetokenizer(pieces(answer)) for _ in req.seqs]
        return requests

    monkeypatch.setattr(llm, "prepare_chat", scripted)
    images = [Image.new("RGB", (60, 40), "white"), world_ground.image]
    scripted_params = SamplingParams(temperature=0, max_tokens=2)  # the script's rest comes with the flush
    result = llm.ground(images, "the shapes", sampling_params=scripted_params)
    assert shown == [[(60, 40), world_ground.image.size]] and result.text == answer
    w, h = world_ground.image.size
    assert [(b.image_index, b.pixels) for b in result.boxes] == [(0, (0, 0, 30, 20)),
                                                                 (0, (30, 20, 60, 40))]
    result = llm.ground(images[::-1], "the shapes", sampling_params=scripted_params)  # image 1 is now the scene
    assert [b.pixels for b in result.boxes] == [(0, 0, round(w / 2), round(h / 2)), (round(w / 2), round(h / 2), w, h)]


def test_bad_requests_are_input_errors(llm, world_ground):
    with pytest.raises(InputError, match="phrase"):
        ground(llm, world_ground.image, "  ")
    with pytest.raises(InputError, match="slot"):
        count(llm, world_ground.image, "cats", prompt="How many?")
