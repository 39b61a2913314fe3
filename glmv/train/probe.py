"""Linear probes of a vision tower: what its image tokens say, read by the simplest possible reader.

For each label (an object's colour, its shape, the object count, where the object is, the letters of an OCR
word) N world images are encoded by the frozen tower (the projector's output tokens, the ones the decoder reads,
pooled per image) and a ridge classifier is fitted in closed form on 70 % of them and scored on the other 30 %.
A label a linear probe reads from pooled features is one the decoder can read from the tokens.

Pooling is the mean over an image's tokens, but a mean keeps what the tokens say, not where they are or how
many say it: the position probe reads the token map averaged into 3 x 3 cells, and the count probe the sum
(the decoder knows where tokens are from their order, and how many there are). OCR has two rows: the first
letter (26 classes; a pooled read-out holds the word's letters, not their order, so even a perfect tower
reads it only where the case gives it away) and the letters (one yes/no probe per letter that 10-90 % of the
words have, accuracies averaged).

    python -m glmv.train.probe runs/nano/vision/init runs/nano/vision/final [--n 500]
    glmv train --probe runs/nano/vision/init runs/nano/vision/final
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

LAMBDAS = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)


def _position(s) -> str | None:
    """Which third of the image, across and down, holds the centre of a lone object (9 buckets)."""
    objects = s.truth["objects"]
    if len(objects) != 1:
        return None
    x1, y1, x2, y2 = objects[0]["box"]
    return f"{min(2, int((y1 + y2) / 2000 * 3))}{min(2, int((x1 + x2) / 2000 * 3))}"


@dataclass(frozen=True)
class Label:
    task: str  # the world task whose images carry the label
    of: Callable  # sample -> its label, or None to skip the sample
    pool: str = "mean"  # "mean" or "sum" of an image's tokens, or "3x3": the token map averaged into 3 x 3 cells
    letters: bool = False  # the label is a word: one yes/no probe per letter


LABELS = {
    "colour": Label("color", lambda s: s.truth["answer"]),
    "shape": Label("shape", lambda s: s.truth["answer"]),
    "count": Label("count", lambda s: s.truth["count"], pool="sum"),
    "position": Label("caption", _position, pool="3x3"),
    "ocr_first_letter": Label("ocr", lambda s: s.truth["text"][0].lower()),
    "ocr_letters": Label("ocr", lambda s: s.truth["text"].lower(), letters=True),
}


def labelled_images(label: str, n: int, split: str = "test") -> tuple[list, list]:
    """The first n images of the label's task in `split` that carry the label, and their labels."""
    from glmv.world import sample

    spec = LABELS[label]
    images, labels, index = [], [], 0
    while len(images) < n:
        s = sample(spec.task, split, index)
        index += 1
        if (y := spec.of(s)) is not None:
            images.append(s.image)
            labels.append(y)
    return images, labels


def _pool(tokens: torch.Tensor, grid_thw: tuple[int, int, int], pool: str) -> torch.Tensor:
    if pool == "mean":
        return tokens.mean(0)
    if pool == "sum":
        return tokens.sum(0)
    _, h, w = grid_thw
    token_map = tokens.T.reshape(1, -1, h // 2, w // 2)  # tokens are row-major over the 2x2-merged grid
    return torch.nn.functional.adaptive_avg_pool2d(token_map, 3).flatten()


@torch.no_grad()
def pooled_features(model, processor, images: list, pool: str = "mean", batch_size: int = 32) -> torch.Tensor:
    """[len(images), D] (D x 9 for "3x3"): each image's output tokens of `model.visual`, pooled (see Label)."""
    visual = model.visual
    device = next(visual.parameters()).device
    out = []
    for start in range(0, len(images), batch_size):
        feats = [processor.process_image(im) for im in images[start:start + batch_size]]
        pixels = torch.cat([f.pixel_values for f in feats]).to(device, visual.dtype)
        grid = torch.tensor([f.grid_thw for f in feats], device=device)
        tokens = visual(pixels, grid).float().cpu()
        out += [_pool(t, f.grid_thw, pool) for t, f in zip(tokens.split([f.num_tokens for f in feats]), feats)]
    return torch.stack(out)


def _ridge(x: torch.Tensor, y: torch.Tensor, classes: int, lam: float) -> torch.Tensor:
    """Weights [D + 1, classes] of a ridge regression onto one-hot targets (the last row is the bias)."""
    x1 = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    reg = lam * torch.eye(x1.shape[1], dtype=x.dtype)
    reg[-1, -1] = 0  # the bias is not shrunk
    return torch.linalg.solve(x1.T @ x1 + reg, x1.T @ torch.nn.functional.one_hot(y, classes).to(x.dtype))


def _predict(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1) @ w).argmax(1)


def linear_probe(features: torch.Tensor, labels: list, train_fraction: float = 0.7, folds: int = 5,
                 seed: int = 0) -> dict[str, float]:
    """Held-out accuracy of a ridge classifier on standardised features (the penalty chosen by k-fold
    cross-validation on the training part), and the accuracy of always answering the most common class."""
    names = sorted(set(labels))
    y = torch.tensor([names.index(v) for v in labels])
    x = features.double()
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(y)))
    cut = int(train_fraction * len(y))
    tr, te = order[:cut], order[cut:]
    mean, std = x[tr].mean(0), x[tr].std(0).clamp(min=1e-8)
    x = (x - mean) / std

    def cv(lam: float) -> float:
        parts = tr.chunk(folds)
        hits = 0
        for k, held in enumerate(parts):
            fit = torch.cat([p for j, p in enumerate(parts) if j != k])
            hits += int((_predict(_ridge(x[fit], y[fit], len(names), lam), x[held]) == y[held]).sum())
        return hits / len(tr)

    lam = max(LAMBDAS, key=cv)
    accuracy = float((_predict(_ridge(x[tr], y[tr], len(names), lam), x[te]) == y[te]).double().mean())
    chance = float(torch.bincount(y[te], minlength=len(names)).max()) / len(te)
    return {"accuracy": accuracy, "chance": chance, "lambda": lam}


def letter_probes(features: torch.Tensor, words: list[str]) -> dict[str, float]:
    """linear_probe's accuracy and baseline averaged over yes/no probes of each letter in 10-90 % of the words."""
    letters = [c for c in sorted(set("".join(words))) if 0.1 <= np.mean([c in w for w in words]) <= 0.9]
    runs = [linear_probe(features, [c in w for w in words]) for c in letters]
    return {"accuracy": float(np.mean([r["accuracy"] for r in runs])),
            "chance": float(np.mean([r["chance"] for r in runs])), "letters": "".join(letters)}


def probe_models(models: list[str], n: int = 500, split: str = "test", device: str | torch.device = "cpu"
                 ) -> dict[str, dict[str, dict]]:
    """label -> model -> linear_probe() result, every model probed on the same images."""
    from glmv.inputs.processor import Processor
    from glmv.weights import load_model

    data = {label: labelled_images(label, n, split) for label in LABELS}
    results: dict[str, dict[str, dict]] = {label: {} for label in data}
    for path in models:
        model = load_model(path, dtype=torch.float32, device=device, progress=False).eval()
        processor = Processor.from_pretrained(path)
        for label, (images, ys) in data.items():
            spec = LABELS[label]
            features = pooled_features(model, processor, images, spec.pool)
            results[label][path] = letter_probes(features, ys) if spec.letters else linear_probe(features, ys)
    return results


def probe_table(results: dict[str, dict[str, dict]]) -> str:
    """Markdown: one row per label, one column per model, then the most-common-class baseline."""
    models = list(next(iter(results.values())))
    lines = ["| label | " + " | ".join(models) + " | most common class |", "|" + "---|" * (len(models) + 2)]
    for label, row in results.items():
        chance = next(iter(row.values()))["chance"]
        lines.append(f"| {label} | " + " | ".join(f"{row[m]['accuracy']:.2f}" for m in models) + f" | {chance:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", type=Path, help="checkpoint directories")
    ap.add_argument("--n", type=int, default=500, help="images per label")
    ap.add_argument("--split", default="test")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    print(probe_table(probe_models([str(m) for m in args.models], args.n, args.split, args.device)))


if __name__ == "__main__":
    main()
