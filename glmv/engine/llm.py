"""`LLM`: the vLLM-shaped Python API over the model, processor and engine.

    from glmv import LLM, SamplingParams
    llm = LLM("/path/to/GLM-4.5V")                 # or LLM() for the bundled nano model
    out = llm.chat([{"role": "user", "content": [{"type": "image", "image": "cat.png"},
                                                  {"type": "text", "text": "What is this?"}]}],
                   SamplingParams(temperature=0, max_tokens=64))
    out[0].outputs[0].text, out[0].outputs[0].reasoning, out[0].outputs[0].answer, out[0].outputs[0].boxes
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any

import torch

from glmv.device import resolve_device
from glmv.engine.detokenizer import IncrementalDetokenizer
from glmv.engine.engine import Engine, EngineConfig, parse_memory
from glmv.engine import grounding
from glmv.engine.grounding import Count, Grounding, find_boxes
from glmv.engine.guided import GrammarVocab
from glmv.engine.sequence import Sequence
from glmv.engine.outputs import (
    CompletionOutput,
    RequestOutput,
    extract_answer,
    opens_think,
)
from glmv.engine.pooling import (
    EmbeddingRequestOutput,
    Pooler,
    Pooling,
    ScoringOutput,
    ScoringRequestOutput,
    as_prompt_list,
    embed_outputs,
)
from glmv.engine.sampling import SamplingParams
from glmv.engine.session import ChatSession
from glmv.engine.stop import StopMatcher
from glmv.engine.tool_calls import parse_answer
from glmv.engine.tool_choice import plan_tools, with_tool_grammar
from glmv.errors import ConfigError, InputError
from glmv.inputs.chat import normalize_messages
from glmv.inputs.image import ImageFeatures
from glmv.inputs.limits import MediaLimits
from glmv.inputs.processor import Processor
from glmv.inputs.video import VideoFeatures
from glmv.lora.serving import lora_scope, served_adapters, serve_adapters
from glmv.model.glm4v import GlmvForConditionalGeneration
from glmv.model_path import resolve_model_path
from glmv.plan import plan_for_checkpoint
from glmv.weights import load_model

log = logging.getLogger(__name__)

GENERATION_DEFAULTS = ("temperature", "top_p", "top_k", "repetition_penalty")


class LoraChoice(Enum):
    DEFAULT = "default"  # a request that leaves `lora` out runs with the LLM's default_lora


@dataclass
class Request:
    """A prompt with its n sequences, plus what turning tokens back into outputs needs."""

    request_id: str
    prompt: str
    prompt_ids: list[int]
    seqs: list[Sequence]
    images: list[ImageFeatures] = field(default_factory=list)  # processed media (training re-runs them)
    videos: list[VideoFeatures] = field(default_factory=list)
    detoks: list[IncrementalDetokenizer] = field(default_factory=list)
    stops: list[StopMatcher] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    tools: list[dict] | None = None  # the tools the prompt offered: the answer's tool calls are parsed with them

    def on_token(self, k: int) -> str:
        """Text to emit after sample k got its latest token: complete characters only, nothing that may be the
        start of a stop string; a stop string hit finishes the sample (the engine drops its row)."""
        seq = self.seqs[k]
        # The stop token that ended the sample (eos such as <|user|>, or one of stop_token_ids) is not part of the
        # answer, whatever skip_special_tokens says (vLLM's rule), unless include_stop_str_in_output asks for it.
        # The engine sets "stop" only for stop tokens; stop strings are found below.
        stopped_on_token = seq.finish_reason == "stop" and not seq.params.include_stop_str_in_output
        delta = "" if stopped_on_token else self.detoks[k].add(seq.output_ids[-1])
        if seq.finished:
            delta += self.detoks[k].flush()
        delta, hit = self.stops[k].feed(delta, final=seq.finished)
        if hit and not seq.finished:
            seq.finish_reason = "stop"
        self.texts[k] += delta
        return delta


@dataclass
class StreamDelta:
    """One piece of streamed output: new text of sample `index` of request `request`, and whether it finished."""

    request: int
    index: int
    text: str
    finish_reason: str | None = None


class LLM:
    def __init__(self, model: str | Path | None = None, dtype: torch.dtype | str | None = None,
                 device: str | torch.device = "cpu", limits: MediaLimits | None = None,
                 max_model_len: int | None = None, progress: bool = True, kv_cache_memory: int | str | None = None,
                 block_size: int = 16, max_num_batched_tokens: int = 2048, attention_backend: str = "sdpa",
                 memory: int | str | None = None, cpu_memory: int | str | None = None,
                 lora: str | Path | Mapping[str, str | Path] | None = None, tensor_parallel_size: int = 1,
                 expert_parallel: bool = False, compile: bool = False, compile_mode: str = "default"):
        """`kv_cache_memory`: bytes (or "2GiB", "512MB") of paged KV cache, allocated once (default: on CPU room for
        16 full-context sequences, at most 1 GiB; on GPU half the free memory); `block_size`: tokens per KV block;
        `max_num_batched_tokens`: tokens one step computes at most (longer prompts are prefilled in chunks between
        decode steps); `attention_backend`: "sdpa" (gather + SDPA) or "flex" (FlexAttention over the pool in place;
        glmv/engine/paged_kv.py); `memory`: bytes (or "80GiB", or "auto": what the device has free) the model
        must fit, as planned by glmv.plan (quantised as it loads, routed experts offloaded to `cpu_memory` of host
        RAM, or memory-mapped: whatever the plan says; logged at INFO) with a KV cache of one full context unless
        `kv_cache_memory` says otherwise; `lora`: peft-layout LoRA / DoRA adapters served unmerged, {name:
        directory} (a request picks one by name, `lora=`; none: the base model; one batch mixes them), or one
        directory (named after it, and the default of requests that name none; glmv/lora/serving.py; decode
        steps then run eagerly, whatever `compile` says); `tensor_parallel_size`: shard the model over that many
        processes (this one drives the engine, the others are started here and follow every forward; on CUDA one
        GPU each, cuda:0..n-1): attention, dense/shared MLPs and the vocabulary split by
        tensor parallelism, routed experts too, or by expert with `expert_parallel` (glmv/distributed/serving.py;
        the "sdpa" backend, float weights, no `memory` plan or `lora`); `compile`: decode steps through torch.compile,
        compiled before this returns (glmv/engine/compiled_step.py: seconds from Inductor's cache, about half a
        minute for a new model shape on CPU); `compile_mode`: "default", or "max-autotune" (weights frozen into the
        compiled step, Inductor's C++ GEMM templates on CPU: the fastest decode, for a second packed copy of the
        decoder's weights and minutes of compiling for a new checkpoint; docs/performance.md)."""
        engine = EngineConfig(block_size, parse_memory(kv_cache_memory), max_num_batched_tokens=max_num_batched_tokens,
                              attention_backend=attention_backend, compile=compile, compile_mode=compile_mode)
        device = resolve_device(device)  # "auto", or one this machine has: a clear error before any loading
        path = resolve_model_path(model)
        load = {}
        if memory is not None:
            plan = plan_for_checkpoint(path, str(device), memory, cpu_memory, max_model_len)
            load = plan.load_kwargs()
            dtype = dtype or load.pop("dtype")
            engine = replace(engine, kv_cache_memory=engine.kv_cache_memory or plan.kv_bytes)
        elif dtype is None and device.type == "cpu":
            dtype = torch.float32  # CPUs compute bf16 slowly and coarsely: upcast, as llama.cpp/Ollama do
        adapters = _adapter_dirs(lora)
        if adapters and compile:  # the compiled decode step would run the base model: it reads no adapter mapping
            log.warning("LoRA adapters are served by the eager engine: decode steps are not compiled")
            engine = replace(engine, compile=False)
        if not isinstance(tensor_parallel_size, int) or tensor_parallel_size < 1:
            raise ConfigError(f"tensor_parallel_size must be a positive integer, got {tensor_parallel_size!r}")
        if tensor_parallel_size > 1:
            if memory is not None or lora is not None or attention_backend != "sdpa":
                raise ConfigError("tensor_parallel_size > 1 takes float weights and the 'sdpa' backend: "
                                  "no memory plan, no LoRA adapter, no 'flex' attention")
            from glmv.distributed.serving import load_parallel

            model = load_parallel(path, tensor_parallel_size, dtype=dtype, device=device,
                                  experts="ep" if expert_parallel else "tp")
        else:
            model = load_model(path, dtype=dtype, device=device, progress=progress, **load)
        if adapters:  # before the engine wraps the model: nothing it caches may predate the adapters
            serve_adapters(model, adapters, dtype=model.dtype)  # the model's dtype keeps grouped expert GEMMs usable
        self._setup(path, model, Processor.from_pretrained(path, limits), max_model_len, engine)
        if isinstance(lora, (str, Path)):  # one directory: its adapter serves every request that names none
            self.default_lora = next(iter(adapters))

    @classmethod
    def from_model(cls, model: GlmvForConditionalGeneration, path: str | Path, max_model_len: int | None = None) -> "LLM":
        """Wrap a model already in memory (e.g. during training) with the processor of checkpoint `path`."""
        llm = cls.__new__(cls)
        llm._setup(Path(path), model, Processor.from_pretrained(path), max_model_len)
        return llm

    def _setup(self, path: Path, model: GlmvForConditionalGeneration, processor: Processor, max_model_len: int | None,
               engine: EngineConfig = EngineConfig()):
        self.path, self.model, self.processor = path, model, processor
        self.tokenizer = processor.tokenizer
        eos = self.tokenizer.eos_token_ids or model.config.text.eos_token_id
        self.engine = Engine(model, eos, max_model_len, engine, grammar_vocab=GrammarVocab.from_pretrained(path, eos))
        self._generation_config = self._read_generation_config()
        self.pooler = Pooler(self)
        self.adapters = served_adapters(model)  # the LoRA adapters served (lora=), or None
        self.default_lora: str | None = None  # the adapter of requests that name none (None: the base model)
        self._next_id = 0

    def _read_generation_config(self) -> dict:
        """The sampling defaults of the checkpoint's generation_config.json, checked at load: a bad value there
        would otherwise fail every request with an error that blames the client."""

        file = self.path / "generation_config.json"
        config = json.loads(file.read_text()) if file.is_file() else {}  # a JSON object: the tokenizer checked it
        defaults = {k: config[k] for k in GENERATION_DEFAULTS if config.get(k) is not None}  # null: not set
        try:
            SamplingParams(**defaults)
        except InputError as e:
            raise ConfigError(f"generation_config.json: {e}; correct it in {file}") from None
        return defaults

    def default_sampling_params(self) -> SamplingParams:
        """The checkpoint's generation_config.json sampling values (like vLLM), else SamplingParams defaults."""
        return SamplingParams(**self._generation_config)

    # --- preparing requests -------------------------------------------------------------------------------------
    def _new_ids(self, n: int) -> list[str]:
        """n request ids never given before by this LLM."""
        self._next_id += n
        return [str(i) for i in range(self._next_id - n + 1, self._next_id + 1)]

    def _lora(self, lora: str | None | LoraChoice) -> str | None:
        """A request's adapter: a served adapter's name, None (the base model), or left out: default_lora."""
        name = self.default_lora if lora is LoraChoice.DEFAULT else lora
        if name is not None and (self.adapters is None or name not in self.adapters.names):
            served = ", ".join(self.adapters.names) if self.adapters else "none (LLM(..., lora=...) loads them)"
            raise InputError(f"no LoRA adapter named {name!r} is served; served adapters: {served}")
        return name

    def _request(self, prompt: str, ids: list[int], params: SamplingParams, images=(), videos=(),
                 image_embeds=(), video_embeds=(), tools: list[dict] | None = None, lora: str | None = None) -> Request:
        seqs = [
            Sequence(list(ids), params, list(image_embeds), [f.grid_thw for f in images], list(video_embeds),
                     [f.grid_thw for f in videos], seed_offset=i, lora=lora)
            for i in range(params.n)
        ]
        for seq in seqs[1:]:
            seq.leader = seqs[0]  # they share the prompt: computed once, then found in the prefix cache
        req = Request(self._new_ids(1)[0], prompt, list(ids), seqs, list(images), list(videos), tools=tools)
        for _ in seqs:
            req.detoks.append(IncrementalDetokenizer(self.tokenizer, skip_special_tokens=params.skip_special_tokens))
            req.stops.append(StopMatcher(params.stop, params.include_stop_str_in_output))
            req.texts.append("")
        return req

    def prepare_chat(self, conversations: list[list[dict]], params: SamplingParams,
                     enable_thinking: bool | None = None, tools: list[dict] | None = None,
                     lora: str | None | LoraChoice = LoraChoice.DEFAULT, **template_kwargs: Any) -> list[Request]:
        """Render, tokenize and process the media of each conversation; vision runs once for all their media.
        `lora`: the served adapter they run with (None: the base model)."""
        lora = self._lora(lora)
        proc = self.processor
        parsed = [normalize_messages(conv) for conv in conversations]
        for messages, _ in parsed:  # refuse a huge text before any work on it
            proc.tokenizer.check_chars(sum(map(len, _texts(messages))), self.engine.max_model_len)
        media = [proc.process_media(refs) for _, refs in parsed]  # limits apply per conversation
        images = [f for conv_images, _ in media for f in conv_images]
        videos = [f for _, conv_videos in media for f in conv_videos]
        with lora_scope(self.model, lora):  # an adapter may adapt the vision tower too
            image_embeds, video_embeds = self.engine.vision.images(images), self.engine.vision.videos(videos)
        requests, i_at, v_at = [], 0, 0
        for messages, media in parsed:
            n_img = sum(m.kind == "image" for m in media)
            n_vid = len(media) - n_img
            prompt = proc.render_chat(messages, True, tools, enable_thinking, **template_kwargs)
            proc.tokenizer.check_fits(prompt, self.engine.max_model_len)
            imgs, vids = images[i_at : i_at + n_img], videos[v_at : v_at + n_vid]
            ids, _ = proc.encode_prompt(prompt, imgs, vids)
            requests.append(self._request(proc.tokenizer.unescape(prompt), ids, params, imgs, vids,
                                          image_embeds[i_at : i_at + n_img],
                                          video_embeds[v_at : v_at + n_vid], tools, lora))
            i_at, v_at = i_at + n_img, v_at + n_vid
        return requests

    # --- running ------------------------------------------------------------------------------------------------
    def iterate(self, requests: list[Request]) -> Iterator[StreamDelta]:
        """Run requests together, yielding text deltas as tokens are decoded (never half a character, never
        text that may still turn out to be part of a stop string)."""
        where = {id(seq): (r, k) for r, req in enumerate(requests) for k, seq in enumerate(req.seqs)}
        seqs = [seq for req in requests for seq in req.seqs]
        for step in self.engine.run(seqs):
            for seq, _ in step:
                r, k = where[id(seq)]
                delta = requests[r].on_token(k)
                if delta or seq.finished:
                    yield StreamDelta(r, k, delta, seq.finish_reason)

    def request_output(self, req: Request) -> RequestOutput:
        outputs = []
        in_think = opens_think(req.prompt)
        for k, seq in enumerate(req.seqs):
            text = req.texts[k]
            reasoning, content, tool_calls = parse_answer(text, in_think, req.tools)
            # In pixels of the image each refers to (the last one unless the answer names another); as written
            # (thousandths) when the prompt has no image or its size is unknown.
            sizes = [f.original_size for f in req.images]
            boxes = [list(b.pixels or b.box_1000) for b in find_boxes(content, sizes if all(sizes) else ())]
            stop_reason = req.stops[k].matched
            if stop_reason is None and seq.finish_reason == "stop" and seq.output_ids:
                stop_reason = seq.output_ids[-1]  # the stop / eos token
            outputs.append(CompletionOutput(
                index=k, text=text, token_ids=list(seq.output_ids), finish_reason=seq.finish_reason,
                stop_reason=stop_reason, logprobs=seq.logprobs if seq.params.logprobs is not None else None,
                reasoning=reasoning, content=content, tool_calls=tool_calls, answer=extract_answer(content),
                boxes=boxes,
            ))
        n_out = sum(len(s.output_ids) for s in req.seqs)
        return RequestOutput(req.request_id, req.prompt, req.prompt_ids, outputs, finished=True,
                             prompt_tokens=len(req.prompt_ids), completion_tokens=n_out,
                             cached_tokens=req.seqs[0].num_cached_tokens)

    def run_requests(self, requests: list[Request]) -> list[RequestOutput]:
        for _ in self.iterate(requests):
            pass
        return [self.request_output(r) for r in requests]

    # --- public API ---------------------------------------------------------------------------------------------
    def chat(self, messages: list[dict] | list[list[dict]], sampling_params: SamplingParams | None = None,
             enable_thinking: bool | None = None, tools: list[dict] | None = None,
             chat_template_kwargs: dict | None = None, tool_choice: str | dict | None = None,
             lora: str | None | LoraChoice = LoraChoice.DEFAULT) -> list[RequestOutput]:
        """One conversation (a list of messages) or a list of conversations -> one RequestOutput each.

        tools: OpenAI-shaped function definitions ({"type": "function", "function": {"name", "description",
        "parameters"}}), rendered into the prompt; the calls the model makes come back parsed in each output's
        `tool_calls` (arguments typed by each tool's JSON schema), and its `content` is the text outside them.
        tool_choice: "auto" (default), "none", "required" or {"type": "function", "function": {"name": ...}};
        the last two are enforced by constrained decoding (glmv/engine/tool_choice.py).
        lora: the served adapter to answer with (LLM(..., lora=)); None: the base model; left out: default_lora."""
        batched = bool(messages) and isinstance(messages[0], (list, tuple))
        conversations = list(messages) if batched else [messages]
        tools, tool_grammar = plan_tools(tools, tool_choice, self.tokenizer.added_tokens)
        params = with_tool_grammar(sampling_params or self.default_sampling_params(), tool_grammar)
        reqs = self.prepare_chat(conversations, params, enable_thinking, tools, lora,
                                 **(chat_template_kwargs or {}))
        return self.run_requests(reqs)

    def chat_stream(self, messages: list[dict], sampling_params: SamplingParams | None = None,
                    enable_thinking: bool | None = None, lora: str | None | LoraChoice = LoraChoice.DEFAULT,
                    **template_kwargs: Any) -> Iterator[str]:
        """Text deltas of one conversation's answer as they are decoded (their concatenation is the full text)."""
        params = sampling_params or self.default_sampling_params()
        reqs = self.prepare_chat([messages], params, enable_thinking, lora=lora, **template_kwargs)
        for d in self.iterate(reqs):
            if d.text:
                yield d.text

    def generate(self, prompts: str | list[str] | list[int] | list[list[int]] | dict | list[dict],
                 sampling_params: SamplingParams | None = None,
                 lora: str | None | LoraChoice = LoraChoice.DEFAULT) -> list[RequestOutput]:
        """Raw prompts (already formatted), token id lists, or {"prompt_token_ids": [...]} dicts; text only.
        `lora` as in chat()."""
        params = sampling_params or self.default_sampling_params()
        if isinstance(prompts, (str, dict)) or (isinstance(prompts, list) and prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        return self.run_requests([self.prepare_prompt(p, params, lora) for p in prompts])

    def prepare_prompt(self, prompt: str | list[int] | dict, params: SamplingParams,
                       lora: str | None | LoraChoice = LoraChoice.DEFAULT) -> Request:
        """A request for an already formatted prompt: text, token ids, or {"prompt" | "prompt_token_ids": ...},
        run with the served adapter `lora` (None: the base model)."""
        lora = self._lora(lora)
        if isinstance(prompt, dict):
            if "prompt_token_ids" in prompt:
                prompt = list(prompt["prompt_token_ids"])
            elif "prompt" in prompt:
                prompt = prompt["prompt"]
            else:
                raise InputError("a prompt dict needs 'prompt' or 'prompt_token_ids'")
        if isinstance(prompt, str):
            self.tokenizer.check_fits(prompt, self.engine.max_model_len)
            return self._request(prompt, self.tokenizer.encode(prompt), params, lora=lora)
        if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
            return self._request(self.tokenizer.decode(prompt), prompt, params, lora=lora)
        raise InputError(f"unsupported prompt of type {type(prompt).__name__}: give a string or a list of token ids")

    def embed(self, prompts: str | list[int] | list[dict] | list, pooling: Pooling = "last", normalize: bool = True,
              add_generation_prompt: bool = False,
              lora: str | None | LoraChoice = LoraChoice.DEFAULT) -> list[EmbeddingRequestOutput]:
        """One embedding per input (`out[i].outputs.embedding`): a text (as written), token ids, or a
        conversation with images/videos (chat template applied); a list of them is embedded as a batch.
        Last-token pooling of the final hidden state, L2-normalised (glmv/engine/pooling.py says why).
        `lora` as in chat()."""
        rows = [self.pooler.row(p, add_generation_prompt) for p in as_prompt_list(prompts)]
        with lora_scope(self.model, self._lora(lora)):
            vectors = self.pooler.embed(rows, pooling, normalize)
        return embed_outputs(rows, vectors, self._new_ids(len(rows)))

    def score(self, query: str | list[dict], candidates: str | list[str],
              lora: str | None | LoraChoice = LoraChoice.DEFAULT) -> list[ScoringRequestOutput]:
        """How well each candidate answers `query` (a text, or messages with images): the mean log-probability
        per token of the candidate as the model's reply (`out[i].outputs.score`, higher is better). `lora` as
        in chat()."""
        candidates = [candidates] if isinstance(candidates, str) else candidates
        rows, prefix_len = self.pooler.score_rows(query, candidates)
        with lora_scope(self.model, self._lora(lora)):
            scores = self.pooler.score(rows, prefix_len)
        return [ScoringRequestOutput(i, r.ids, ScoringOutput(s))
                for i, r, s in zip(self._new_ids(len(rows)), rows, scores)]

    def start_chat(self) -> ChatSession:
        """A conversation that keeps its KV cache and image embeddings between turns."""
        return ChatSession(self)

    def ground(self, image: Any, phrase: str, **kw: Any) -> Grounding:
        """Where `phrase` is in the image(s): a Grounding with boxes in pixels (glmv.engine.grounding.ground)."""
        return grounding.ground(self, image, phrase, **kw)

    def count(self, image: Any, phrase: str, **kw: Any) -> Count:
        """How many `phrase` the image(s) show: a Count with the boxes (glmv.engine.grounding.count)."""
        return grounding.count(self, image, phrase, **kw)


def _texts(messages: list[dict]) -> list[str]:
    """The text of normalised messages: string contents and text parts."""
    out = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            out += [p["text"] for p in content if p.get("type") == "text"]
    return out


def _adapter_dirs(lora: str | Path | Mapping[str, str | Path] | None) -> dict[str, Path]:
    """LLM's `lora` as {name: directory}: a lone directory is named after itself."""
    if lora is None:
        return {}
    if isinstance(lora, (str, Path)):
        return {Path(lora).resolve().name or str(lora): Path(lora)}
    if isinstance(lora, Mapping) and lora:
        return {name: Path(path) for name, path in lora.items()}
    raise ConfigError(f"lora must be an adapter directory or a non-empty {{name: directory}} mapping, got {lora!r}")
