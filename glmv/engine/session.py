"""Multi-turn conversations that keep their KV cache and media embeddings between turns.

Each turn renders the whole conversation, finds the longest prefix it shares with what the cache already holds,
and prefills only the rest. Images seen before come from the vision cache (this conversation holds references
to its own, so they are never evicted while it lives). When the history was edited (or the template rendered a
past turn differently from what was generated, e.g. dropping old reasoning) the cache is cut back to the
shared prefix and the difference is recomputed; debug logs say so.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch

from glmv.engine.sampling import SamplingParams
from glmv.errors import InputError
from glmv.model.cache import KVCache
from glmv.model.positions import TEXT

if TYPE_CHECKING:
    from glmv.engine.llm import LLM

log = logging.getLogger(__name__)


def reusable_prefix(cached: list[int], new: list[int], types: torch.Tensor, video_start: int, video_end: int) -> int:
    """Tokens of `new` whose cached keys/values can be kept: the common prefix, cut back so that at least one
    token is left to prefill and the cut does not split an image run or fall inside a video."""
    n = 0
    limit = min(len(cached), len(new) - 1)
    while n < limit and cached[n] == new[n]:
        n += 1
    ids = torch.tensor(new)
    depth = ((ids == video_start).long().cumsum(0) - (ids == video_end).long().cumsum(0)).tolist()
    kinds = types.tolist()
    # cut at c: tokens c-1 and c are text, and token c-1 is not inside a video (depth counts its start token)
    while n > 0 and not (kinds[n - 1] == TEXT and kinds[n] == TEXT and depth[n - 1] == 0):
        n -= 1
    return n


class ChatSession:
    """`session.chat(messages)` with the full conversation each turn, like the OpenAI API; returns a
    RequestOutput. Only new tokens are prefilled and no image is encoded twice."""

    def __init__(self, llm: "LLM"):
        self.llm = llm
        self.cache: KVCache | None = None
        self.cached_ids: list[int] = []
        self.media: list[torch.Tensor] = []  # embeddings of this conversation's media, kept alive here
        self.last_reused = 0  # cached tokens the last turn kept (the rest of its prompt was prefilled)
        self._request = None

    def reset(self) -> None:
        self.cache, self.cached_ids, self.media, self.last_reused = None, [], [], 0

    def chat(self, messages: list[dict], sampling_params: SamplingParams | None = None,
             enable_thinking: bool | None = None, **template_kwargs: Any):
        """Answer the last user message of `messages` (the whole conversation so far) -> RequestOutput."""
        stream = self.stream(messages, sampling_params, enable_thinking, **template_kwargs)
        for _ in stream:
            pass
        return self.llm.request_output(self._request)

    def stream(self, messages: list[dict], sampling_params: SamplingParams | None = None,
               enable_thinking: bool | None = None, **template_kwargs: Any) -> Iterator[str]:
        """Like chat(), yielding text deltas as they are decoded."""
        llm, engine = self.llm, self.llm.engine
        params = sampling_params or llm.default_sampling_params()
        if params.n != 1:
            raise InputError("a chat session generates one answer per turn (n=1)")
        request = llm.prepare_chat([messages], params, enable_thinking, **template_kwargs)[0]
        seq = request.seqs[0]
        self.media = seq.image_embeds + seq.video_embeds
        cfg = llm.model.config
        types = llm.model.token_types(torch.tensor([seq.prompt_ids]))[0]
        prefix = reusable_prefix(self.cached_ids, seq.prompt_ids, types, cfg.video_start_token_id, cfg.video_end_token_id)
        if self.cache is None:
            self.cache = engine.new_cache(1, len(seq.prompt_ids) + engine.check_length(seq))
            prefix = 0
        elif prefix < len(self.cached_ids):
            log.debug("conversation history differs from the cache at token %d of %d; recomputing from there",
                      prefix, len(self.cached_ids))
        self.cache.truncate(prefix)
        self.last_reused = prefix
        self._request = request
        log.debug("turn: reusing %d cached tokens, prefilling %d", prefix, len(seq.prompt_ids) - prefix)
        try:
            for delta in llm.iterate([request], cache=self.cache, prefix_len=prefix):
                if delta.text:
                    yield delta.text
        finally:
            # The cache holds the prompt and every generated token but the last (never fed back); a turn cut
            # short still leaves a valid prefix.
            self.cached_ids = (seq.prompt_ids + seq.output_ids[:-1])[: self.cache.length]
