"""Read safetensors files tensor by tensor straight into existing memory.

Parsing the header ourselves lets the loader validate the whole file up front (truncation, bad JSON, overlapping
or out-of-range offsets) and then `readinto` each tensor's bytes directly into the parameter that will hold it:
no mmap pages, no second copy of the model in memory.
"""

from __future__ import annotations

import json
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from glmv.errors import CheckpointError

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
MAX_HEADER = 100 * 1024 * 1024  # the format's own limit


@dataclass
class TensorEntry:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int  # absolute file offset of the first byte
    nbytes: int


def read_header(path: Path) -> list[TensorEntry]:
    """Validate a safetensors file's header against its size; entries sorted by offset."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise CheckpointError(f"{path}: not a safetensors file (only {len(raw)} bytes); re-download or re-save it")
        (n,) = struct.unpack("<Q", raw)
        if n > MAX_HEADER or 8 + n > size:
            raise CheckpointError(f"{path}: corrupt or truncated safetensors header (declares {n} bytes, file has {size})")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{path}: corrupt safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (not a JSON object)")
    header.pop("__metadata__", None)
    base, entries = 8 + n, []
    for name, info in header.items():
        if isinstance(info, dict) and isinstance(info.get("dtype"), str) and info["dtype"] not in DTYPES:
            raise CheckpointError(
                f"{path}: tensor {name!r} is stored as {info['dtype']}, which glmv does not read (it reads "
                f"{', '.join(DTYPES)}); re-export the checkpoint in one of those"
            )
        try:
            dtype = DTYPES[info["dtype"]]
            shape = tuple(int(s) for s in info["shape"])
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: tensor {name!r} has a malformed header entry ({e!r})") from None
        numel = 1
        for s in shape:
            numel *= s
        if end - begin != numel * dtype.itemsize or begin < 0:
            raise CheckpointError(f"{path}: tensor {name!r} has {end - begin} bytes, expected {numel * dtype.itemsize}")
        if base + end > size:
            raise CheckpointError(
                f"{path}: file is truncated ({size} bytes, tensor {name!r} ends at {base + end}); re-download it"
            )
        entries.append(TensorEntry(name, dtype, shape, base + begin, end - begin))
    entries.sort(key=lambda e: e.start)
    return entries


def read_into(f, entry: TensorEntry, out: torch.Tensor) -> None:
    """Fill `out` (any dtype/device, shaped like the entry) with the entry's values from the open file `f`."""
    f.seek(entry.start)
    direct = out.device.type == "cpu" and out.dtype == entry.dtype and out.is_contiguous()
    buf = out if direct else torch.empty(entry.shape, dtype=entry.dtype)
    view = memoryview(buf.view(-1).view(torch.uint8).numpy()) if entry.nbytes else memoryview(b"")
    if f.readinto(view) != entry.nbytes:
        raise CheckpointError(f"{f.name}: unexpected end of file while reading {entry.name!r}")
    if not direct:
        out.copy_(buf)


def map_file(path: Path) -> mmap.mmap:
    """A copy-on-write map of the whole file: tensors made from it are file-backed pages, read on first touch and
    evictable under memory pressure (never written back to the file)."""
    with open(path, "rb") as f:
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)


def mapped_tensor(mapped: mmap.mmap, entry: TensorEntry) -> torch.Tensor:
    """The entry's tensor over the file map, no copy (the tensor keeps the map alive)."""
    if not entry.nbytes:
        return torch.empty(entry.shape, dtype=entry.dtype)
    return torch.frombuffer(mapped, dtype=entry.dtype, count=entry.nbytes // entry.dtype.itemsize,
                            offset=entry.start).view(entry.shape)
