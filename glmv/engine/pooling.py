"""Embeddings and likelihood scores from the generative GLM-V: `LLM.embed`, `LLM.score`, and the server's
/v1/embeddings and /v1/score.

Embedding: the final-norm hidden state of the input's last token (last-token pooling, what decoder-only embedders
such as e5-mistral and VLM2Vec use: under causal attention the last position is the only one that has seen the
whole input), L2-normalised; `pooling="mean"` averages every token's state instead.
Score: how likely the model finds a candidate as its whole answer to a query: the mean log-probability per token
of the candidate's tokens and the end-of-turn token after them (the training format: an answer ends by opening
the next user turn), rendered as a chat with thinking off. Mean, not sum, so that a longer candidate is not
penalised for its length; the end token makes "a red circle." lose to "a red circle and a blue square." when the
image has both.

These run the model's plain forward (no KV cache, no scheduler): each call is one batched forward over
left-padded rows, like a prefill, with the vision features taken from the engine's vision cache.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F

from glmv.errors import InputError
from glmv.inputs.chat import normalize_messages
from glmv.inputs.image import ImageFeatures
from glmv.inputs.processor import left_pad
from glmv.inputs.video import VideoFeatures

if TYPE_CHECKING:
    from glmv.engine.llm import LLM

Pooling = Literal["last", "mean"]
# Rows of one forward: bounded so that a request with many inputs runs as several forwards, not one huge one.
MAX_ROWS_PER_FORWARD = 16


@dataclass
class Row:
    """One input to pool: token ids (placeholders expanded) and its media, in order."""

    ids: list[int]
    images: list[ImageFeatures] = field(default_factory=list)
    videos: list[VideoFeatures] = field(default_factory=list)


@dataclass
class EmbeddingOutput:
    embedding: list[float]


@dataclass
class EmbeddingRequestOutput:
    """vLLM's shape: `out.outputs.embedding`."""

    request_id: str
    prompt_token_ids: list[int]
    outputs: EmbeddingOutput


@dataclass
class ScoringOutput:
    score: float  # mean log-probability per token of the candidate (and its end token): higher is better


@dataclass
class ScoringRequestOutput:
    """vLLM's shape: `out.outputs.score`."""

    request_id: str
    prompt_token_ids: list[int]
    outputs: ScoringOutput


class Pooler:
    """Embeds and scores inputs with `llm`'s model. One forward at a time (a lock): the server calls it from
    worker threads while the engine thread decodes."""

    def __init__(self, llm: LLM):
        self.llm = llm
        self.lock = threading.Lock()

    # --- inputs ---------------------------------------------------------------------------------------------
    def row(self, prompt: str | list[int] | list[dict], add_generation_prompt: bool = False) -> Row:
        """A text (embedded as written, no template: what /v1/embeddings does with `input`), token ids, or a
        conversation (messages with images/videos, rendered by the chat template)."""
        llm = self.llm
        limit = llm.engine.max_model_len
        if isinstance(prompt, str):
            llm.tokenizer.check_fits(prompt, limit)
            return self._checked(Row(llm.tokenizer.encode(prompt)))
        if isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            return self._checked(Row(list(prompt)))
        if isinstance(prompt, list) and prompt and all(isinstance(m, dict) for m in prompt):
            return self._conversation(prompt, add_generation_prompt)
        raise InputError("an input must be a non-empty string, a list of token ids, or a list of chat messages")

    def _conversation(self, messages: list[dict], add_generation_prompt: bool, enable_thinking: bool | None = None,
                      ) -> Row:
        proc = self.llm.processor
        normalized, media = normalize_messages(messages)
        text = proc.render_chat(normalized, add_generation_prompt, None, enable_thinking)
        proc.tokenizer.check_fits(text, self.llm.engine.max_model_len)
        images, videos = proc.process_media(media)
        ids, _ = proc.encode_prompt(text, images, videos)
        return self._checked(Row(ids, images, videos))

    def _checked(self, row: Row) -> Row:
        vocab, limit = self.llm.model.config.text.vocab_size, self.llm.engine.max_model_len
        if not row.ids:
            raise InputError("an input is empty: nothing to embed")
        if len(row.ids) > limit:
            raise InputError(f"an input has {len(row.ids)} tokens, over the model's context of {limit}")
        if any(not 0 <= t < vocab for t in row.ids):
            raise InputError(f"token ids must lie in [0, {vocab})")
        return row

    def score_rows(self, query: str | list[dict], candidates: Seq[str]) -> tuple[list[Row], int]:
        """Rows of query + candidate + end-of-turn token for each candidate, and the query's length in tokens.
        A text query is one user message; a list of messages is the conversation so far."""
        if isinstance(candidates, str) or not candidates or not all(isinstance(c, str) for c in candidates):
            raise InputError("candidates must be a non-empty list of strings")
        if isinstance(query, str):
            query = [{"role": "user", "content": query}]
        prefix = self._conversation(query, True, enable_thinking=False)
        tok = self.llm.tokenizer
        end = tok.token_id("<|user|>")
        rows = [self._checked(Row(prefix.ids + tok.encode(c) + [end], prefix.images, prefix.videos))
                for c in candidates]
        return rows, len(prefix.ids)

    # --- the forward ----------------------------------------------------------------------------------------
    @torch.inference_mode()
    def hidden_states(self, rows: list[Row]) -> list[torch.Tensor]:
        """Final-norm hidden states of each row, [len(row.ids), hidden], in rows' order."""
        out: list[torch.Tensor] = []
        with self.lock:
            for at in range(0, len(rows), MAX_ROWS_PER_FORWARD):
                out += self._forward(rows[at : at + MAX_ROWS_PER_FORWARD])
        return out

    def _forward(self, rows: list[Row]) -> list[torch.Tensor]:
        model, vision = self.llm.model, self.llm.engine.vision
        device = model.device
        ids, mask = left_pad([r.ids for r in rows], self.llm.tokenizer.pad_token_id)  # as a batched prefill
        length = ids.shape[1]
        images = [f for r in rows for f in r.images]
        videos = [f for r in rows for f in r.videos]
        grids = {
            "image_grid_thw": torch.tensor([f.grid_thw for f in images], device=device) if images else None,
            "video_grid_thw": torch.tensor([f.grid_thw for f in videos], device=device) if videos else None,
        }
        out = model(ids.to(device), mask.to(device), **grids, image_embeds=vision.images(images),
                    video_embeds=vision.videos(videos), logits_to_keep=1, return_hidden=True)
        h = out.hidden_states
        return [h[b, length - len(r.ids) :] for b, r in enumerate(rows)]

    # --- embed and score ------------------------------------------------------------------------------------
    def embed(self, rows: list[Row], pooling: Pooling = "last", normalize: bool = True) -> list[torch.Tensor]:
        if pooling not in ("last", "mean"):
            raise InputError(f"pooling must be 'last' or 'mean', got {pooling!r}")
        states = self.hidden_states(rows)
        vectors = [(h[-1] if pooling == "last" else h.mean(0)).float() for h in states]
        return [F.normalize(v, dim=-1) if normalize else v for v in vectors]

    @torch.inference_mode()
    def score(self, rows: list[Row], prefix_len: int) -> list[float]:
        """Mean log-probability of each row's tokens after `prefix_len` (see the module docstring)."""
        lm_head = self.llm.model.lm_head
        scores = []
        for h, row in zip(self.hidden_states(rows), rows):
            targets = torch.tensor(row.ids[prefix_len:], device=h.device)
            logits = lm_head(h[prefix_len - 1 : -1]).float()  # position i predicts token i + 1
            scores.append(logits.log_softmax(-1).gather(-1, targets[:, None]).mean().item())
        return scores


def embed_outputs(rows: list[Row], vectors: list[torch.Tensor], ids: list[str]) -> list[EmbeddingRequestOutput]:
    return [EmbeddingRequestOutput(i, r.ids, EmbeddingOutput(v.tolist())) for i, r, v in zip(ids, rows, vectors)]


def as_prompt_list(prompts: Any) -> list:
    """One input or a list of them -> a list (a conversation, a token-id list and a string are single inputs)."""
    if isinstance(prompts, str):
        return [prompts]
    if isinstance(prompts, list) and prompts and (isinstance(prompts[0], dict) or isinstance(prompts[0], int)):
        return [prompts]
    if isinstance(prompts, list) and prompts:
        return list(prompts)
    raise InputError("give one input or a non-empty list of inputs")
