"""PIL's 8-bit convolution resize (``Image.resize``, libImaging/Resample.c) re-done with numba: the same
fixed-point coefficients, the same integer sums, the same pass order, so the bytes are those of ``Image.resize``.

Why not PIL itself: its resize is one call over the whole image on one thread, and its horizontal pass is scalar
code. Here any band of output rows can be made on its own (the image processor gives each thread a band), and the
vertical pass runs vectorised: 1080p RGB takes about a third of PIL's time on one thread (docs/performance.md).

Only the filters whose weights are plain arithmetic are done here (bicubic, bilinear, box): hamming and lanczos
call ``sin``/``cos``, whose last bit may differ between libm and numpy. ``plan`` returns None for those and for
sizes PIL would not resample; callers then use ``Image.resize``.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np
import PIL
from PIL import Image

log = logging.getLogger(__name__)

PRECISION_BITS = 32 - 8 - 2  # Resample.c: coefficients are fixed point with 22 fractional bits


def _bicubic(x: np.ndarray) -> np.ndarray:
    a = -0.5  # Resample.c's bicubic_filter, operation for operation (float64, as in C)
    x = np.abs(x)
    return np.where(x < 1.0, ((a + 2.0) * x - (a + 3.0)) * x * x + 1,
                    np.where(x < 2.0, (((x - 5) * x + 8) * x - 4) * a, 0.0))


def _bilinear(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    return np.where(x < 1.0, 1.0 - x, 0.0)


def _box(x: np.ndarray) -> np.ndarray:
    return np.where((x > -0.5) & (x <= 0.5), 1.0, 0.0)


# filter → (weight function, support), as Resample.c's struct filter table.
FILTERS: dict[int, tuple[Callable[[np.ndarray], np.ndarray], float]] = {
    Image.Resampling.BICUBIC: (_bicubic, 2.0),
    Image.Resampling.BILINEAR: (_bilinear, 1.0),
    Image.Resampling.BOX: (_box, 0.5),
}


@dataclass(frozen=True)
class Axis:
    """One 1-D pass: output i is ``sum_t taps[i, t] * input[start[i] + t]`` in fixed point, rounded and clipped."""

    start: np.ndarray  # (out,) int32 first input index of each output's window
    taps: np.ndarray  # (out, k) int32 coefficients; zeros pad windows shorter than k


def axis(in_size: int, out_size: int, resample: int) -> Axis:
    """Resample.c's ``precompute_coeffs`` then ``normalize_coeffs_8bpc``, for the whole input (box 0..in_size).

    Every float64 operation is the C code's, in its order (the weight sum over taps included), so each integer
    coefficient is the one PIL computes. Windows are then moved inside the input where they would run past its end
    (PIL's loop just stops there), with zero taps in front, so every output reads exactly k inputs.
    """
    weight, support = FILTERS[resample]
    scale = float(in_size) / out_size
    filterscale = max(scale, 1.0)
    support = support * filterscale
    ksize = int(np.ceil(support)) * 2 + 1
    center = (np.arange(out_size, dtype=np.float64) + 0.5) * scale
    lo = np.maximum(np.trunc(center - support + 0.5), 0).astype(np.int64)  # C's (int) truncates toward zero
    count = np.minimum(np.trunc(center + support + 0.5), in_size).astype(np.int64) - lo
    t = np.arange(ksize)
    inside = t[None, :] < count[:, None]
    w = np.where(inside, weight(((t[None, :] + lo[:, None]).astype(np.float64) - center[:, None] + 0.5)
                                * (1.0 / filterscale)), 0.0)
    total = np.zeros(out_size)
    for i in range(ksize):  # C sums tap by tap; numpy's pairwise sum could round differently
        total = total + w[:, i]
    w = np.where(total[:, None] != 0.0, w / np.where(total == 0.0, 1.0, total)[:, None], w)
    fixed = np.trunc(np.where(w < 0, w * (1 << PRECISION_BITS) - 0.5, w * (1 << PRECISION_BITS) + 0.5))
    k = int(count.max())
    start = np.minimum(lo, in_size - k)
    src = np.arange(k)[None, :] - (lo - start)[:, None]  # tap t of the moved window is tap src of PIL's
    keep = (src >= 0) & (src < count[:, None])
    taps = np.where(keep, np.take_along_axis(fixed, np.clip(src, 0, ksize - 1), axis=1), 0).astype(np.int32)
    return Axis(start.astype(np.int32), taps)


def horizontal_first(in_w: int, in_h: int, out_w: int, out_h: int) -> bool:
    """PIL's pass order. Pillow 13 runs the vertical pass first when the height shrinks by more than twice what the
    width does; earlier releases always start with the horizontal pass. (``plan`` checks this against PIL.)"""
    if int(PIL.__version__.split(".")[0]) < 13:
        return True
    return not (in_h - out_h > 0 and in_h - out_h > (in_w - out_w) * 2)


@dataclass(frozen=True)
class Plan:
    """How PIL resizes an image to ``out_size`` (width, height) with one filter; ``rows`` makes any band of it."""

    out_size: tuple[int, int]
    across: Axis | None  # the horizontal pass; None where the width is kept (PIL skips the pass)
    down: Axis | None  # the vertical pass
    across_first: bool

    def rows(self, src: np.ndarray, y0: int, y1: int) -> np.ndarray:
        """Output rows ``y0:y1``, (y1 - y0, out_w, 3) uint8, of the RGB image ``src`` (in_h, in_w, 3) uint8,
        C-contiguous. (Not RGBA: PIL premultiplies alpha around its resize.)

        Equal to the same rows of ``Image.resize``: each output row depends only on its own window of input rows, so
        a band needs only those (horizontal-first recomputes the few rows shared with the neighbouring bands).
        """
        if self.down is None:  # width only
            return self._across(src, y0, y1 - y0)
        start, taps = self.down.start[y0:y1], self.down.taps[y0:y1]
        if self.across is None:
            return self._down(src, 0, start, taps)
        if self.across_first:
            first, last = int(start.min()), int(start.max()) + taps.shape[1]  # the input rows the band reads
            return self._down(self._across(src, first, last - first), first, start, taps)
        return self._across(self._down(src, 0, start, taps), 0, y1 - y0)

    def _across(self, src: np.ndarray, row0: int, n: int) -> np.ndarray:
        """The horizontal pass of ``src``'s rows ``row0:row0 + n``."""
        from glmv.inputs import _image_kernels as kernels

        out = np.empty((n, self.out_size[0], 3), dtype=np.uint8)
        kernels.across(src, out, row0, self.across.start, self.across.taps)
        return out

    @staticmethod
    def _down(src: np.ndarray, row0: int, start: np.ndarray, taps: np.ndarray) -> np.ndarray:
        """The vertical pass for the output rows of ``start``/``taps``; ``src`` holds input rows from ``row0`` on."""
        from glmv.inputs import _image_kernels as kernels

        out = np.empty((len(start), src.shape[1], 3), dtype=np.uint8)
        kernels.down(src, out, row0, start, taps)
        return out


@functools.lru_cache(maxsize=64)
def plan(in_size: tuple[int, int], out_size: tuple[int, int], resample: int) -> Plan | None:
    """The plan for ``Image.resize(out_size, resample)`` of an ``in_size`` (width, height) image, or None where
    PIL must do it: another filter, no resampling at all, or a Pillow whose bytes ours do not equal."""
    if resample not in FILTERS or in_size == out_size or not _matches_pil(int(resample)):
        return None
    return _plan(in_size, out_size, resample)


def _plan(in_size: tuple[int, int], out_size: tuple[int, int], resample: int) -> Plan:
    """``plan`` without the check against PIL (which itself uses this)."""
    (in_w, in_h), (out_w, out_h) = in_size, out_size
    return Plan(out_size,
                axis(in_w, out_w, resample) if in_w != out_w else None,
                axis(in_h, out_h, resample) if in_h != out_h else None,
                horizontal_first(in_w, in_h, out_w, out_h))


def resize(src: np.ndarray, size: tuple[int, int], resample: int) -> np.ndarray:
    """``np.asarray(Image.fromarray(src).resize(size, resample))`` for an RGB image, (H, W, 3) uint8."""
    p = plan((src.shape[1], src.shape[0]), size, resample)
    if p is None:
        return np.asarray(Image.fromarray(src).resize(size, resample=resample))
    return p.rows(np.ascontiguousarray(src), 0, size[1])


# Sizes (width, height) whose pass order differs in Pillow 13: vertical first, horizontal first.
_PROBES = [((98, 97), (112, 84)), ((97, 98), (84, 112)), ((61, 40), (23, 17))]


@functools.lru_cache(maxsize=None)
def _matches_pil(resample: int) -> bool:
    """Once per filter and process: our bytes equal PIL's on small images that take either pass order. False (and
    a warning) where the installed Pillow resamples differently; PIL is used then."""
    rng = np.random.default_rng(0)
    for (in_w, in_h), (out_w, out_h) in _PROBES:
        src = rng.integers(0, 256, (in_h, in_w, 3), dtype=np.uint8)
        expected = np.asarray(Image.fromarray(src).resize((out_w, out_h), resample=resample))
        ours = _plan((in_w, in_h), (out_w, out_h), resample).rows(src, 0, out_h)
        if not np.array_equal(ours, expected):
            log.warning("Pillow %s resizes differently from glmv's copy of its arithmetic: images are resized by "
                        "PIL alone (slower; same bytes)", PIL.__version__)
            return False
    return True
