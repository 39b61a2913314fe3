"""Tensor/expert-parallel serving: one driver process runs glmv's engine unchanged, n - 1 worker processes follow.

vLLM's split, at glmv's model boundary. `load_parallel(path, n)` (called in the driver, e.g. by
`LLM(path, tensor_parallel_size=n)`) starts n - 1 workers, and every process loads the checkpoint and shards it
(glmv.distributed.parallel) over one n-rank mesh. The driver gets back a `ParallelDriver`: a stand-in for the model
that the engine, its model runner, the pooler and the vision cache use like the model. Each call that runs
collectives (the model's forward; lm_head, which the pooler calls for scores) is first broadcast to the workers
(inputs moved to the host and pickled, over a gloo group of its own) and then run by every rank at once, so their
collectives pair up. A forward's paged-KV step travels as its slot tensors: each worker holds a pool shaped as the
driver's (its local kv heads) and writes the same slots. Vision is replicated and runs on the driver alone; its
embeddings travel with the forward. Sampling, scheduling and prefix caching happen on the driver only.

Supported: the "sdpa" attention backend (a "flex" step's block mask is not sent) and float weights. The workers are
daemon processes of the driver: they end with it (or with `ParallelDriver.shutdown()`).
"""

from __future__ import annotations

import atexit
import os
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.device_mesh import init_device_mesh

from glmv.distributed.launch import default_backend, free_port
from glmv.distributed.parallel import parallelize
from glmv.engine.paged_kv import FlexPagedStep, PagedKVCache, PagedStep
from glmv.errors import ConfigError, GlmvError
from glmv.model.cache import KVCache
from glmv.weights import load_model

_POOL, _CALL, _STOP = "pool", "call", "stop"


def _map_tensors(obj, fn):
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_tensors(o, fn) for o in obj)
    if isinstance(obj, dict):
        return {k: _map_tensors(v, fn) for k, v in obj.items()}
    return obj


class ParallelDriver:
    """Rank 0's handle on the sharded model (see the module docstring): calls are sent to the workers, then run;
    attributes are the model's, except `lm_head`, whose calls are sent too."""

    def __init__(self, model, control: dist.ProcessGroup, mesh, workers: list):
        self.__dict__.update(_model=model, _control=control, mesh=mesh, _workers=workers, _pools={}, _closed=False)
        atexit.register(self.shutdown)

    def __getattr__(self, name: str):
        if name == "lm_head":
            return _SentCall(self, "lm_head")
        return getattr(self._model, name)

    def __setattr__(self, name: str, value) -> None:
        setattr(self._model, name, value)

    def __call__(self, *args, **kwargs):
        return self._run("", args, kwargs)

    def _run(self, path: str, args: tuple, kwargs: dict):
        kwargs = dict(kwargs)
        sent = kwargs
        cache = kwargs.get("cache")
        if cache is not None:
            sent = {**kwargs, "cache": self._describe(cache)}
        self._send((_CALL, path, _map_tensors(args, torch.Tensor.cpu), _map_tensors(sent, torch.Tensor.cpu)))
        target = self._model if not path else getattr(self._model, path)
        return target(*args, **kwargs)

    def _describe(self, step) -> tuple:
        """A paged step as the workers rebuild it: (pool id, write [B, q], read, mask)."""
        if isinstance(step, FlexPagedStep):
            raise ConfigError("tensor-parallel serving supports the 'sdpa' attention backend, not 'flex'")
        if not isinstance(step, PagedStep):
            if isinstance(step, KVCache):
                raise ConfigError("tensor-parallel serving mirrors the engine's paged KV cache, not a KVCache")
            raise ConfigError(f"tensor-parallel serving cannot mirror a {type(step).__name__}")
        pool = step.cache
        key = id(pool)
        if key not in self._pools:  # a new pool: the workers allocate theirs first
            self._pools[key] = pool
            k = pool.k[0]
            self._send((_POOL, key, (len(pool.k), pool.num_blocks, pool.block_size, k.shape[1], k.shape[2]), k.dtype))
        rows = step.read.shape[0]
        return ("paged", key, step.write.view(rows, -1).cpu(), step.read.cpu(),
                None if step.mask is None else step.mask.cpu())

    def _send(self, message) -> None:
        dist.broadcast_object_list([message], src=0, group=self._control)

    def shutdown(self) -> None:
        """Stop the workers and leave the process group (also at exit); the model is unusable afterwards."""
        if self._closed or not dist.is_initialized():
            return
        self.__dict__["_closed"] = True
        self._send((_STOP,))
        for p in self._workers:
            p.join(timeout=30)
        dist.destroy_process_group()


class _SentCall:
    def __init__(self, driver: ParallelDriver, path: str):
        self.driver, self.path = driver, path

    def __call__(self, *args, **kwargs):
        return self.driver._run(self.path, args, kwargs)

    def __getattr__(self, name: str):
        return getattr(getattr(self.driver._model, self.path), name)


def follow(model, control: dist.ProcessGroup, device: torch.device) -> None:
    """A worker's loop: run every call the driver sends, on this rank's shards, until it says stop."""
    pools: dict[int, PagedKVCache] = {}
    while True:
        box = [None]
        try:
            dist.broadcast_object_list(box, src=0, group=control)
        except RuntimeError:  # the driver is gone (killed, or exited without shutdown): nothing left to follow
            return
        message = box[0]
        if message[0] == _STOP:
            return
        if message[0] == _POOL:
            _, key, shape, dtype = message
            pools[key] = PagedKVCache(*shape, dtype=dtype, device=device)
            continue
        _, path, args, kwargs = message
        args, kwargs = _map_tensors((args, kwargs), lambda t: t.to(device))
        cache = kwargs.get("cache")
        if cache is not None:
            _, key, write, read, mask = cache
            kwargs["cache"] = PagedStep(pools[key], write, read, mask)
        target = model if not path else getattr(model, path)
        try:
            with torch.inference_mode():
                target(*args, **kwargs)
        except GlmvError:  # bad input fails the driver's identical call at the same point: both go on
            continue


def _rank_device(device_type: str, rank: int) -> torch.device:
    return torch.device("cuda", rank) if device_type == "cuda" else torch.device(device_type)


def _join(rank: int, n: int, port: int, device_type: str):
    """Join the n-rank group; -> (mesh, control group). Every rank runs the same sequence of group creations."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if device_type == "cuda":
        torch.cuda.set_device(rank)
    dist.init_process_group(default_backend(device_type), rank=rank, world_size=n)
    mesh = init_device_mesh(device_type, (n,), mesh_dim_names=("tp",))
    control = dist.new_group(backend="gloo")
    return mesh, control


def _load(path: str, dtype, device: torch.device, mesh, experts: str):
    model = load_model(path, dtype=dtype, device=device, progress=False)
    return parallelize(model, mesh, experts=experts)


def _worker(rank: int, n: int, port: int, path: str, dtype, device_type: str, experts: str, threads: int) -> None:
    torch.set_num_threads(threads)
    mesh, control = _join(rank, n, port, device_type)
    device = _rank_device(device_type, rank)
    try:
        follow(_load(path, dtype, device, mesh, experts), control, device)
    finally:
        dist.destroy_process_group()


def load_parallel(path: str | Path, tensor_parallel_size: int, dtype: torch.dtype | None = None,
                  device: str | torch.device = "cpu", experts: str = "tp",
                  threads: int | None = None) -> ParallelDriver:
    """Start tensor_parallel_size - 1 worker processes, load and shard the checkpoint on every rank (rank r on
    cuda:r, or all on the CPU with gloo), and return the driver's handle. experts: "tp" or "ep" (expert parallel).
    Call it once per process (it creates the default process group)."""
    if tensor_parallel_size < 2:
        raise ConfigError("load_parallel needs tensor_parallel_size >= 2 (use glmv.load_model for one process)")
    if dist.is_initialized():
        raise ConfigError("load_parallel starts its own process group; this process already has one")
    device_type = torch.device(device).type
    if device_type == "cuda" and torch.cuda.device_count() < tensor_parallel_size:
        raise ConfigError(f"tensor_parallel_size {tensor_parallel_size} needs as many GPUs; "
                          f"{torch.cuda.device_count()} are visible")
    n, port = tensor_parallel_size, free_port()
    threads = threads or torch.get_num_threads()
    ctx = mp.get_context("spawn")
    workers = [ctx.Process(target=_worker, args=(r, n, port, str(path), dtype, device_type, experts, threads),
                           daemon=True) for r in range(1, n)]
    for p in workers:
        p.start()
    mesh, control = _join(0, n, port, device_type)
    model = _load(str(path), dtype, _rank_device(device_type, 0), mesh, experts)
    return ParallelDriver(model, control, mesh, workers)
