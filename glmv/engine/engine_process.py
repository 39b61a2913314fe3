"""The engine in its own process, for `glmv serve` (vLLM's EngineCore split).

In one process, the engine thread and the server's event loop take turns on one interpreter lock: every token of
every stream costs the event loop some Python (parsing, JSON, SSE), and while it runs, the engine waits. At 32
streams on a small model the server reached 0.6x the engine's own throughput. Here the engine runs in a child
process with its own interpreter, and the two exchange messages over a pipe:

    front end (HTTP)                                  engine process
    ("submit", id, method, args, kwargs) ------->     an AsyncEngine's submit / submit_prompt, prepared and queued
    ("call", id, method, args, kwargs)   ------->     an AsyncEngine's embed / score / stats
    ("cancel", id)                       ------->     the handle's cancel()
                                         <-------     ("result" | "error", id, value): the call's answer
                                         <-------     ("step", [(id, item), ...]): one message per engine step

A step's items are a sample's new text with its token ids (and logprobs when asked), the request's RequestOutput
when it has ended, or the GlmvError that ended it. Everything that touches the model (templates, media, tokenizing,
detokenizing, stop strings, grammars) runs in the engine process; the front end keeps HTTP, the answer parsers and
the tokenizer's id-to-text tables. `EngineProcess` answers what a server asks of an AsyncEngine, the same way.

The engine process is started with `spawn` and is not a daemon (it may start its own tensor-parallel workers). It
stops when told to, or when the pipe closes because its parent is gone; it ignores Ctrl-C, which the parent
handles.
"""

from __future__ import annotations

import asyncio
import atexit
import gc
import itertools
import logging
import multiprocessing
import signal
import threading
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import torch

from glmv.engine.async_engine import AsyncEngine, EngineInfo, Handle
from glmv.engine.llm import LLM, LoraChoice, StreamDelta
from glmv.engine.outputs import CompletionOutput, RequestOutput
from glmv.engine.sampling import SamplingParams
from glmv.errors import GlmvError

log = logging.getLogger(__name__)


class EngineStoppedError(GlmvError):
    """The engine process is gone; the server cannot generate until it is restarted."""

    http_status = 503
    code = "engine_stopped"


# --- the front end --------------------------------------------------------------------------------------------
@dataclass
class RemoteSequence:
    """What the front end knows of one sample: its parameters and the tokens (and logprobs) streamed so far."""

    params: SamplingParams
    output_ids: list[int] = field(default_factory=list)
    logprobs: list[dict[int, float]] = field(default_factory=list)
    finish_reason: str | None = None


@dataclass
class RemoteRequest:
    """The front end's view of a submitted request (the fields the server's handlers read of a Request)."""

    params: SamplingParams
    seqs: list[RemoteSequence] = field(default_factory=list)
    prompt: str = ""
    tools: list[dict] | None = None
    prompt_tokens: int = 0

    def sample(self, k: int) -> RemoteSequence:
        """Sample k, made when first needed: a delta can arrive before the submission's answer says how many."""
        while len(self.seqs) <= k:
            self.seqs.append(RemoteSequence(self.params))
        return self.seqs[k]


@dataclass(eq=False)
class RemoteHandle(Handle):
    """A Handle whose request runs in the engine process; cancel() tells it."""

    owner: "EngineProcess | None" = None
    final: RequestOutput | None = None  # the request's output, once it has ended

    def cancel(self) -> None:
        if not self.cancelled and self.final is None and self.owner is not None and self.owner.alive:
            try:
                self.owner._send(("cancel", self.tag))
            except OSError:  # the engine process is gone, and the request with it
                pass
        self.cancelled = True


class EngineProcess:
    """An AsyncEngine (same methods, same errors) whose engine runs in a child process.

    Blocks until the model has loaded there; a load error (a bad checkpoint, say) is raised here."""

    def __init__(self, llm_kwargs: dict[str, Any], max_queue: int = 64, max_batch: int = 16, media_workers: int = 2,
                 threads: int | None = None):
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        engine_kwargs = {"max_queue": max_queue, "max_batch": max_batch, "media_workers": media_workers}
        self.process = ctx.Process(target=_engine_main, name="glmv-engine",
                                   args=(child, llm_kwargs, engine_kwargs, threads or torch.get_num_threads(),
                                         logging.getLogger().getEffectiveLevel()))
        self.process.start()
        child.close()
        try:
            kind, value = self.conn.recv()
        except EOFError:
            self.process.join()
            raise EngineStoppedError(f"the engine process exited with code {self.process.exitcode} while loading "
                                     "the model; its log above says why") from None
        if kind == "failed":
            self.process.join()
            raise value
        self.info: EngineInfo = value
        # multiprocessing joins non-daemon children at exit: a server that exits without shutdown() (a port in
        # use, an error before it starts serving) must still stop the engine process, or the exit would hang.
        atexit.register(self.shutdown)
        self.stopped = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.reader: threading.Thread | None = None
        self.calls: dict[int, asyncio.Future] = {}
        self.handles: dict[int, RemoteHandle] = {}
        self.ids = itertools.count()

    @property
    def alive(self) -> bool:
        return not self.stopped and self.process.is_alive()

    async def submit(self, messages: list[dict], params: SamplingParams, enable_thinking: bool | None = None,
                     tools: list[dict] | None = None, lora: str | None | LoraChoice = LoraChoice.DEFAULT,
                     **template_kwargs: Any) -> RemoteHandle:
        return await self._submit("submit", (messages, params, enable_thinking, tools, lora), template_kwargs,
                                  params)

    async def submit_prompt(self, prompt: str | list[int], params: SamplingParams,
                            lora: str | None | LoraChoice = LoraChoice.DEFAULT) -> RemoteHandle:
        return await self._submit("submit_prompt", (prompt, params, lora), {}, params)

    async def embed(self, inputs: list, add_generation_prompt: bool, lora: str | None):
        return await self._call("embed", (inputs, add_generation_prompt, lora), {})

    async def score(self, pairs: list, lora: str | None):
        return await self._call("score", (pairs, lora), {})

    async def stats(self) -> dict[str, int]:
        return await self._call("stats", (), {})

    def output(self, handle: RemoteHandle) -> RequestOutput:
        """The request's output; before it has ended (its client left), what has arrived of it so far."""
        if handle.final is not None:
            return handle.final
        req = handle.request
        outputs = [CompletionOutput(k, "", s.output_ids, s.finish_reason) for k, s in enumerate(req.seqs)]
        return RequestOutput(str(handle.tag), req.prompt, [], outputs, finished=False, prompt_tokens=req.prompt_tokens,
                             completion_tokens=sum(len(s.output_ids) for s in req.seqs))

    def shutdown(self) -> None:
        """Stop the engine process (also called at exit; a second call does nothing)."""
        if self.conn.closed:
            return
        self.stopped = True
        if self.process.is_alive():
            try:
                self._send(("stop",))
            except OSError:
                pass
            self.process.join(timeout=15)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=5)
        if self.reader is not None:  # it sees the end of the pipe now; close the pipe after, not under it
            self.reader.join(timeout=5)
        self.conn.close()

    # --- messages -----------------------------------------------------------------------------------------------
    async def _submit(self, method: str, args: tuple, kwargs: dict, params: SamplingParams) -> RemoteHandle:
        """Register the handle before asking: the engine may stream its first tokens before the call's answer."""
        rid = next(self.ids)
        handle = RemoteHandle(RemoteRequest(params), asyncio.get_running_loop(), tag=rid, owner=self)
        self.handles[rid] = handle
        try:
            prompt, tools, prompt_tokens, n = await self._call(method, args, kwargs, rid, kind="submit")
        except BaseException as e:
            self.handles.pop(rid, None)
            if isinstance(e, asyncio.CancelledError) and self.alive:  # the client left while it was prepared
                self._send(("cancel", rid))
            raise
        handle.request.prompt, handle.request.tools, handle.request.prompt_tokens = prompt, tools, prompt_tokens
        handle.request.sample(n - 1)
        return handle

    async def _call(self, method: str, args: tuple, kwargs: dict, rid: int | None = None, kind: str = "call") -> Any:
        if not self.alive:
            raise EngineStoppedError("the engine process has stopped; restart the server")
        self._listen()
        rid = next(self.ids) if rid is None else rid
        future = self.loop.create_future()
        self.calls[rid] = future
        try:
            try:
                self._send((kind, rid, method, args, kwargs))
            except (BrokenPipeError, ConnectionResetError):
                raise EngineStoppedError("the engine process has stopped; restart the server") from None
            return await future
        finally:
            self.calls.pop(rid, None)

    def _send(self, message: tuple) -> None:
        # Only the event loop's thread sends. The write blocks while the pipe is full, never for long: the engine
        # process reads on a thread that does nothing else.
        self.conn.send(message)

    def _listen(self) -> None:
        """Hand the engine's messages to the running event loop (a server has one; a script may run several in
        turn, each after the previous one has closed). The pipe is read on a thread of its own, with blocking
        reads: a message is read whole whatever its size, and the engine process is never kept waiting."""
        loop = asyncio.get_running_loop()
        if loop is self.loop:
            return
        if self.loop is not None and not self.loop.is_closed():
            raise RuntimeError("an EngineProcess serves one event loop at a time")
        self.loop = loop
        if self.reader is None:
            self.reader = threading.Thread(target=self._read, name="glmv-engine-pipe", daemon=True)
            self.reader.start()

    def _read(self) -> None:
        try:
            while True:
                message = self.conn.recv()
                self._on_loop(self._dispatch, message)
        except (EOFError, OSError):
            pass
        except Exception:  # a message that cannot be read: nothing after it can be trusted either
            log.exception("unreadable message from the engine process; stopping it")
            self.process.kill()
        self._on_loop(self._lost)

    def _on_loop(self, callback, *args) -> None:
        try:
            self.loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # that loop has closed (between two asyncio.run calls): nobody waits for it
            pass

    def _dispatch(self, message: tuple) -> None:
        kind = message[0]
        if kind == "step":
            for rid, item in message[1]:
                handle = self.handles.get(rid)
                if handle is not None:
                    self._item(rid, handle, item)
        else:  # "result" / "error"
            _, rid, value = message
            future = self.calls.get(rid)
            if future is not None and not future.done():
                (future.set_exception if kind == "error" else future.set_result)(value)

    def _item(self, rid: int, handle: RemoteHandle, item: Any) -> None:
        if isinstance(item, tuple):  # (sample, text, finish reason, new token ids, new logprobs)
            k, text, finish_reason, ids, logprobs = item
            seq = handle.request.sample(k)
            seq.output_ids += ids
            seq.logprobs += logprobs
            seq.finish_reason = finish_reason
            handle.queue.put_nowait(StreamDelta(0, k, text, finish_reason))
        elif isinstance(item, RequestOutput):
            handle.final = item
            handle.queue.put_nowait(None)
            del self.handles[rid]
        else:  # the error that ended it
            handle.queue.put_nowait(item)

    def _lost(self) -> None:
        """The engine process died: everything waiting on it fails."""
        if self.stopped:
            return
        self.stopped = True
        log.error("the engine process exited (code %s); generation requests now fail", self.process.exitcode)
        error = EngineStoppedError("the engine process stopped; restart the server")
        for future in self.calls.values():
            if not future.done():
                future.set_exception(error)
        for handle in self.handles.values():
            handle.queue.put_nowait(error)
        self.handles.clear()


# --- the engine process ---------------------------------------------------------------------------------------
def _engine_main(conn: Connection, llm_kwargs: dict, engine_kwargs: dict, threads: int, log_level: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent stops us
    torch.set_num_threads(threads)
    logging.basicConfig(level=log_level, format="%(levelname)s [engine] %(name)s: %(message)s")
    try:
        core = _Core(conn, LLM(**llm_kwargs), engine_kwargs)
    except Exception as e:  # the parent raises it (a checkpoint or config error says what to fix)
        conn.send(("failed", _portable(e)))
        return
    gc.freeze()  # the model and everything loaded with it: keep full collections from walking them again
    conn.send(("ready", core.engine.info))
    asyncio.run(core.serve())
    gc.unfreeze()  # collectable again at exit (nanobind, in compiled code, reports what is left as leaks)


class _Core:
    """Runs the calls the front end sends on an AsyncEngine, and sends each engine step's deliveries back."""

    def __init__(self, conn: Connection, llm: LLM, engine_kwargs: dict):
        self.conn = conn
        self.sending = threading.Lock()  # steps from the engine thread, answers from the pipe's, pool and loop threads
        self.handles: dict[int, Handle] = {}
        self.preparing: set[int] = set()  # submissions in the media pool
        self.cancelled: set[int] = set()  # those of them cancelled meanwhile
        self.registry = threading.Lock()  # the three above: the pipe's thread, the media pool's, the engine's
        self.sent: dict[int, list[list[int]]] = {}  # request id -> per sample: [token ids sent, logprobs sent]
        self.engine = AsyncEngine(llm, deliver=self._deliver, **engine_kwargs)

    async def serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.done = self.loop.create_future()
        # Read on a thread that does nothing else but start submissions, so that the front end's writes always
        # drain (an answer this process sends may wait for the front end to read, which may be waiting for its
        # write to finish).
        threading.Thread(target=self._read, name="glmv-pipe", daemon=True).start()
        try:
            await self.done
        finally:
            self.engine.shutdown()

    def _send(self, message: tuple) -> None:
        with self.sending:
            self.conn.send(message)

    def _read(self) -> None:
        try:
            while True:
                message = self.conn.recv()
                if message[0] == "submit":
                    self._submit(*message[1:])
                elif message[0] == "cancel":
                    self._cancel(message[1])
                else:  # "call", "stop"
                    self.loop.call_soon_threadsafe(self._dispatch, message)
        except (EOFError, OSError):  # the front end is gone
            self.loop.call_soon_threadsafe(self._dispatch, ("stop",))

    def _dispatch(self, message: tuple) -> None:
        if message[0] == "call":
            asyncio.ensure_future(self._call(*message[1:]))
        elif not self.done.done():  # "stop"
            self.done.set_result(None)

    # Submissions skip this process's event loop: from the pipe's thread to the media pool and on to the engine
    # thread. Under load every hand-over between threads waits for the interpreter lock, up to its 5 ms switch
    # interval while the engine thread is busy, and a hand-over here is time to first token for the client.
    def _submit(self, rid: int, method: str, args: tuple, kwargs: dict) -> None:
        engine = self.engine
        try:
            preparer = {"submit": engine.chat_preparer, "submit_prompt": engine.prompt_preparer}[method]
            prepare = preparer(*args, **kwargs)
            engine.reserve(args[1])  # both take (what to prepare, params, ...)
        except Exception as e:
            self._send(("error", rid, _portable(e)))
            return
        with self.registry:
            self.preparing.add(rid)
        engine.pool.submit(self._prepare, rid, prepare)

    def _prepare(self, rid: int, prepare) -> None:
        failure = None
        try:
            request = self.engine.prepared(prepare)
        except Exception as e:
            failure = _portable(e)
        finally:  # before the client can hear of a failure: its next request must find the queue slot free
            self.engine.release()
        if failure is not None:
            with self.registry:
                self.preparing.discard(rid)
                self.cancelled.discard(rid)
            self._send(("error", rid, failure))
            return
        handle = self.engine.enqueue(request, None, rid)  # its deltas may be on their way from now on (_deliver)
        with self.registry:
            self.preparing.discard(rid)
            if len(handle.closed) < len(request.seqs):  # not ended already (and so gone from self.handles)
                self.handles[rid] = handle
            if rid in self.cancelled:
                self.cancelled.discard(rid)
                handle.cancel()
        self._answer(rid, (request.prompt, request.tools, len(request.prompt_ids), len(request.seqs)))

    def _cancel(self, rid: int) -> None:
        with self.registry:
            handle = self.handles.get(rid)
            if handle is not None:
                handle.cancel()
            elif rid in self.preparing:  # _prepare cancels it once it is queued
                self.cancelled.add(rid)
            # else it is over already

    async def _call(self, rid: int, method: str, args: tuple, kwargs: dict) -> None:
        if method not in _CALLS:
            raise ValueError(f"unknown engine call {method!r}")
        try:
            result = await getattr(self.engine, method)(*args, **kwargs)
        except Exception as e:
            self._send(("error", rid, _portable(e)))
            return
        self._answer(rid, result)

    def _answer(self, rid: int, result: Any) -> None:
        try:
            self._send(("result", rid, result))
        except Exception as e:  # an answer that cannot cross must not leave its caller waiting
            self._send(("error", rid, _portable(e)))

    def _deliver(self, items: list[tuple[Handle, StreamDelta | BaseException | None]]) -> None:
        """One step's deliveries, as one message (on the engine thread)."""
        out = []
        for handle, item in items:
            rid = handle.tag
            if isinstance(item, StreamDelta):
                out.append((rid, self._delta(rid, handle, item)))
            elif item is None:
                out.append((rid, self.engine.output(handle)))
                with self.registry:
                    self.handles.pop(rid, None)
                self.sent.pop(rid, None)
            else:
                out.append((rid, _portable(item)))
        try:
            self._send(("step", out))
        except Exception as e:  # one that cannot cross (none should) fails alone; the others still go
            for rid, item in out:
                try:
                    self._send(("step", [(rid, item)]))
                except Exception:
                    self._send(("step", [(rid, _portable(e))]))

    def _delta(self, rid: int, handle: Handle, delta: StreamDelta) -> tuple:
        """The delta with the sample's token ids (and logprobs, when asked) since its previous one."""
        seqs = handle.request.seqs
        sent = self.sent.setdefault(rid, [[0, 0] for _ in seqs])[delta.index]
        seq = seqs[delta.index]
        ids = seq.output_ids[sent[0]:]
        logprobs = seq.logprobs[sent[1]:] if seq.params.logprobs is not None else []
        sent[0] += len(ids)
        sent[1] += len(logprobs)
        return delta.index, delta.text, delta.finish_reason, ids, logprobs


_CALLS = frozenset({"embed", "score", "stats"})  # run on this process's event loop


def _portable(error: BaseException) -> BaseException:
    """An exception the other process can unpickle and show a client: a GlmvError as it is; anything else is
    logged here and crosses as a bare RuntimeError (its text stays in this log, as in one process)."""
    if isinstance(error, GlmvError):
        return error
    log.error("engine process error", exc_info=error)
    return RuntimeError(f"{type(error).__name__} in the engine process")
