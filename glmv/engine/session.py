"""Multi-turn conversations: a thin layer over the engine's prefix cache.

Each turn sends the whole conversation, as an OpenAI client does. The blocks of the earlier turns (prompt and
answer) are still in the paged cache, found by their hashes, so only the new turn is prefilled (from the last
full block on); images seen before come from the vision cache. The session holds its media embeddings so that
they stay cached while it lives. Where the template renders a past turn differently from what was generated
(GLM-V drops old reasoning), the cache matches up to there and the rest is recomputed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch

from glmv.engine.sampling import SamplingParams
from glmv.errors import InputError

if TYPE_CHECKING:
    from glmv.engine.llm import LLM


class ChatSession:
    """`session.chat(messages)` with the full conversation each turn; returns a RequestOutput."""

    def __init__(self, llm: "LLM"):
        self.llm = llm
        self.media: list[torch.Tensor] = []  # embeddings of this conversation's media, kept alive here
        self.last_reused = 0  # prompt tokens of the last turn found in the cache (the rest was prefilled)
        self._request = None

    def reset(self) -> None:
        self.media, self.last_reused = [], 0

    def chat(self, messages: list[dict], sampling_params: SamplingParams | None = None,
             enable_thinking: bool | None = None, **template_kwargs: Any):
        """Answer the last user message of `messages` (the whole conversation so far) -> RequestOutput."""
        for _ in self.stream(messages, sampling_params, enable_thinking, **template_kwargs):
            pass
        return self.llm.request_output(self._request)

    def stream(self, messages: list[dict], sampling_params: SamplingParams | None = None,
               enable_thinking: bool | None = None, **template_kwargs: Any) -> Iterator[str]:
        """Like chat(), yielding text deltas as they are decoded."""
        llm = self.llm
        params = sampling_params or llm.default_sampling_params()
        if params.n != 1:
            raise InputError("a chat session generates one answer per turn (n=1)")
        self._request = llm.prepare_chat([messages], params, enable_thinking, **template_kwargs)[0]
        seq = self._request.seqs[0]
        self.media = seq.image_embeds + seq.video_embeds
        try:
            for delta in llm.iterate([self._request]):
                if delta.text:
                    yield delta.text
        finally:
            self.last_reused = seq.num_cached_tokens
