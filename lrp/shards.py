"""Attribution shards: one HDF5 file per (analyzer, shard) of channel-summed relevance maps.

Schema (documented in docs/shards.md): dataset `relevance` (n, H, W) float16|float32, chunked one sample
per chunk, byte-shuffled and gzip-compressed (level 4); float16 shards also hold `scale` (n,) float32, a
power of two per map (the map is relevance / scale); `sample_id` (n,) utf-8 aligned with samples.csv;
attributes record what made the maps (analyzer, options, model checksum, lrp version, device, precision)
so a shard can be trusted, or rejected, on its own. Read through `read_shard` / `iter_shard`, which undo
the scale.
"""

from __future__ import annotations

import json
import warnings
import zlib
from concurrent.futures import Executor
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from .io import atomic_path

STR = h5py.string_dtype("utf-8")
GZIP_LEVEL = 4


def encode_chunk(chunk: np.ndarray) -> bytes:
    """One chunk through HDF5's shuffle + deflate filters, done by hand (HDF5 decodes it as its own).

    Why by hand: HDF5 runs its filters under h5py's global lock, one chunk at a time; zlib releases the
    GIL, so chunks encoded here compress in parallel threads, as fast as a GPU produces maps.
    """
    size = chunk.dtype.itemsize
    raw = np.ascontiguousarray(chunk).view(np.uint8)
    shuffled = raw if size == 1 else np.ascontiguousarray(raw.reshape(-1, size).T)
    return zlib.compress(shuffled, GZIP_LEVEL)


def to_precision(maps: np.ndarray, dtype) -> np.ndarray:
    """`maps` as `dtype`; float32 <-> float16 through torch, with the same bits as numpy's `astype` (round
    to nearest even). numpy and HDF5 convert values in float16's subnormal range in software: 2.9 and 3.2 ms
    per 224² map against torch's 0.006 ms (benchmarks/shard_writer.py)."""
    dtype = np.dtype(dtype)
    if maps.dtype == dtype:
        return maps
    if {maps.dtype, dtype} == {np.dtype(np.float16), np.dtype(np.float32)}:
        import torch

        with warnings.catch_warnings():  # a read-only array is only read here
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            t = torch.from_numpy(np.ascontiguousarray(maps))
        return t.to(getattr(torch, dtype.name)).numpy()
    with np.errstate(over="ignore"):
        return maps.astype(dtype)


def power_of_two_scale(maps: np.ndarray) -> np.ndarray:
    """Per map (k, H, W) -> (k,) float32: the smallest power of two ≥ max |R| (1 for an all-zero map; inf
    for a map beyond 2^127, which a float16 shard refuses).

    Why: relevance maps live far below 1 (VGG-16 spreads a logit over 50,176 pixels), where float16 has
    few or no significant bits left: cast directly, maps of the demo's trained model at 224² magnitudes
    changed per-sample μ_w by up to 0.17 (docs/shards.md). Divided by this scale every map spans [-1, 1],
    float16 keeps 11 significant bits down to 2^-14 of the scale (6e-5 to 1.2e-4 of the map's maximum),
    and dividing and multiplying by a power of two is exact.
    """
    peak = np.abs(maps).max(axis=(1, 2), initial=0.0).astype(np.float64)
    exponent = np.ceil(np.log2(peak, out=np.zeros_like(peak), where=peak > 0))
    with np.errstate(over="ignore"):
        return np.exp2(exponent).astype(np.float32)


class ShardWriter:
    """Write maps batch by batch into a temporary file; `close()` renames it into place.

    Why batch-wise: a shard of VGG-16 maps does not need to sit in memory, and an interrupted job leaves
    only the temporary name behind (never a file that looks complete). `pool` (threads) compresses a
    batch's chunks in parallel (`encode_chunk`); without it they are compressed one after the other.
    """

    def __init__(self, path, n: int, size: tuple[int, int], sample_ids, precision="float16",
                 pool: Executor | None = None, **attrs):
        if precision not in ("float16", "float32"):
            raise ValueError(f"precision must be float16 or float32, got {precision!r}")
        self.path = Path(path)
        self.n = n
        self._pool = pool
        self._pos = 0
        self._finished = False
        self._ctx = atomic_path(path)
        self._tmp = self._ctx.__enter__()
        self._f = None
        try:
            self._f = h5py.File(self._tmp, "w")
            self._rel = self._f.create_dataset("relevance", (n, *size), dtype=precision, chunks=(1, *size),
                                               compression="gzip", compression_opts=GZIP_LEVEL, shuffle=True)
            self._scale = None
            if precision == "float16":
                self._scale = self._f.create_dataset("scale", (n,), dtype=np.float32)
                self._rel.attrs["divided_by"] = "scale"  # for readers that bypass read_shard / iter_shard
            self._f.create_dataset("sample_id", data=np.asarray(sample_ids, dtype=object), dtype=STR)
            for k, v in attrs.items():
                if isinstance(v, str):
                    v = str(v)  # numpy str_ is a str that h5py cannot store
                elif not isinstance(v, (int, float)):
                    v = json.dumps(v)
                self._f.attrs[k] = v
            self._f.attrs["precision"] = precision
        except BaseException:
            self.abort()
            raise

    def write(self, maps: np.ndarray) -> None:
        """Append a batch of maps (k, H, W) float32, checked first: right shape and count, all finite."""
        k = maps.shape[0]
        where = f"{self.path} (samples {self._pos}..{self._pos + k - 1})"
        if maps.shape[1:] != self._rel.shape[1:]:
            raise ValueError(f"{where}: maps of shape {maps.shape[1:]}, the shard holds {self._rel.shape[1:]}")
        if self._pos + k > self.n:
            raise ValueError(f"{where}: {self._pos + k} maps for a shard of {self.n}")
        with np.errstate(over="ignore"):
            maps = np.asarray(maps, dtype=np.float32)
        if not np.isfinite(maps).all():
            raise ValueError(f"{where}: non-finite relevance (in float32); refusing to store it "
                             "(a bug upstream, not data)")
        if self._scale is not None:
            scale = power_of_two_scale(maps)
            if not np.isfinite(scale).all():
                raise ValueError(f"{where}: relevance up to {np.abs(maps).max():.4g} is beyond what a float16 shard "
                                 "holds (2^127); set attribution.precision: float32")
            self._scale[self._pos:self._pos + k] = scale
            maps = to_precision(maps / scale[:, None, None], np.float16)
        chunks = self._pool.map(encode_chunk, maps) if self._pool is not None else map(encode_chunk, maps)
        for i, data in enumerate(chunks):
            self._rel.id.write_direct_chunk((self._pos + i, 0, 0), data)
        self._pos += k

    def close(self) -> None:
        if self._finished:
            raise RuntimeError(f"{self.path}: shard already closed or aborted")
        if self._pos != self.n:
            raise RuntimeError(f"{self.path}: shard incomplete, {self._pos} of {self.n} maps written")
        self._f.close()
        self._ctx.__exit__(None, None, None)
        self._finished = True

    def abort(self) -> None:
        """Drop the temporary file, whatever state the HDF5 file is in (a no-op after `close()`)."""
        if self._finished:
            return
        self._finished = True
        try:
            if self._f is not None:
                self._f.close()
        except Exception:  # e.g. a full disk: closing flushes; the file is dropped anyway
            pass
        finally:
            self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)


def read_attrs(path) -> dict:
    with h5py.File(path, "r") as f:
        return {k: _decode(v) for k, v in f.attrs.items()}


def read_shard(path) -> tuple[np.ndarray, np.ndarray]:
    """(sample_ids, relevance (n, H, W) float32) of one shard."""
    with h5py.File(path, "r") as f:
        return f["sample_id"].asstr()[:], _relevance(f, slice(None))


def iter_shard(path, batch_size: int = 256) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Stream (sample_ids, relevance) batches of one shard without loading it whole."""
    with h5py.File(path, "r") as f:
        ids = f["sample_id"]
        for i in range(0, f["relevance"].shape[0], batch_size):
            yield ids.asstr()[i:i + batch_size], _relevance(f, slice(i, i + batch_size))


def _relevance(f: h5py.File, rows: slice) -> np.ndarray:
    """Stored maps as float32 relevance: float16 maps times their scale (shards without `scale`: 1)."""
    maps = to_precision(f["relevance"][rows], np.float32)
    if "scale" in f:
        maps *= f["scale"][rows][:, None, None]
    return maps


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
