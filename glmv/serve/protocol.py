"""Request bodies of the OpenAI API (plus vLLM's common extras), validated strictly, and their sampling params.

Strict: a string where a number belongs is refused (as OpenAI does) rather than coerced. Unknown fields are
ignored, because clients send fields this server has no use for (`user`, `metadata`, `parallel_tool_calls`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from glmv.engine.sampling import SamplingParams
from glmv.engine.tool_choice import plan_tools
from glmv.errors import InputError

# Names the chat template binds itself: a request must not rebind them through chat_template_kwargs.
RESERVED_TEMPLATE_VARS = frozenset({"messages", "tools", "documents", "add_generation_prompt", "enable_thinking"})
# Each is compared with every token the request samples: bounded, so one request cannot slow the shared batch.
MAX_STOP_TOKEN_IDS = 1024


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

    def params(self) -> dict[str, Any]:
        """The SamplingParams fields that enforce this format (`strict` or not: the answer always follows it)."""
        if self.type == "json_schema" and self.json_schema is not None and self.json_schema.schema_ is not None:
            return {"json_schema": self.json_schema.schema_}
        return {} if self.type == "text" else {"json_object": True}


class StructuredOutputs(_Body):
    """vLLM's `structured_outputs` object: one constraint on the answer (its other options are ignored)."""

    json_: dict[str, Any] | str | None = Field(default=None, alias="json")
    json_object: bool | None = None
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None

    def params(self) -> dict[str, Any]:
        values = {"json_schema": self.json_, "json_object": self.json_object, "regex": self.regex,
                  "choice": self.choice, "grammar": self.grammar}
        return {k: v for k, v in values.items() if v is not None}


class FunctionDefinition(_Body):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None  # a JSON schema: it also types the arguments the model writes
    strict: bool | None = None


class Tool(_Body):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class FunctionName(_Body):
    name: str


class NamedToolChoice(_Body):
    type: Literal["function"] = "function"
    function: FunctionName


class _Generate(_Body):
    """Fields shared by /v1/chat/completions and /v1/completions."""

    model: str | None = None  # optional: this server serves one model
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
    stop_token_ids: list[int] | None = Field(default=None, max_length=MAX_STOP_TOKEN_IDS)
    ignore_eos: bool = False
    min_tokens: int = 0
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    # Structured output, vLLM's ways (chat also takes OpenAI's response_format): the newer object, the older fields.
    structured_outputs: StructuredOutputs | None = None
    guided_json: dict[str, Any] | str | None = None
    guided_regex: str | None = None
    guided_choice: list[str] | None = None
    guided_grammar: str | None = None

    def _limit(self) -> int | None:
        return self.max_tokens

    def _structured_ways(self) -> dict[str, dict[str, Any]]:
        """{field that asked: the SamplingParams fields it sets}, for each way of asking for structured output."""
        ways = {}
        if self.structured_outputs is not None:
            ways["structured_outputs"] = self.structured_outputs.params()
        guided = {"json_schema": self.guided_json, "regex": self.guided_regex, "choice": self.guided_choice,
                  "grammar": self.guided_grammar}
        guided = {k: v for k, v in guided.items() if v is not None}
        if guided:
            ways["guided_*"] = guided
        return ways

    def _structured(self) -> dict[str, Any]:
        """The structured-output fields of SamplingParams; asking in two ways at once is refused (which should
        win is anyone's guess), and SamplingParams refuses two constraints given in one way."""
        ways = self._structured_ways()
        if len(ways) > 1:
            raise InputError(f"structured output is asked for in {' and '.join(ways)}: use one")
        return next(iter(ways.values()), {})

    def _top_logprobs(self) -> int | None:
        return None

    def sampling_params(self, defaults: SamplingParams, context: int) -> SamplingParams:
        """The request's values over the checkpoint's defaults. Without max_tokens the answer may fill the rest
        of the context (the engine caps every budget at context - prompt), as vLLM does. stop_token_ids add to
        the defaults' (the checkpoint's eos ids), as in vLLM."""
        values = dict(vars(defaults))
        for name in ("n", "temperature", "top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty",
                     "repetition_penalty", "seed", "ignore_eos", "min_tokens", "skip_special_tokens",
                     "include_stop_str_in_output"):
            value = getattr(self, name)
            if value is not None:
                values[name] = value
        values["stop"] = [] if self.stop is None else self.stop
        if self.stop_token_ids is not None:
            values["stop_token_ids"] = [*(defaults.stop_token_ids or ()), *self.stop_token_ids]
        limit = self._limit()
        values["max_tokens"] = context if limit is None else limit
        values["logprobs"] = self._top_logprobs()
        values.update(self._structured())
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
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None

    def _limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def _structured_ways(self) -> dict[str, dict[str, Any]]:
        ways = super()._structured_ways()
        if self.response_format is not None and self.response_format.type != "text":
            ways["response_format"] = self.response_format.params()
        return ways

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

    def tool_plan(self, added_tokens: frozenset[str]) -> tuple[list[dict] | None, str | None]:
        """(the tools to render into the prompt, which also type the parsed calls; the grammar that enforces
        tool_choice "required" or a named function, else None): glmv.engine.tool_choice.plan_tools."""
        tools = [tool.model_dump(exclude_none=True) for tool in self.tools] if self.tools else None
        choice = self.tool_choice.model_dump() if isinstance(self.tool_choice, NamedToolChoice) else self.tool_choice
        return plan_tools(tools, choice, added_tokens)


class CompletionRequest(_Generate):
    prompt: str
    logprobs: int | None = None

    def _top_logprobs(self) -> int | None:
        return self.logprobs


# At most this many inputs in one /v1/embeddings or /v1/score request (each is a row of a forward).
MAX_POOLING_INPUTS = 256


class EmbeddingRequest(_Body):
    """OpenAI's /v1/embeddings body, plus vLLM's chat form (`messages`: one conversation with images/videos,
    rendered by the chat template, one embedding)."""

    model: str | None = None
    input: str | list[str] | list[int] | list[list[int]] | None = None
    messages: list[dict[str, Any]] | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    add_generation_prompt: bool = False  # for `messages`

    def inputs(self) -> list:
        """The inputs to embed, one row each."""
        if (self.input is None) == (self.messages is None):
            raise InputError("give exactly one of 'input' (texts or token ids) or 'messages' (a conversation)")
        if self.messages is not None:
            return [self.messages]
        if isinstance(self.input, str) or (self.input and isinstance(self.input[0], int)):
            items = [self.input]
        else:
            items = list(self.input)
        if not items:
            raise InputError("'input' is empty")
        if len(items) > MAX_POOLING_INPUTS:
            raise InputError(f"'input' has {len(items)} items; send at most {MAX_POOLING_INPUTS} per request")
        return items


class ScoreContent(_Body):
    """A multimodal query: OpenAI content parts (text, image_url, video_url), one user message."""

    content: list[dict[str, Any]]


class ScoreRequest(_Body):
    """vLLM's /v1/score body: text_1 (queries) against text_2 (candidates): one query and many candidates, or
    two lists of equal length scored pair by pair."""

    model: str | None = None
    text_1: str | list[str] | ScoreContent
    text_2: str | list[str]

    def pairs(self) -> list[tuple[str | list[dict], list[str]]]:
        """[(query as a text or messages, its candidates)], in the order of the scores returned."""
        queries = self.text_1 if isinstance(self.text_1, list) else [self.text_1]
        candidates = [self.text_2] if isinstance(self.text_2, str) else list(self.text_2)
        if not queries or not candidates:
            raise InputError("text_1 and text_2 must not be empty")
        if max(len(queries), len(candidates)) > MAX_POOLING_INPUTS:
            raise InputError(f"score at most {MAX_POOLING_INPUTS} pairs per request")
        as_query = [[{"role": "user", "content": q.content}] if isinstance(q, ScoreContent) else q for q in queries]
        if len(as_query) == 1:
            return [(as_query[0], candidates)]
        if len(as_query) != len(candidates):
            raise InputError(f"text_1 has {len(as_query)} items and text_2 {len(candidates)}: give one text_1, "
                             "or lists of equal length")
        return [(q, [c]) for q, c in zip(as_query, candidates)]
