"""The decode step compiled with torch.compile: every row one token, over the paged cache ("sdpa" backend).

Eager decoding of a small model is bound by op dispatch (about 4,000 aten calls per token on the nano model), not
by its matmuls. Compiled, the step's elementwise ops fuse and the routed experts take their static-shape form
(`Experts._gathered`), so one step is a handful of kernels. The eager path stays the reference: prefill, chunks,
media and the "flex" backend run eagerly, and `EngineConfig.compile=False` (the default; `--no-compile` on
`glmv serve`) turns compilation off.

Shapes: the batch and the number of keys per row are dynamic (one graph for any context length); torch.compile
specialises a batch of 1, so `warm_up` compiles two graphs, batch 1 and batch >= 2, before the first request.
Rows of a batch of two or more always carry a key mask (so a batch without padding does not need a third graph).
Inductor keeps its compiled code in its on-disk cache: a second process with the same model shapes warms up in
seconds (`warm_up` returns the time, the engine logs it).
"""

from __future__ import annotations

import time

import torch

from glmv.engine.paged_kv import PagedKVCache, PagedStep
from glmv.model.glm4v import GlmvForConditionalGeneration


class CompiledDecode:
    def __init__(self, model: GlmvForConditionalGeneration, cache: PagedKVCache):
        self.model, self.cache = model, cache
        # The model's weights are graph inputs, not constants, so guarding every parameter of every module on each
        # call (a tenth of a nano step) buys nothing: training and adapters change weights in place.
        # Inductor's C++ wrapper: the graph's launcher compiled too; its Python launcher cost a fifth of a nano
        # step at batch 1 (about 0.5 ms: ~190 views and ~140 size checks a call)
        self.fn = torch.compile(self._step, dynamic=True,
                                options={"guard_filter_fn": torch.compiler.skip_guard_on_all_nn_modules_unsafe,
                                         "cpp_wrapper": True})

    def _step(self, ids: torch.Tensor, types: torch.Tensor, positions: torch.Tensor, write: torch.Tensor,
              read: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        step = PagedStep(self.cache, write, read, mask)
        out = self.model(ids, mm_token_type_ids=types, position_ids=positions, cache=step, logits_to_keep=1)
        return out.logits[:, -1].float()

    def __call__(self, ids: torch.Tensor, types: torch.Tensor, positions: torch.Tensor, write: torch.Tensor,
                 read: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """ids/types [B, 1], positions [3, B, 1], write [B, 1] and read [B, keys] slots, real [B, keys] (1 where a
        key is a real token) -> next-token logits [B, vocab] fp32."""
        mask = real.bool()[:, None, None, :] if ids.shape[0] > 1 else None  # one row: no padding anywhere
        device = self.model.device
        args = [t.to(device) for t in (ids, types, positions, write, read)] + [None if mask is None else mask.to(device)]
        if ids.shape[0] > 1:
            for t, dims in zip(args, ((0,), (0,), (1,), (0,), (0, 1), (0, 3))):
                for d in dims:
                    torch._dynamo.maybe_mark_dynamic(t, d)
        else:
            torch._dynamo.maybe_mark_dynamic(args[4], 1)
        with torch.inference_mode():
            return self.fn(*args)

    def warm_up(self) -> float:
        """Compile both graphs on scratch slots (the pool's padding block: nothing real is read or written) and
        return the seconds it took."""
        start = time.perf_counter()
        pad = self.cache.pad_slot
        with torch.inference_mode():  # inference tensors, as the runner's: a guard tells the two kinds apart
            for batch in (2, 1):
                # fresh tensors laid out as the runner's, of sizes unlike one another (no duck sizing)
                ids, write = torch.zeros(batch, 1, dtype=torch.long), torch.full((batch, 1), pad, dtype=torch.long)
                read = torch.full((batch, 7), pad, dtype=torch.long)
                self(ids, ids.clone(), torch.zeros(3, batch, 1, dtype=torch.long), write, read, torch.ones_like(read))
        return time.perf_counter() - start
