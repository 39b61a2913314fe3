"""GLM-Image's 3-axis position ids: for the prompt, and the decode schedule of the tokens the prior generates.

Follows transformers 5.17's `GlmImageModel.get_rope_index` (spec 1.4, 1.6):
  prompt   text tokens advance (t, h, w) together. A source image (`<start> <|image|> x h*w <end>`, its ids already
           or about to be VQ ids) at running position p gets t = p, h = p + row, w = p + col, then p += max(h, w).
           Image start and end tokens count as text (before and after the block).
  decode   the target grids are generated in REVERSE order of the processor's list: for text-to-image the grids are
           [large, preview], so the prior emits the preview raster first, then the large one, then EOS. Each grid
           at base b: t = b, h = b + row, w = b + col, then b += max(h, w); one last (b, b, b) for the token after
           the last grid. The k-th generated token fed back (k = 0, 1, ...) takes column k of the schedule.
A grid list per sample holds its source images' grids first (one per image end token in the prompt), then the
target grids; the number of image end tokens decides which are which, as in the reference.
"""

from __future__ import annotations

import math

import torch

from glmv.errors import InputError

Grid = tuple[int, int, int]  # (t, h, w) in 32-px tokens for targets, in patches for source images


def target_grids(height: int, width: int, text_to_image: bool = True) -> list[Grid]:
    """The processor's target grids for an image of height x width px (floored to multiples of 32):
    text-to-image [(1, h, w), (1, ph, pw)] with a ~16x16 preview of the same aspect, image-to-image [(1, h, w)]."""
    h, w = height // 32, width // 32
    if h < 1 or w < 1:
        raise InputError(f"GLM-Image generates images of at least 32x32 px, got {width}x{height}")
    if not text_to_image:
        return [(1, h, w)]
    ratio = h / w
    return [(1, h, w), (1, int(math.sqrt(ratio) * 16), int(math.sqrt(1 / ratio) * 16))]


def grid_block(base: int, grid: Grid, device=None) -> torch.Tensor:
    """Positions [3, t*h*w] of a grid placed at running position `base` (row-major)."""
    t, h, w = grid
    tt, hh, ww = torch.meshgrid(torch.arange(t, device=device), torch.arange(h, device=device),
                                torch.arange(w, device=device), indexing="ij")
    return torch.stack([tt.flatten(), hh.flatten(), ww.flatten()]) + base


def decode_schedule(base: int, grids: list[Grid], device=None) -> torch.Tensor:
    """Positions [3, sum(h*w) + 1] for the tokens fed back while generating `grids` (the processor's order; they
    are generated last-first) from running position `base`; the last column follows the last grid."""
    pieces = []
    for _, h, w in reversed(grids):
        pieces.append(grid_block(base, (1, h, w), device))
        base += max(h, w)
    pieces.append(torch.full((3, 1), base, device=device))
    return torch.cat(pieces, dim=1)


def _prompt_positions(ids: list[int], grids: list[Grid], start_id: int, end_id: int,
                      device) -> tuple[torch.Tensor, int, int]:
    """(positions [3, len(ids)], running position after the prompt, number of source images) for one sample."""
    ends = [i for i, t in enumerate(ids) if t == end_id]
    starts = [i + 1 for i, t in enumerate(ids) if t == start_id]  # the first token after each image start
    if len(ends) > len(grids):
        raise InputError(f"the prompt has {len(ends)} source images (image end tokens) but only {len(grids)} grids "
                         "were given; pass one grid per source image, then the target grids")
    pieces, pos, prev_end = [], 0, 0
    # The reference pairs the i-th image start with the i-th image end (the trailing generation BOS, also an
    # image start, pairs with nothing).
    for (start, end), grid in zip(zip(starts, ends), grids):
        n_text = start - prev_end
        pieces.append(torch.arange(pos, pos + n_text, device=device).expand(3, -1))
        pos += n_text
        t, h, w = grid
        if end - start != t * h * w:
            raise InputError(f"source image {len(pieces)} has {end - start} tokens between its start and end tokens "
                             f"but its grid {grid} needs {t * h * w}; expand <|image|> to t*h*w placeholders")
        pieces.append(grid_block(pos, grid, device))
        pos += max(h, w)
        prev_end = end
    n_text = len(ids) - prev_end
    pieces.append(torch.arange(pos, pos + n_text, device=device).expand(3, -1))
    pos += n_text
    return torch.cat(pieces, dim=1), pos, len(ends)


def rope_index(
    input_ids: torch.Tensor,
    grids: list[list[Grid]] | None,
    attention_mask: torch.Tensor | None,
    image_start_id: int,
    image_end_id: int,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """input_ids [B, L] (left padding marked 0 in attention_mask [B, L]) and per-sample grid lists ->
    (position_ids [3, B, L], decode positions [B, 3, D] or None).

    Without grids (a text-only prompt) positions are 0..L-1 and there is no decode schedule: continue with
    L, L+1, ... on all axes. Padding positions hold 1, as in the reference (never attended to). Schedules of
    different lengths are padded by repeating their last column, as in the reference."""
    b, n = input_ids.shape
    device = input_ids.device
    if grids is None:
        return torch.arange(n, device=device).expand(3, b, n).contiguous(), None
    if len(grids) != b:
        raise InputError(f"{len(grids)} grid lists were given for a batch of {b} prompts (one list per prompt)")
    position_ids = torch.ones(3, b, n, dtype=torch.long, device=device)
    schedules = []
    for row in range(b):
        keep = attention_mask[row].bool() if attention_mask is not None else torch.ones(n, dtype=torch.bool,
                                                                                        device=device)
        positions, end, n_source = _prompt_positions(input_ids[row][keep].tolist(), grids[row], image_start_id,
                                                     image_end_id, device)
        position_ids[:, row, keep] = positions
        schedules.append(decode_schedule(end, grids[row][n_source:], device))
    longest = max(s.shape[1] for s in schedules)
    decode = torch.stack([torch.cat([s, s[:, -1:].expand(3, longest - s.shape[1])], 1) for s in schedules])
    return position_ids, decode


def step_positions(decode: torch.Tensor, step: int, n: int = 1) -> torch.Tensor:
    """Positions [3, B, n] for the generated tokens step .. step+n-1 fed back (0 = the first generated token)."""
    if step < 0 or step + n > decode.shape[2]:
        raise InputError(f"generated tokens {step}..{step + n - 1} are past the decode schedule ({decode.shape[2]} "
                         "tokens): the prior generates exactly the target grids' tokens, then EOS")
    return decode[:, :, step : step + n].permute(1, 0, 2)
