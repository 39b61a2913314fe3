"""Image-caption retrieval: pick the matching caption for an image, or the matching panel for a caption, and
`retrieval_set` (N images, N captions) for recall@1 of an embedding or scoring model.

Distractor captions are hard negatives: the true scene with one object's colour or shape changed.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from glmv.world import scoring
from glmv.world.core import register, rng_for
from glmv.world.draw import COLOURS, SHAPES, boxed, canvas, font
from glmv.world.scenes import caption_text, scene
from glmv.world.style import PLAIN_STYLE, Style

PANEL = 108  # a 2 x 2 grid of panels: a 224 px square image


def altered(rng: np.random.Generator, objects: list[dict]) -> list[dict]:
    """The objects with one of them given another colour or shape."""
    out = [dict(o) for o in objects]
    o = out[rng.integers(len(out))]
    if rng.integers(2):
        o["colour"] = [c for c in COLOURS if c != o["colour"]][rng.integers(len(COLOURS) - 1)]
    else:
        o["shape"] = [s for s in SHAPES if s != o["shape"]][rng.integers(len(SHAPES) - 1)]
    return out


def options(prompt: str, captions: list[str]) -> str:
    return prompt + "\n" + "\n".join(f"{i}) {c}" for i, c in enumerate(captions, 1))


def _choice_score(out, s) -> float:
    return scoring.numeric(out, s.truth["answer"])


@register("retrieve_caption", "retrieval", _choice_score)
def retrieve_caption(rng, style):
    img, objects = scene(rng, style, int(rng.integers(1, 4)))
    n = int(rng.integers(3, 5))
    captions = [caption_text(objects)]
    while len(captions) < n:
        c = caption_text(altered(rng, objects))
        if c not in captions:
            captions.append(c)
    order = rng.permutation(n)
    shown = [captions[i] for i in order]
    answer = int(np.flatnonzero(order == 0)[0]) + 1
    return dict(image=img, prompt=options(style.ask("retrieve_caption"), shown),
                target=boxed(str(answer)), truth={"answer": answer, "captions": shown})


def distinct_scenes(rng: np.random.Generator, style: Style, n: int) -> tuple[list[Image.Image], list[str]]:
    """n scenes of 1-3 shapes whose captions all differ."""
    images, captions = [], []
    while len(images) < n:
        img, objects = scene(rng, style, int(rng.integers(1, 4)))
        c = caption_text(objects)
        if c not in captions:
            images.append(img)
            captions.append(c)
    return images, captions


@register("retrieve_image", "retrieval", _choice_score)
def retrieve_image(rng, style):
    n = 4
    panels, captions = distinct_scenes(rng, style, n)
    img = canvas(rng, style, 2 * PANEL + 8, 2 * PANEL + 8)
    d = ImageDraw.Draw(img)
    for i, p in enumerate(panels):
        x, y = 4 + (i % 2) * (PANEL + 2), 4 + (i // 2) * (PANEL + 2)
        scale = PANEL / max(p.size)  # keep the aspect ratio: circles must stay circles
        p = p.resize((round(p.width * scale), round(p.height * scale)), Image.Resampling.BILINEAR)
        px, py = x + (PANEL - p.width) // 2, y + (PANEL - p.height) // 2
        img.paste(p, (px, py))
        d.rectangle((px - 1, py - 1, px + p.width, py + p.height), outline=(90, 90, 90))
        d.rectangle((x, y, x + 13, y + 15), fill=(255, 255, 255), outline=(20, 20, 20))
        d.text((x + 7, y + 8), str(i + 1), fill=(20, 20, 20), font=font(1, 11), anchor="mm")
    answer = int(rng.integers(n)) + 1
    prompt = style.ask("retrieve_image", caption=captions[answer - 1])
    return dict(image=img, prompt=prompt, target=boxed(str(answer)), truth={"answer": answer, "captions": captions})


def retrieval_set(split: str, index: int, n: int = 8) -> tuple[list[Image.Image], list[str]]:
    """n images and their n captions (caption i describes image i, all captions distinct), deterministic in
    (split, index) and disjoint across splits like every task."""
    return distinct_scenes(rng_for("retrieval_set", split, index), PLAIN_STYLE, n)


def recall_at_1(similarity) -> float:
    """similarity[i][j]: how well image i matches caption j -> fraction of images whose best caption is their own."""
    sim = np.asarray(similarity, dtype=np.float64)
    return float(np.mean(sim.argmax(axis=1) == np.arange(len(sim))))


def evaluate_retrieval(llm, split: str = "test", sets: int = 10, n: int = 8) -> dict:
    """recall@1 of image -> caption retrieval over `sets` retrieval sets of n, two ways: by embeddings (cosine of
    `llm.embed` of the image asked for a caption and of the caption as a user message) and by likelihood
    (`llm.score` of every caption as the answer to that question). `llm`: a glmv.LLM."""
    ask = PLAIN_STYLE.ask("caption")
    by_embed, by_score = [], []
    for index in range(sets):
        images, captions = retrieval_set(split, index, n)
        queries = [[{"role": "user", "content": [{"type": "image", "image": im}, {"type": "text", "text": ask}]}]
                   for im in images]
        image_vecs = np.array([o.outputs.embedding for o in llm.embed(queries)])
        text_vecs = np.array([o.outputs.embedding for o in llm.embed([[{"role": "user", "content": c}]
                                                                     for c in captions])])
        by_embed.append(recall_at_1(image_vecs @ text_vecs.T))
        by_score.append(recall_at_1([[o.outputs.score for o in llm.score(q, captions)] for q in queries]))
    return {"split": split, "sets": sets, "candidates": n, "chance": 1 / n,
            "embed_recall_at_1": float(np.mean(by_embed)), "score_recall_at_1": float(np.mean(by_score))}
