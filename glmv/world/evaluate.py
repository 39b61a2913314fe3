"""Evaluate a model on the world's tasks and on multiple-choice benchmark files.

    from glmv.world.evaluate import evaluate, glmv_backend, table
    results = evaluate(glmv_backend(None), ["count", "ocr"], split="test", limit=50)
    print(table(results))

An answer function takes a list of samples and returns one output text each (a batch); the backends here
build one for glmv's own engine and for any OpenAI-compatible server. Outputs are scored by each task's
scorer (1.0 = right) and RL reward, so a score here means exactly what it means during training.
"""

from __future__ import annotations

import base64
import io
import json
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from glmv.errors import GlmvError, InputError
from glmv.world import scoring
from glmv.world.core import TASKS, Sample, sample
from glmv.world.draw import boxed, font

AnswerFn = Callable[[list[Sample]], list[str]]
Scorer = Callable[[str, Sample], float]


@dataclass
class Benchmark:
    """A named list of samples with its scorer and reward (a world task, or items loaded from a file)."""

    name: str
    samples: list[Sample]
    score: Scorer
    reward: Scorer


def world_benchmark(task: str, split: str = "test", limit: int = 50) -> Benchmark:
    if task not in TASKS:
        raise InputError(f"unknown task {task!r}; known tasks: {', '.join(sorted(TASKS))}")
    t = TASKS[task]
    return Benchmark(task, [sample(task, split, i) for i in range(limit)], t.score, t.reward)


def evaluate(answer_fn: AnswerFn, tasks: str | Sequence[str | Benchmark] = "all", split: str = "test",
             limit: int = 50, progress: bool = True, batch_size: int | None = None) -> dict:
    """Score `answer_fn` on `limit` samples of each task ("all", names, or Benchmark objects).

    Samples go to answer_fn in batches of `batch_size` (default: the answer function's own `batch_size`
    attribute, else 8). Returns {"split", "limit", "tasks": {name: {"count", "score", "reward", "samples"}},
    "score", "reward"} where the top-level score and reward are means over tasks (each task weighs the same).
    """
    from tqdm import tqdm

    names = sorted(TASKS) if tasks == "all" else tasks
    benches = [b if isinstance(b, Benchmark) else world_benchmark(b, split, limit) for b in names]
    size = batch_size or getattr(answer_fn, "batch_size", 8)
    bar = tqdm(total=sum(len(b.samples) for b in benches), desc="eval", disable=not progress, unit="sample")
    results: dict[str, dict] = {}
    for b in benches:
        records = []
        for start in range(0, len(b.samples), size):
            chunk = b.samples[start:start + size]
            outputs = answer_fn(chunk)
            if len(outputs) != len(chunk):
                raise GlmvError(f"the answer function returned {len(outputs)} outputs for {len(chunk)} samples")
            records += [{"index": s.index, "output": out, "target": s.target,
                         "score": b.score(out, s), "reward": b.reward(out, s)} for s, out in zip(chunk, outputs)]
            bar.set_postfix_str(b.name)
            bar.update(len(chunk))
        results[b.name] = {"count": len(records), "score": _mean(r["score"] for r in records),
                           "reward": _mean(r["reward"] for r in records), "samples": records}
    bar.close()
    return {"split": split, "limit": limit, "tasks": results,
            "score": _mean(r["score"] for r in results.values()), "reward": _mean(r["reward"] for r in results.values())}


def _mean(values) -> float:
    values = list(values)
    return float(np.mean(values)) if values else 0.0


# --- backends ----------------------------------------------------------------------------------------------------

def glmv_backend(model: str | None = None, max_tokens: int = 256, enable_thinking: bool | None = None,
                 batch_size: int = 8, device: str = "cpu", dtype: str | None = None) -> AnswerFn:
    """Greedy answers from glmv's engine (`model` None = the bundled nano GLM-V)."""
    from glmv import LLM

    return llm_backend(LLM(model, dtype=dtype, device=device), max_tokens, enable_thinking, batch_size)


def llm_backend(llm, max_tokens: int = 256, enable_thinking: bool | None = None, batch_size: int = 8) -> AnswerFn:
    """Greedy answers from a loaded glmv.LLM."""
    from glmv import SamplingParams

    # Keep special tokens: the box and think tags are how the scorers find the answer.
    params = SamplingParams(temperature=0, max_tokens=max_tokens, skip_special_tokens=False)

    def answer(samples: list[Sample]) -> list[str]:
        outs = llm.chat([s.messages() for s in samples], params, enable_thinking=enable_thinking)
        return [o.outputs[0].text for o in outs]

    answer.batch_size = batch_size  # type: ignore[attr-defined]
    return answer


def _data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _png_url(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return _data_url(buf.getvalue(), "image/png")


def _mp4_url(frames: list[np.ndarray], fps: float) -> str:
    from glmv.world.video import write_video

    with tempfile.TemporaryDirectory() as tmp:  # PyAV's muxer wants a file name to pick the container
        path = os.path.join(tmp, "clip.mp4")
        write_video([Image.fromarray(f) for f in frames], fps, path)
        return _data_url(Path(path).read_bytes(), "video/mp4")


def openai_messages(messages: list[dict]) -> list[dict]:
    """glmv message content -> OpenAI parts: images as PNG `image_url`s, videos as mp4 `video_url`s (data URLs).

    A video is re-encoded at the sample's fps; the frames a server decodes back can differ slightly from the
    originals (lossy codec), which the world's coarse visual tasks tolerate."""
    out = []
    for m in messages:
        content = m["content"]
        if not isinstance(content, str):
            parts = []
            for c in content:
                if c["type"] == "image":
                    parts.append({"type": "image_url", "image_url": {"url": _png_url(c["image"])}})
                elif c["type"] == "video":
                    parts.append({"type": "video_url", "video_url": {"url": _mp4_url(c["video"], c.get("fps", 2.0))}})
                else:
                    parts.append(c)
            content = parts
        out.append({"role": m["role"], "content": content})
    return out


def openai_backend(url: str, model: str, api_key: str | None = None, max_tokens: int = 256,
                   enable_thinking: bool | None = None, concurrency: int = 4, timeout: float = 600.0) -> AnswerFn:
    """Answers from an OpenAI-compatible server at `url` (its root; a trailing /v1 is accepted), greedy.
    `enable_thinking` is sent as chat_template_kwargs (what vLLM, SGLang and glmv serve read)."""
    endpoint = url.rstrip("/").removesuffix("/v1") + "/v1/chat/completions"
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {api_key}"} if api_key else {})}

    def one(s: Sample) -> str:
        body = {"model": model, "messages": openai_messages(s.messages()), "temperature": 0, "max_tokens": max_tokens}
        if enable_thinking is not None:
            body["chat_template_kwargs"] = {"enable_thinking": enable_thinking}
        req = urllib.request.Request(endpoint, json.dumps(body).encode(), headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                reply = json.load(resp)
        except urllib.error.HTTPError as e:
            raise GlmvError(f"{endpoint} answered {e.code}: {e.read()[:500].decode(errors='replace')}") from None
        except urllib.error.URLError as e:
            raise GlmvError(f"cannot reach {endpoint}: {e.reason}") from None
        return reply["choices"][0]["message"].get("content") or ""

    def answer(samples: list[Sample]) -> list[str]:
        with ThreadPoolExecutor(concurrency) as pool:  # a batch's requests run side by side, in order
            return list(pool.map(one, samples))

    answer.batch_size = concurrency  # type: ignore[attr-defined]
    return answer


# --- reports -----------------------------------------------------------------------------------------------------

def table(results: dict) -> str:
    rows = [(name, str(r["count"]), f"{r['score']:.3f}", f"{r['reward']:.3f}") for name, r in results["tasks"].items()]
    rows.append(("mean", str(sum(r["count"] for r in results["tasks"].values())),
                 f"{results['score']:.3f}", f"{results['reward']:.3f}"))
    head = ("task", "n", "score", "reward")
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]

    def line(r: tuple[str, ...]) -> str:  # task names left-aligned, numbers right-aligned
        return "  ".join(x.ljust(w) if i == 0 else x.rjust(w) for i, (x, w) in enumerate(zip(r, widths)))
    return "\n".join([line(head), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])


def bar_chart(results: dict, path: str | Path) -> None:
    """A horizontal bar per task (score, 0..1) with its value, saved as a PNG."""
    items = list(results["tasks"].items())
    label_w, bar_w, row = 130, 300, 18
    img = Image.new("RGB", (label_w + bar_w + 50, 30 + row * len(items)), (255, 255, 255))
    d = ImageDraw.Draw(img)
    f = font(0, 11)
    d.text((6, 6), f"{results['split']} split, mean score {results['score']:.3f}", fill=(0, 0, 0), font=font(1, 11))
    for i, (name, r) in enumerate(items):
        y = 26 + i * row
        d.text((6, y + 2), name, fill=(0, 0, 0), font=f)
        d.rectangle((label_w, y + 2, label_w + bar_w, y + row - 2), outline=(210, 210, 210))
        if r["score"] > 0:
            d.rectangle((label_w, y + 2, label_w + bar_w * r["score"], y + row - 2), fill=(60, 110, 200))
        d.text((label_w + bar_w + 6, y + 2), f"{r['score']:.2f}", fill=(0, 0, 0), font=f)
    img.save(path)


# --- multiple-choice benchmark files -----------------------------------------------------------------------------

LETTERS = "ABCDEFGHIJ"


def _records(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise InputError(f"{path}: reading parquet needs pyarrow (pip install pyarrow)") from None
        return pq.read_table(path).to_pylist()
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _image(value, base: Path) -> Image.Image:
    """A path (relative to the file), a data: URL, base64 text, raw bytes, or a {"bytes": ...} dict (HF parquet)."""
    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, str):
        if value.startswith("data:"):
            value = base64.b64decode(value.split(",", 1)[1])
        elif (base / value).is_file():
            return Image.open(base / value).convert("RGB")
        else:
            value = base64.b64decode(value)
    return Image.open(io.BytesIO(value)).convert("RGB")


def _options(rec: dict) -> list[str]:
    opts = rec.get("options", rec.get("choices"))
    if isinstance(opts, str):  # some files store the list as JSON text
        opts = json.loads(opts)
    if opts is None:  # A/B/C/D columns
        opts = [rec[k] for k in LETTERS if rec.get(k) not in (None, "")]
    return [str(o) for o in opts]


def _letter(answer, opts: list[str]) -> str:
    """The answer as a letter, whether the file gives a letter, an index or the option's text."""
    if isinstance(answer, int):
        return LETTERS[answer]
    answer = str(answer).strip()
    if len(answer) == 1 and answer.upper() in LETTERS[:len(opts)]:
        return answer.upper()
    return LETTERS[opts.index(answer)]


def load_multiple_choice(path: str | Path, name: str | None = None, limit: int | None = None) -> Benchmark:
    """A JSONL (or parquet) file of {question, image, options | A,B,C,D, answer} records -> a Benchmark whose
    samples ask for the option's letter (boxed, GLM style) and are scored by letter match."""
    path = Path(path)
    samples = []
    for i, rec in enumerate(_records(path)[:limit]):
        try:
            opts = _options(rec)
            letter = _letter(rec["answer"], opts)
            prompt = rec["question"] + "\n" + "\n".join(f"{LETTERS[k]}. {o}" for k, o in enumerate(opts)) + \
                "\nAnswer with the option's letter."
            image = _image(rec["image"], path.parent) if rec.get("image") is not None else None
        except (KeyError, ValueError, IndexError, OSError) as e:
            raise InputError(f"{path}: record {i} is not a multiple-choice item ({type(e).__name__}: {e})") from None
        samples.append(Sample(task=name or path.stem, split="test", index=i, prompt=prompt, target=boxed(letter),
                              truth={"answer": letter, "options": opts}, image=image))
    return Benchmark(name or path.stem, samples, _letter_score, _letter_score)


def _letter_score(out: str, s: Sample) -> float:
    return scoring.letter_match(out, s.truth["answer"])
