"""The model runner: turns one scheduled forward (sequences, and how many of their tokens to compute) into the
model's tensors, runs the model over the paged cache, and returns each row's next-token logits.

Rows are left-padded to the longest chunk. Everything is prepared here as tensors on the host (ids, types, 3D
positions, media rows, slots, the attention mask or block tables), so the model itself sees plain shapes and reads
no device values. With the "sdpa" backend a row's keys are its cached tokens (left-padded to the longest context)
followed by its chunk; with "flex" the pool is read in place (glmv/engine/paged_kv.py). A decode step (every row
feeding back one generated token, "sdpa") gets its inputs from `_decode_inputs`, built for the whole batch at
once, and goes to the compiled step when there is one.
"""

from __future__ import annotations

import numpy as np
import torch

from glmv.engine.compiled_step import MODES, CompiledDecode
from glmv.engine.paged_kv import BACKENDS, FlexPagedStep, PagedKVCache, PagedStep
from glmv.engine.sequence import Sequence
from glmv.errors import ConfigError
from glmv.lora.serving import lora_batch
from glmv.model.cache import attention_mask_for
from glmv.model.glm4v import GlmvForConditionalGeneration
from glmv.model.positions import IMAGE, VIDEO


class ModelRunner:
    def __init__(self, model: GlmvForConditionalGeneration, cache: PagedKVCache, attention_backend: str = "sdpa",
                 compile: bool = False, compile_mode: str = "default"):
        if attention_backend not in BACKENDS:
            raise ConfigError(f"attention backend {attention_backend!r}: use one of {', '.join(BACKENDS)}")
        if compile_mode not in MODES:
            raise ConfigError(f"compile mode {compile_mode!r}: use one of {', '.join(MODES)}")
        if compile and attention_backend != "sdpa":
            raise ConfigError("compile=True compiles the 'sdpa' backend's decode step; use attention_backend='sdpa'")
        self.model, self.cache, self.backend = model, cache, attention_backend
        # decode steps (every row one token, no media) through torch.compile (glmv/engine/compiled_step.py)
        self.decode = CompiledDecode(model, cache, compile_mode) if compile else None

    @torch.inference_mode()
    def forward(self, work: list[tuple[Sequence, int]]) -> torch.Tensor:
        """work: (sequence, tokens to compute from its num_computed on). Writes their keys/values and returns the
        logits [B, vocab] (fp32) after each row's last computed token."""
        device = self.model.device
        decoding = self._decode_inputs(work) if self.backend == "sdpa" else None
        if decoding is not None and self.decode is not None:
            return self.decode(*decoding)
        if decoding is not None:  # eager decode: the same inputs, the key mask made here
            ids, types, positions, write, read, real = decoding
            mask = real.bool()[:, None, None, :].to(device) if len(work) > 1 else None
            return self._run(work, ids, types, positions, PagedStep(self.cache, write.to(device), read.to(device), mask),
                             {IMAGE: [], VIDEO: []}, 1)
        b = len(work)
        q = max(n for _, n in work)
        ids = torch.zeros(b, q, dtype=torch.long)
        types = torch.zeros(b, q, dtype=torch.long)
        positions = torch.zeros(3, b, q, dtype=torch.long)
        write = torch.full((b, q), self.cache.pad_slot, dtype=torch.long)
        media: dict[int, list[torch.Tensor]] = {IMAGE: [], VIDEO: []}
        for i, (seq, n) in enumerate(work):
            start, end = seq.num_computed, seq.num_computed + n
            ids[i, q - n :] = torch.tensor(seq.tokens(start, end))
            types[i, q - n :] = seq.types(start, end)
            positions[:, i, q - n :] = seq.positions(start, end)
            write[i, q - n :] = self.cache.slots(seq.block_table, end)[start:]
            for kind in (IMAGE, VIDEO):
                rows = seq.media_rows(kind, start, end)
                if rows is not None:
                    media[kind].append(rows)
        step = (self._sdpa_step if self.backend == "sdpa" else self._flex_step)(work, write, q, device)
        return self._run(work, ids, types, positions, step, media, q)

    def _run(self, work: list[tuple[Sequence, int]], ids: torch.Tensor, types: torch.Tensor, positions: torch.Tensor,
             step: PagedStep | FlexPagedStep, media: dict[int, list[torch.Tensor]], q: int) -> torch.Tensor:
        device = self.model.device
        with lora_batch(self.model, [seq.lora for seq, _ in work], q):  # each row's adapter (glmv/lora/mapping.py)
            out = self.model(
                ids.to(device), mm_token_type_ids=types.to(device), position_ids=positions.to(device), cache=step,
                image_embeds=media[IMAGE], video_embeds=media[VIDEO], logits_to_keep=1,
            )
        return out.logits[:, -1].float()

    def _decode_inputs(self, work: list[tuple[Sequence, int]]) -> tuple[torch.Tensor, ...] | None:
        """A decode step's inputs when every row feeds back one generated token (None otherwise), built with a few
        array ops for the whole batch instead of per-row slices: per-row Python was a fair share of a small
        model's step, and in a server it holds the GIL the event loop needs. A row's keys are right-padded here
        (the mask says which are real; their order within a row does not matter to attention): read [B, L] = the
        slots of tokens 0..t, then padding."""
        rows = []
        for seq, n in work:
            t, prompt, lay = seq.num_computed, len(seq.prompt_ids), seq.layout
            if n != 1 or t < prompt:
                return None
            # the token's 3D position, as Sequence.positions gives it
            schedule = lay.decode_positions
            position = [t + lay.delta] * 3 if schedule is None else schedule[:, t - prompt].tolist()
            rows.append((seq.output_ids[t - prompt], t, *position))
        # numpy: a dozen small array ops cost microseconds there, tens of them as torch ops
        rows = np.array(rows)
        ids, index, positions = rows[:, 0], rows[:, 1], rows[:, 2:].T[:, :, None]  # [B], [B], [3, B, 1]
        bs, pad = self.cache.block_size, self.cache.num_blocks  # block `num_blocks` is the scratch block
        width = max(len(seq.block_table) for seq, _ in work)
        tables = np.array([seq.block_table + [pad] * (width - len(seq.block_table)) for seq, _ in work])
        keys = np.arange(index.max() + 1)  # [L]
        real = keys <= index[:, None]  # [B, L]
        read = np.where(real, tables[:, keys // bs] * bs + keys % bs, self.cache.pad_slot)
        write = read[np.arange(len(work)), index][:, None]  # [B, 1]
        # fresh inference tensors with the default strides (copies made here, under inference mode), as the
        # warm-up's: numpy's strides of size-1 dimensions, or plain tensors, would be guarded on and compiled again
        return tuple(torch.from_numpy(a.astype(np.int64)).clone(memory_format=torch.contiguous_format) for a in
                     (ids[:, None], np.zeros_like(write), positions, write, read, real))

    def _sdpa_slots(self, work: list[tuple[Sequence, int]], write: torch.Tensor, q: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row the slots of its cached keys (left-padded to the longest context), then its chunk's: read
        [B, past + q], and real [B, past + q] (1 where a slot holds a real token)."""
        past = max(seq.num_computed for seq, _ in work)
        read = torch.full((len(work), past + q), self.cache.pad_slot, dtype=torch.long)
        real = torch.zeros(len(work), past + q, dtype=torch.long)
        for i, (seq, n) in enumerate(work):
            start = seq.num_computed
            read[i, past - start : past] = self.cache.slots(seq.block_table, start)
            read[i, past:] = write[i]
            real[i, past - start : past] = 1
            real[i, past + q - n :] = 1
        return read, real

    def _sdpa_step(self, work: list[tuple[Sequence, int]], write: torch.Tensor, q: int, device) -> PagedStep:
        """The slots to read and the mask over them, built here, on the host."""
        read, real = self._sdpa_slots(work, write, q)
        mask = attention_mask_for(real, q, read.shape[1] - q, "cpu")
        return PagedStep(self.cache, write.to(device), read.to(device), None if mask is None else mask.to(device))

    def _flex_step(self, work: list[tuple[Sequence, int]], write: torch.Tensor, q: int, device) -> FlexPagedStep:
        """Per row each query's logical position, and where each of its blocks lies in the pool."""
        positions = torch.full((len(work), q), -1, dtype=torch.long)
        logical = torch.full((len(work), self.cache.num_blocks + 1), -1, dtype=torch.long)
        bs = self.cache.block_size
        for i, (seq, n) in enumerate(work):
            end = seq.num_computed + n
            positions[i, q - n :] = torch.arange(seq.num_computed, end)
            held = seq.block_table[: -(-end // bs)]
            logical[i, held] = torch.arange(len(held))
        return FlexPagedStep(self.cache, write.to(device), positions.to(device), logical.to(device))
