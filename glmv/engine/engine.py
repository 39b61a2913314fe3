"""The engine: sequences in, one token per sequence per step out (vLLM / nano-vllm's split).

    engine.add(seq)                  # a prepared sequence (prompt ids + media embeddings + sampling params)
    for seq, token in engine.step(): # schedule, run the model over the paged cache, sample
        ...                          # the caller may set seq.finish_reason (stop string, cancel) between steps

Sequence (sequence.py) -> Scheduler (scheduler.py: waiting/running, token budget, chunked prefill, preemption)
-> BlockManager (block_manager.py: paged blocks, prefix cache) -> ModelRunner (model_runner.py: tensors, model
over PagedKVCache) -> Sampler. KV memory is allocated once, from a budget, as blocks; a sequence holds the blocks
its tokens use. One request never fails another: each is checked alone (`check`) before it is added, and a
forward or sampling step that raises is retried sequence by sequence so that only the one at fault fails
(`seq.error` set, finish_reason "abort").
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from glmv.engine.block_manager import BlockManager
from glmv.engine.guided import GrammarVocab
from glmv.engine.model_runner import ModelRunner
from glmv.engine.paged_kv import PagedKVCache
from glmv.engine.sampling import Sampler
from glmv.engine.scheduler import Scheduler
from glmv.engine.sequence import Layout, Sequence
from glmv.engine.vision_cache import VisionCache
from glmv.errors import ConfigError, ContextLengthError, InputError
from glmv.model.glm4v import GlmvForConditionalGeneration, check_media_slots
from glmv.model.positions import IMAGE, VIDEO, rope_index

log = logging.getLogger(__name__)

CPU_KV_MEMORY = 1 << 30  # most KV budget by default on CPU (1 GiB): RAM is shared with everything else
CPU_KV_CONTEXTS = 16  # ... or room for this many full-context sequences, if less (small models need little)
GPU_KV_FRACTION = 0.5  # of the memory free after loading the weights


@dataclass
class EngineStats:
    prefill_tokens: int = 0  # prompt tokens run through the decoder (cached ones are not)
    decode_steps: int = 0


@dataclass(frozen=True)
class EngineConfig:
    block_size: int = 16
    kv_cache_memory: int | None = None  # bytes; None: see _kv_budget
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 2048
    enable_prefix_caching: bool = True
    attention_backend: str = "sdpa"  # "sdpa" (gather + SDPA) or "flex" (FlexAttention over the pool in place)
    compile: bool = False  # decode steps through torch.compile (glmv/engine/compiled_step.py), warmed up at start
    compile_mode: str = "default"  # or "max-autotune": frozen weights, Inductor's GEMM templates (compiled_step.py)


class Engine:
    def __init__(self, model: GlmvForConditionalGeneration, eos_token_ids: list[int], max_model_len: int | None = None,
                 config: EngineConfig = EngineConfig(), grammar_vocab: GrammarVocab | None = None):
        self.model = model
        self.eos_token_ids = list(eos_token_ids)
        self.config = config
        t = model.config.text
        # the heads this process stores: config.json's count, or its share under tensor parallelism
        kv_heads = model.language_model.layers[0].self_attn.kv_heads
        per_block = PagedKVCache.bytes_per_block(t.num_hidden_layers, config.block_size, kv_heads,
                                                 t.head_dim, model.dtype)
        context = max_model_len or t.max_position_embeddings
        default = CPU_KV_CONTEXTS * -(-context // config.block_size) * per_block
        num_blocks = max(1, _kv_budget(config.kv_cache_memory, model.device, default) // per_block)
        self.kv = PagedKVCache(t.num_hidden_layers, num_blocks, config.block_size, kv_heads, t.head_dim,
                               model.dtype, model.device, zeroed=config.attention_backend == "flex")
        # One sequence of the full context must fit the pool alone, or it could wait forever.
        self.max_model_len = min(max_model_len or t.max_position_embeddings, num_blocks * config.block_size)
        log.info("KV cache: %d blocks of %d tokens (%.1f MiB), context %d", num_blocks, config.block_size,
                 num_blocks * per_block / 2**20, self.max_model_len)
        self.blocks = BlockManager(num_blocks, config.block_size, config.enable_prefix_caching)
        self.scheduler = Scheduler(self.blocks, config.max_num_seqs, config.max_num_batched_tokens)
        self.runner = ModelRunner(model, self.kv, config.attention_backend, config.compile, config.compile_mode)
        if self.runner.decode is not None:
            if config.compile_mode == "max-autotune":
                log.info("compiling the decode step with mode max-autotune: minutes for a new checkpoint")
            try:
                log.info("decode step compiled in %.1f s (torch.compile, mode %s; warm after the first run with "
                         "these shapes)", self.runner.decode.warm_up(), config.compile_mode)
            except Exception as e:  # no C++ compiler, a module Dynamo cannot trace (quantised ones in torch 2.13)...
                log.warning("compiling the decode step failed, decoding eagerly: %s", str(e).splitlines()[0])
                self.runner.decode = None
        self.vision = VisionCache(model)
        self.stats = EngineStats()
        self.sampler = Sampler(grammar_vocab)  # the vocabulary lets it apply structured-output masks
        self.failed: list[Sequence] = []

    # --- checks, before a sequence joins -----------------------------------------------------------------------
    def check_length(self, seq: Sequence) -> int:
        """The number of tokens this sequence may still generate; ContextLengthError if the prompt cannot fit."""
        n = len(seq.prompt_ids)
        if n == 0:
            raise InputError("the prompt is empty: give at least one message or token")
        if n >= self.max_model_len:
            raise ContextLengthError(
                f"the prompt is {n} tokens, but the model's context is {self.max_model_len} tokens; "
                "shorten the prompt, send fewer or smaller images/videos, or lower their max_pixels"
            )
        return min(seq.params.max_tokens, self.max_model_len - n)

    def check(self, seq: Sequence) -> int:
        """check_length, plus what a forward would fail on, for this one sequence: its media placeholders (typed
        as the model types them) match its media and grids. Prepares the sequence's layout on the way (types,
        3D positions, media rows), so a batch never meets a sequence that cannot run."""
        seq.budget = self.check_length(seq)
        if seq.layout is None:  # samples 2..n share their leader's prompt, so its layout too
            leader = seq.leader
            seq.layout = leader.layout if leader is not None and leader.layout is not None else self._layout(seq)
        return seq.budget

    def _layout(self, seq: Sequence) -> Layout:
        ids = torch.tensor([seq.prompt_ids])
        types = self.model.token_types(ids)
        check_media_slots(types, seq.image_embeds, seq.video_embeds)
        grid = lambda g: torch.tensor(g) if g else None
        positions, delta = rope_index(types, grid(seq.image_grids), grid(seq.video_grids), None,
                                      self.model.config.vision.spatial_merge_size)
        before = lambda kind: [0] + (types[0] == kind).long().cumsum(0).tolist()
        rows = lambda embeds: torch.cat(embeds) if embeds else None
        return Layout(types[0], positions[:, 0], int(delta[0]), rows(seq.image_embeds), rows(seq.video_embeds),
                      before(IMAGE), before(VIDEO))

    def weights_changed(self) -> None:
        """Call after changing the model's weights (training): cached image embeddings and prefix-cache blocks
        were computed with the old ones."""
        self.vision.clear()
        self.blocks.forget_cached()

    # --- the loop -----------------------------------------------------------------------------------------------
    def add(self, seq: Sequence) -> None:
        """Queue a sequence (checked here if the caller has not)."""
        self.check(seq)
        self.scheduler.add(seq)

    def has_work(self) -> bool:
        return self.scheduler.has_work()

    def step(self) -> list[tuple[Sequence, int]]:
        """One step: drop finished sequences, schedule, compute, sample. Returns (sequence, new token) for every
        sequence that produced one; sequences the engine failed alone are in take_failed()."""
        self.scheduler.remove_finished()
        step = self.scheduler.schedule()
        if not step:
            return []
        ready = []  # sequences whose every token is computed: they sample now
        for work in ([(s, 1) for s in step.decode], step.prefill):
            if work:
                ready += self._forward(work)
        self.stats.decode_steps += bool(step.decode)
        produced = self._sample(ready) if ready else []
        self.scheduler.remove_finished()  # eos, length or failure: their blocks are free for the next step
        return produced

    def take_failed(self) -> list[Sequence]:
        """The sequences failed alone since the last call (each has .error and has left the engine)."""
        failed, self.failed = self.failed, []
        return failed

    def _forward(self, work: list[tuple[Sequence, int]]) -> list[tuple[Sequence, torch.Tensor]]:
        """Run one forward; on failure, each sequence alone, failing only those that raise."""
        try:
            logits = self.runner.forward(work)
        except Exception as e:
            if len(work) == 1:
                self._fail(work[0][0], e)
                return []
            log.warning("a batched forward failed (%s); running its %d sequences one by one", e, len(work))
            return [r for w in work for r in self._forward([w])]
        ready = []
        for i, (seq, n) in enumerate(work):
            before = seq.num_computed
            seq.num_computed += n
            if before < len(seq.prompt_ids):
                self.stats.prefill_tokens += min(n, len(seq.prompt_ids) - before)
            self.blocks.register(seq, before)
            if seq.num_computed == len(seq):
                ready.append((seq, logits[i]))
        return ready

    def _sample(self, ready: list[tuple[Sequence, torch.Tensor]]) -> list[tuple[Sequence, int]]:
        seqs = [s for s, _ in ready]
        logits = torch.stack([l if s.logits_processor is None else s.logits_processor(s.output_ids, l)
                              for s, l in ready])
        try:
            tokens, logprobs = self.sampler(logits, seqs)
        except Exception as e:
            if len(ready) == 1:
                self._fail(seqs[0], e)
                return []
            # Find the rows at fault by sampling each alone (a dry run: seeded generators are put back).
            vocab = self.sampler.grammar_vocab
            bad = [i for i in range(len(seqs)) if not _samples_alone(logits[i : i + 1], seqs[i], vocab)]
            if not bad:
                raise
            for i in bad:
                self._fail(seqs[i], e)
            rest = [r for i, r in enumerate(ready) if i not in bad]
            return self._sample(rest) if rest else []
        out = []
        for j, seq in enumerate(seqs):
            token = int(tokens[j])
            seq.output_ids.append(token)
            if logprobs is not None:
                seq.logprobs.append(logprobs[j])
            self._stop(seq, token)
            out.append((seq, token))
        return out

    def _fail(self, seq: Sequence, error: BaseException) -> None:
        if not isinstance(error, InputError):
            log.error("a sequence failed alone", exc_info=error)
        seq.error = error
        seq.finish_reason = "abort"
        self.failed.append(seq)

    def _stop(self, seq: Sequence, token: int) -> None:
        p = seq.params
        stop_ids = p.stop_token_ids if p.stop_token_ids is not None else self.eos_token_ids
        if not p.ignore_eos and token in stop_ids and len(seq.output_ids) >= p.min_tokens:
            seq.finish_reason = "stop"
        elif len(seq.output_ids) >= seq.budget:
            seq.finish_reason = "length"

    def run(self, seqs: list[Sequence]) -> Iterator[list[tuple[Sequence, int]]]:
        """Generate for `seqs` (alone in this engine); yields [(sequence, new token id), ...] after every step.
        The caller may set a sequence's finish_reason (stop string) before resuming; it then leaves."""
        for seq in seqs:
            self.add(seq)
        try:
            while self.has_work():
                produced = self.step()
                failed = self.take_failed()
                if failed:
                    raise failed[0].error
                if produced:
                    yield produced
        finally:  # an error, or a caller that stopped iterating: nothing of this run stays in the engine
            for seq in seqs:
                seq.finish_reason = seq.finish_reason or "abort"
            self.scheduler.remove_finished()


def _samples_alone(logits: torch.Tensor, seq: Sequence, vocab: GrammarVocab | None) -> bool:
    gen = seq.generator(logits.device)
    state = gen.get_state() if gen is not None else None
    try:
        Sampler(vocab)(logits, [seq])
        return True
    except Exception:
        return False
    finally:
        if gen is not None:
            gen.set_state(state)


def _kv_budget(requested: int | None, device: torch.device, cpu_need: int) -> int:
    if requested is not None:
        return requested
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * GPU_KV_FRACTION)
    return min(CPU_KV_MEMORY, cpu_need)


_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
          "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "t": 1000**4, "tb": 1000**4, "tib": 1024**4}


def parse_memory(value: int | str | None) -> int | None:
    """Bytes from an int or a string with a unit ("2GiB", "512 MB", "1.5g"); None stays None."""
    if value is None or isinstance(value, int):
        return value
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(value))
    if not m or m.group(2).lower() not in _UNITS:
        raise ConfigError(f"cannot read the memory size {value!r}: give bytes or a number with a unit, e.g. 2GiB or 512MB")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])
