"""Request bodies of the OpenAI API (plus vLLM's common extras), validated strictly, and their sampling params.

Strict: a string where a number belongs is refused (as OpenAI does) rather than coerced. Unknown fields are
ignored, because clients send fields this server has no use for (`user`, `metadata`, `parallel_tool_calls`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from glmv.engine.sampling import SamplingParams
from glmv.errors import InputError

# Names the chat template binds itself: a request must not rebind them through chat_template_kwargs.
RESERVED_TEMPLATE_VARS = frozenset({"messages", "tools", "documents", "add_generation_prompt", "enable_thinking"})


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class StreamOptions(_Body):
    include_usage: bool = False


class JsonSchema(_Body):
    name: str = "response"
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Body):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchema | None = None


class _Generate(_Body):
    """Fields shared by /v1/chat/completions and /v1/completions."""

    model: str
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    n: int = 1
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    ignore_eos: bool = False
    min_tokens: int = 0
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False

    def _limit(self) -> int | None:
        return self.max_tokens

    def _top_logprobs(self) -> int | None:
        return None

    def sampling_params(self, defaults: SamplingParams, context: int) -> SamplingParams:
        """The request's values over the checkpoint's defaults. Without max_tokens the answer may fill the rest
        of the context (the engine caps every budget at context - prompt), as vLLM does."""
        values = dict(vars(defaults))
        for name in ("n", "temperature", "top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty",
                     "repetition_penalty", "seed", "ignore_eos", "min_tokens", "skip_special_tokens",
                     "include_stop_str_in_output"):
            value = getattr(self, name)
            if value is not None:
                values[name] = value
        values["stop"] = [] if self.stop is None else self.stop
        limit = self._limit()
        values["max_tokens"] = context if limit is None else limit
        values["logprobs"] = self._top_logprobs()
        return SamplingParams(**values)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_Generate):
    messages: list[dict[str, Any]]
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    response_format: ResponseFormat | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None

    def _limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def _top_logprobs(self) -> int | None:
        if self.top_logprobs is not None and not self.logprobs:
            raise InputError("top_logprobs needs logprobs: true")
        return (self.top_logprobs or 0) if self.logprobs else None

    def template_kwargs(self) -> tuple[bool | None, dict[str, Any]]:
        """(enable_thinking, the other chat template variables)."""
        kwargs = dict(self.chat_template_kwargs or {})
        thinking = kwargs.pop("enable_thinking", None)
        if thinking is not None and not isinstance(thinking, bool):
            raise InputError("chat_template_kwargs.enable_thinking must be true or false")
        clash = sorted(RESERVED_TEMPLATE_VARS & kwargs.keys())
        if clash:
            raise InputError(f"chat_template_kwargs may not set {', '.join(clash)}")
        return thinking, kwargs


class CompletionRequest(_Generate):
    prompt: str
    logprobs: int | None = None

    def _top_logprobs(self) -> int | None:
        return self.logprobs
