"""The image processor's loops, compiled by numba: the two 1-D passes of PIL's 8-bit resize and the lookup of
uint8 pixels into the patch rows. Imported only when an image is processed (numba takes ~0.4 s to import); the
compiled code is cached on disk, next to this file or in the user's cache directory.

Resize sums are int32, as in Resample.c: every product and partial sum is truncated to int32 so LLVM keeps 32-bit
lanes (numba would otherwise widen to int64, which AVX2 cannot multiply). Indices are unsigned, so numba adds no
negative-index wrap-around to each load (that halved the horizontal pass)."""

from __future__ import annotations

import numba
import numpy as np

from glmv.inputs.resample import PRECISION_BITS as _SHIFT

_HALF = np.int32(1 << (_SHIFT - 1))  # 0.5 in the fixed point: round to nearest
_u = np.uint64


def _compiled(fn):
    """``fn`` compiled without the GIL, its machine code cached on disk where numba can write. A read-only install
    with no writable cache directory compiles in each process instead (numba would refuse to decorate)."""
    try:
        return numba.njit(nogil=True, cache=True)(fn)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return numba.njit(nogil=True)(fn)


@_compiled
def across(src, dst, row0, start, taps):  # pragma: no cover (compiled)
    """Horizontal pass of RGB: ``dst[y, x] = clip(sum_t taps[x, t] * src[row0 + y, start[x] + t])`` per channel.

    src (H, W, 3) uint8, dst (rows, out_w, 3) uint8; one accumulator per channel, kept in registers.
    """
    k = _u(taps.shape[1])
    lines = src.reshape(src.shape[0], src.shape[1] * 3)
    outs = dst.reshape(dst.shape[0], dst.shape[1] * 3)
    coefficients = taps.reshape(-1)
    for y in range(dst.shape[0]):
        line, out = lines[row0 + y], outs[y]
        for x in range(_u(dst.shape[1])):
            first, row = _u(start[x]) * _u(3), x * k
            r = g = b = _HALF
            for t in range(k):
                c, at = coefficients[row + t], first + t * _u(3)
                r = np.int32(r + np.int32(np.int32(line[at]) * c))
                g = np.int32(g + np.int32(np.int32(line[at + _u(1)]) * c))
                b = np.int32(b + np.int32(np.int32(line[at + _u(2)]) * c))
            at = x * _u(3)
            out[at] = min(max(r >> _SHIFT, 0), 255)
            out[at + _u(1)] = min(max(g >> _SHIFT, 0), 255)
            out[at + _u(2)] = min(max(b >> _SHIFT, 0), 255)


@_compiled
def down(src, dst, row0, start, taps):  # pragma: no cover (compiled)
    """Vertical pass: ``dst[y] = clip(sum_t taps[y, t] * src[start[y] - row0 + t])``, whole rows at a time (the
    inner loops run along a row, so they vectorise). src (H, W, C) uint8 holds input rows from ``row0`` on."""
    width = _u(src.shape[1] * src.shape[2])
    lines = src.reshape(src.shape[0], width)
    outs = dst.reshape(dst.shape[0], width)
    acc = np.empty(width, dtype=np.int32)
    for y in range(dst.shape[0]):
        acc[:] = _HALF
        first = start[y] - row0
        for t in range(taps.shape[1]):
            c, line = taps[y, t], lines[first + t]
            for i in range(width):
                acc[i] = np.int32(acc[i] + np.int32(np.int32(line[i]) * c))
        out = outs[y]
        for i in range(width):
            out[i] = min(max(acc[i] >> _SHIFT, 0), 255)


@_compiled
def patches(pixels, lut, out, first_slot, end_slot):  # pragma: no cover (compiled)
    """Normalise ``pixels`` (rows, W, C) uint8, whole merged-patch rows, into the time slots
    ``first_slot:end_slot`` of ``out`` (rows/(p·m), W/(p·m), m, m, C, T, p, p) float32, C-contiguous.

    One patch row (p image rows) at a time: its codes are looked up in ``lut`` (C, 256) into planar floats, then
    each patch is written in its memory order, so the stores run straight through the output.
    """
    _, blocks_across, m, _, channels, slots, p, _ = out.shape
    width, P, M, C = _u(pixels.shape[1]), _u(p), _u(m), _u(channels)
    flat = out.reshape(-1)
    values = np.empty(C * P * width, dtype=np.float32)  # (C, p, W)
    per_patch = C * _u(slots) * P * P
    for patch_row in range(_u(pixels.shape[0] // p)):
        for py in range(P):
            line = pixels[patch_row * P + py]
            for x in range(width):
                for c in range(C):
                    values[(c * P + py) * width + x] = lut[c, line[x, c]]
        block_row, my = patch_row // M, patch_row % M
        for bx in range(_u(blocks_across)):
            for mx in range(M):
                at = (((block_row * _u(blocks_across) + bx) * M + my) * M + mx) * per_patch
                x0 = (bx * M + mx) * P
                for c in range(C):
                    for t in range(_u(first_slot), _u(end_slot)):
                        o = at + (c * _u(slots) + t) * P * P
                        for py in range(P):
                            row = (c * P + py) * width + x0
                            for px in range(P):
                                flat[o + px] = values[row + px]
                            o += P
