"""Attribution shards: one HDF5 file per (analyzer, shard) of channel-summed relevance maps.

Schema (documented in docs/shards.md): dataset `relevance` (n, H, W) float16|float32, chunked one sample
per chunk and gzip-compressed; `sample_id` (n,) utf-8 aligned with samples.csv; attributes record what
made the maps (analyzer, options, model checksum, lrp version, device, precision) so a shard can be
trusted, or rejected, on its own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from .io import atomic_path

STR = h5py.string_dtype("utf-8")


class ShardWriter:
    """Write maps batch by batch into a temporary file; `close()` renames it into place.

    Why batch-wise: a shard of VGG-16 maps does not need to sit in memory, and an interrupted job leaves
    only the temporary name behind (never a file that looks complete).
    """

    def __init__(self, path, n: int, size: tuple[int, int], sample_ids, precision="float16", **attrs):
        if precision not in ("float16", "float32"):
            raise ValueError(f"precision must be float16 or float32, got {precision!r}")
        self._ctx = atomic_path(path)
        self._tmp = self._ctx.__enter__()
        self._f = h5py.File(self._tmp, "w")
        self._rel = self._f.create_dataset("relevance", (n, *size), dtype=precision, chunks=(1, *size),
                                           compression="gzip", compression_opts=4, shuffle=True)
        self._f.create_dataset("sample_id", data=np.asarray(sample_ids, dtype=object), dtype=STR)
        for k, v in attrs.items():
            if isinstance(v, str):
                v = str(v)  # numpy str_ is a str that h5py cannot store
            elif not isinstance(v, (int, float)):
                v = json.dumps(v)
            self._f.attrs[k] = v
        self._f.attrs["precision"] = precision
        self._pos = 0
        self.n = n

    def write(self, maps: np.ndarray) -> None:
        if not np.isfinite(maps).all():
            raise ValueError("non-finite relevance: refusing to store it (a bug upstream, not data)")
        k = maps.shape[0]
        self._rel[self._pos:self._pos + k] = maps
        self._pos += k

    def close(self) -> None:
        if self._pos != self.n:
            raise RuntimeError(f"shard incomplete: {self._pos} of {self.n} maps written")
        self._f.close()
        self._ctx.__exit__(None, None, None)

    def abort(self) -> None:
        self._f.close()
        self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)


def read_attrs(path) -> dict:
    with h5py.File(path, "r") as f:
        return {k: _decode(v) for k, v in f.attrs.items()}


def read_shard(path) -> tuple[np.ndarray, np.ndarray]:
    """(sample_ids, relevance (n, H, W) float32) of one shard."""
    with h5py.File(path, "r") as f:
        return f["sample_id"].asstr()[:], f["relevance"][:].astype(np.float32)


def iter_shard(path, batch_size: int = 256) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Stream (sample_ids, relevance) batches of one shard without loading it whole."""
    with h5py.File(path, "r") as f:
        ids, rel = f["sample_id"], f["relevance"]
        for i in range(0, rel.shape[0], batch_size):
            yield ids.asstr()[i:i + batch_size], rel[i:i + batch_size].astype(np.float32)


def iter_analyzer(directory: str | Path, batch_size: int = 256):
    """All shards of one analyzer (`results/<dataset>/attributions/<analyzer>/*.h5`) in shard order."""
    for path in sorted(Path(directory).glob("*.h5"), key=lambda p: int(p.stem) if p.stem.isdigit() else p.stem):
        yield from iter_shard(path, batch_size)


def _decode(v):
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, str) and v[:1] in "[{":
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            return v
    return v
