"""The scheduler: which sequences run in the next step, and how many of their tokens.

Each step computes at most `max_num_batched_tokens` tokens for at most `max_num_seqs` sequences: first one token
for every running sequence that is decoding (always, even past the budget), then prompt chunks (chunked prefill) for sequences still being
prefilled, then new sequences from the waiting queue, first come first served, as long as blocks are free. A long
prompt therefore joins in chunks between decode steps instead of stalling running streams for its whole prefill.
When a decoding sequence needs a block and none is free, the most recently admitted sequence is preempted: its
blocks are freed and it goes back to the front of the queue, to be recomputed from its tokens (its output so far
included) when blocks free up; greedy output is unchanged by this.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from glmv.engine.block_manager import BlockManager
from glmv.engine.sequence import Sequence, Status


@dataclass
class Step:
    """One scheduled step: decode rows (one token each) and prefill rows (a chunk of their tokens each)."""

    decode: list[Sequence] = field(default_factory=list)
    prefill: list[tuple[Sequence, int]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.decode or self.prefill)


class Scheduler:
    def __init__(self, blocks: BlockManager, max_num_seqs: int, max_num_batched_tokens: int):
        self.blocks = blocks
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # in admission order
        self.preemptions = 0

    def add(self, seq: Sequence) -> None:
        seq.status = Status.WAITING
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def remove_finished(self) -> list[Sequence]:
        """Drop finished sequences (stopped, or aborted by their caller) and free their blocks."""
        done = [s for s in self.running if s.finished] + [s for s in self.waiting if s.finished]
        for seq in done:
            self.blocks.free_blocks(seq)
            seq.status = Status.FINISHED
        self.running = [s for s in self.running if not s.finished]
        self.waiting = deque(s for s in self.waiting if not s.finished)
        return done

    def schedule(self) -> Step:
        """A sequence needs its tokens from num_computed on: one (the token it sampled last: a decode row) or
        more (its prompt, or its whole text again after a preemption: a prefill row, chunked to the budget)."""
        step = Step()
        budget = self.max_num_batched_tokens
        for seq in list(self.running):  # decode rows first: running streams never wait for a prompt
            if seq not in self.running or len(seq) - seq.num_computed != 1:
                continue
            while not self.blocks.can_append(seq):
                victim = self.running[-1]  # the latest admitted; never one scheduled before seq in this loop
                self._preempt(victim)
                if victim is seq:
                    break
            else:
                self.blocks.append(seq)
                step.decode.append(seq)
                budget -= 1
        for seq in self.running:  # prompts being prefilled continue, a chunk each
            left = len(seq) - seq.num_computed
            if left > 1 and budget > 0:
                step.prefill.append((seq, min(left, budget)))
                budget -= step.prefill[-1][1]
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            if _waits_for_leader(seq) or not self.blocks.allocate(seq):
                break  # first come, first served: nobody overtakes the head of the queue
            self.waiting.popleft()
            seq.status = Status.RUNNING
            self.running.append(seq)
            step.prefill.append((seq, min(len(seq) - seq.num_computed, budget)))
            budget -= step.prefill[-1][1]
        return step

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.blocks.free_blocks(seq)
        seq.status = Status.WAITING
        self.waiting.appendleft(seq)
        self.preemptions += 1


def _waits_for_leader(seq: Sequence) -> bool:
    """Samples 2..n of a request wait until sample 1 has computed the prompt, so that they find it cached."""
    leader = seq.leader
    return leader is not None and not leader.finished and leader.num_computed < len(leader.prompt_ids)
