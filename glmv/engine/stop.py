"""Stop strings on streamed text.

The matcher sits after the detokenizer: it gets each text delta, cuts exactly at the first stop string (the
text ends right before it, or right after it with include_stop), and never emits text that could still turn
out to be the start of a stop string: it holds back the longest tail of the text that is a proper prefix of
some stop string (so at most len(longest stop) - 1 characters).
"""

from __future__ import annotations


class StopMatcher:
    def __init__(self, stops: list[str], include_stop: bool = False):
        self.stops = [s for s in stops if s]
        self.include = include_stop
        self.pending = ""  # text received but not emitted
        self.matched: str | None = None  # the stop string that was hit (vLLM's stop_reason)

    @property
    def done(self) -> bool:
        return self.matched is not None

    def feed(self, delta: str, final: bool = False) -> tuple[str, bool]:
        """Add decoded text; return (text safe to emit, whether a stop string was hit). After a hit nothing
        more is emitted. With `final` (no more text will come), everything pending is released."""
        if self.done:
            return "", True
        self.pending += delta
        # the earliest occurrence wins; at equal positions, the stop string listed first
        hits = [(at, k) for k, s in enumerate(self.stops) if (at := self.pending.find(s)) >= 0]
        if hits:
            at, k = min(hits)
            self.matched = self.stops[k]
            out = self.pending[: at + (len(self.matched) if self.include else 0)]
            self.pending = ""
            return out, True
        keep = 0 if final else self._partial_tail()
        out, self.pending = self.pending[: len(self.pending) - keep], self.pending[len(self.pending) - keep :]
        return out, False

    def _partial_tail(self) -> int:
        """Length of the longest tail of the pending text that is a proper prefix of a stop string."""
        text = self.pending
        return max((n for s in self.stops for n in range(min(len(s) - 1, len(text)), 0, -1) if text.endswith(s[:n])),
                   default=0)
