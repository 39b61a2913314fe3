"""Process groups for glmv's distributed code: joined from torchrun's environment, or started locally.

`init_from_env()` is what a script launched with `torchrun --nproc-per-node N` calls; `spawn(fn, n, *args)` starts
`n` local processes that each join one group and run `fn(rank, world_size, *args)` (the multi-process tests do this
with the gloo backend on CPU).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh


def default_backend(device_type: str) -> str:
    return "nccl" if device_type == "cuda" else "gloo"


def init_from_env(device_type: str = "cpu", mesh_dim_name: str = "world") -> DeviceMesh:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) and return the
    1-D mesh over all ranks. On CUDA each rank takes the GPU of its LOCAL_RANK."""
    if device_type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    if not dist.is_initialized():
        dist.init_process_group(default_backend(device_type))
    return init_device_mesh(device_type, (dist.get_world_size(),), mesh_dim_names=(mesh_dim_name,))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, world_size: int, port: int, threads: int, fn: Callable, args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        fn(rank, world_size, *args)
    finally:
        dist.destroy_process_group()


def spawn(fn: Callable, world_size: int, *args, threads: int = 1) -> None:
    """Run `fn(rank, world_size, *args)` in `world_size` fresh processes joined in one gloo group (CPU). `fn` must
    be importable by name (a module-level function of an installed module). An exception in any process is
    raised here."""
    mp.start_processes(_entry, args=(world_size, free_port(), threads, fn, args), nprocs=world_size, join=True,
                       start_method="spawn")
