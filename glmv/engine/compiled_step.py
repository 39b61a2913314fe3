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

Modes, as torch.compile names them:
- "default": the weights are graph inputs; the matmuls are ATen's (MKL on CPU).
- "max-autotune": the weights are frozen into the graph as constants, and on CPU each matmul is one of Inductor's
  C++ GEMM templates over weights it packed at compile time. MKL's sgemm for a few rows runs on one core at ~45
  GFLOP/s on this project's AMD machines (M=8 is 2.7x the time of M=1 for the same weight); the templates use
  every thread. Costs: a second, packed copy of the decoder's weights in memory and in Inductor's cache, and a
  long first compile (minutes for the nano model on 2 cores; later starts read Inductor's cache, keyed by the
  weights' fingerprint). The weights must not change after the warm-up (LoRA serving already runs eagerly).
"""

from __future__ import annotations

import contextlib
import hashlib
import time
import types
import warnings

import torch
from torch._inductor.custom_graph_pass import CustomGraphPass

from glmv.engine.paged_kv import PagedKVCache, PagedStep
from glmv.model.glm4v import GlmvForConditionalGeneration

MODES = ("default", "max-autotune")


class CompiledDecode:
    def __init__(self, model: GlmvForConditionalGeneration, cache: PagedKVCache, mode: str = "default"):
        self.model, self.cache, self.mode = model, cache, mode
        # In the default mode the model's weights are graph inputs, not constants, so guarding every parameter of
        # every module on each call (a tenth of a nano step) buys nothing: training and adapters change weights in
        # place.
        # Inductor's C++ wrapper: the graph's launcher compiled too; its Python launcher cost a fifth of a nano
        # step at batch 1 (about 0.5 ms: ~190 views and ~140 size checks a call)
        step = self._step
        if mode == "max-autotune":
            # Dynamo keeps compiled graphs on the function's code object, and guards skip the model: a graph
            # compiled for one instance serves every instance (right when weights are inputs). A frozen graph
            # carries its model's weights, so each instance compiles a code object of its own.
            own = types.FunctionType(CompiledDecode._step.__code__.replace(), globals(), "_step")
            step = types.MethodType(own, self)
        self.fn = torch.compile(step, dynamic=True,
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
        # _args makes the key mask: under inference mode, as in the warm-up (a guard tells inference tensors apart)
        with torch.inference_mode():
            return self.fn(*self._args(ids, types, positions, write, read, real))

    def _args(self, ids: torch.Tensor, types: torch.Tensor, positions: torch.Tensor, write: torch.Tensor,
              read: torch.Tensor, real: torch.Tensor) -> list[torch.Tensor | None]:
        """The step's arguments on the model's device, the key mask made of `real` (one row: no padding anywhere)."""
        mask = real.bool()[:, None, None, :] if ids.shape[0] > 1 else None
        device = self.model.device
        return [t.to(device) for t in (ids, types, positions, write, read)] + [None if mask is None else mask.to(device)]

    def warm_up(self) -> float:
        """Compile both graphs on scratch slots (the pool's padding block: nothing real is read or written) and
        return the seconds it took."""
        start = time.perf_counter()
        pad = self.cache.pad_slot
        # inference tensors, as the runner's: a guard tells the two kinds apart. Floats specialised: with dynamic
        # shapes Dynamo would otherwise make every float attribute of the model (each RMSNorm's eps) a graph input,
        # boxed into a tensor on every call (~0.15 ms of a nano step at batch 1 and 8)
        with torch.inference_mode(), torch._dynamo.config.patch(specialize_float=True), self._compiling():
            for batch in (2, 1):
                # fresh tensors laid out as the runner's, of sizes unlike one another (no duck sizing)
                ids, write = torch.zeros(batch, 1, dtype=torch.long), torch.full((batch, 1), pad, dtype=torch.long)
                read = torch.full((batch, 7), pad, dtype=torch.long)
                args = self._args(ids, ids.clone(), torch.zeros(3, batch, 1, dtype=torch.long), write, read,
                                  torch.ones_like(read))
                # The dynamic sizes: marked only here, where the graphs compile (the marks cost ~50 us a call at
                # batch 8, and the compiled graphs take any size anyway)
                dims = ((0,), (0,), (1,), (0,), (0, 1), (0, 3)) if batch > 1 else ((), (), (), (), (1,), ())
                for t, ds in zip(args, dims):
                    for d in ds:
                        torch._dynamo.maybe_mark_dynamic(t, d)
                self.fn(*args)
        return time.perf_counter() - start

    def _compiling(self) -> contextlib.AbstractContextManager:
        """The Inductor settings of this mode, while the warm-up compiles. They are set only then: entering them on
        every call would cost ~50 us of a ~1 ms step. No later call recompiles (the shapes are dynamic; tested), and
        if one ever did, it would compile with the defaults: slower, not wrong."""
        if self.mode == "default":
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        # torch warns, each time oneDNN's flags are set, that TF32 on oneDNN needs an Intel GPU
        stack.enter_context(warnings.catch_warnings())
        warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")
        settings = {"freezing": True, "max_autotune": True,
                    # Inductor's FX graph cache keys a frozen graph by its code, not by the constants baked into
                    # it: without the weights' fingerprint in the key, another checkpoint of the same shapes
                    # would load this one's weights from the cache (seen with torch 2.13)
                    "post_grad_custom_post_pass": _WeightsKey(self.model)}
        if self.model.device.type == "cpu":
            # C++ templates only: one deterministic choice per matmul (with ATen in the running, autotuning
            # benchmarks both, and a noisy machine picks differently from run to run)
            settings["max_autotune_gemm_backends"] = "CPP"
            # The freezing passes would also pack each linear weight for oneDNN/MKL; such tensors cannot be
            # pickled, so Inductor would skip its cache and recompile at every start. The templates pack their
            # own weights. (The passes register once per process, when the first frozen graph compiles.)
            stack.enter_context(torch.backends.mkldnn.flags(enabled=False))
        stack.enter_context(torch._inductor.config.patch(settings))
        return stack


class _WeightsKey(CustomGraphPass):
    """A pass that changes nothing: its uuid, part of Inductor's cache key, is a fingerprint of the weights a frozen
    decode step bakes in (the decoder and LM head: names, dtypes, shapes and bytes)."""

    def __init__(self, model: GlmvForConditionalGeneration):
        digest = hashlib.blake2b(digest_size=16)
        for module in (model.language_model, model.lm_head):
            for name, t in module.state_dict().items():
                digest.update(f"{name} {t.dtype} {tuple(t.shape)}".encode())
                digest.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
        self.key = digest.hexdigest()

    def __call__(self, graph: torch.fx.Graph) -> None:
        pass

    def uuid(self) -> str:
        return self.key
