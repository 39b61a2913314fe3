"""Stop strings on streamed text: cut exactly at the first stop string, and never emit text that could still
turn out to be the start of one (hold back up to len(longest stop) - 1 characters)."""

from __future__ import annotations


class StopMatcher:
    def __init__(self, stops: list[str], include_stop: bool = False):
        self.stops = [s for s in stops if s]
        self.include = include_stop
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.pending = ""
        self.done = False

    def feed(self, delta: str, final: bool = False) -> tuple[str, bool]:
        """Add decoded text; return (text safe to emit, whether a stop string was hit). With `final`, nothing
        more will come, so everything pending is released."""
        if self.done:
            return "", True
        self.pending += delta
        hits = [(i, s) for s in self.stops if (i := self.pending.find(s)) >= 0]
        if hits:
            i, s = min(hits)
            self.done = True
            out, self.pending = self.pending[: i + (len(s) if self.include else 0)], ""
            return out, True
        if final:
            out, self.pending = self.pending, ""
            return out, False
        cut = max(len(self.pending) - self.hold, 0)
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out, False
