"""Attribution shards: one HDF5 file per (analyzer, shard) of channel-summed relevance maps.

Schema (documented in docs/shards.md): dataset `relevance` (n, H, W) float16|float32, chunked one sample
per chunk, byte-shuffled and deflate-compressed (HDF5's gzip filter; ISA-L writes the chunks); float16
shards also hold `scale` (n,) float32, a power of two per map (the map is relevance / scale);
`sample_id` (n,) utf-8 aligned with samples.csv; shards of attribution jobs hold the metric sums `r_in`,
`r_tot`, `s_in` and the map scores `point_x`, `point_y`, `rank_in`, `topk_in`, `e_in`, `e_tot` (n,) float64 of
the float32 maps, so that no metric depends on the storage precision;
attributes record what made the maps (analyzer, options, model checksum, lrp version, device, precision)
so a shard can be trusted, or rejected, on its own. Read through `read_shard` / `iter_shard`, which undo
the scale, and `read_sums`.
"""

from __future__ import annotations

import json
import warnings
from concurrent.futures import Executor
from pathlib import Path
from typing import Iterator, NamedTuple

import h5py
import numpy as np
from isal import isal_zlib

from lrp.io import atomic_path

STR = h5py.string_dtype("utf-8")
SUMS = ("r_in", "r_tot", "s_in",  # per-map metric sums an attribution job stores (lrp.evaluation.sums.relevance_sums)
        "point_x", "point_y", "rank_in", "topk_in", "e_in", "e_tot")  # and lrp.evaluation.map_scores.SCORES
SUMS_OF = ("lrp.evaluation.sums.relevance_sums and lrp.evaluation.map_scores.map_scores of the float32 maps before "
           "storage (positive part after the channel sum, float64), with the sample's mask")
GZIP_LEVEL = 4  # the gzip filter's level recorded in the dataset (used if HDF5 itself compresses a chunk)
ISAL_LEVEL = 2  # ISA-L's deflate level for the chunks the writer stores (its default)


def _deflate(shuffled) -> bytes:
    """A zlib stream of one shuffled chunk, by ISA-L (python-isal): what HDF5's gzip filter decodes.

    Why ISA-L: on the H100 machine's host CPU zlib's level 4 managed 192 maps/s per thread, and eight threads
    did not keep up with the GPU (benchmarks/README.md); ISA-L deflates 224² float16 maps ~13× faster, for
    ~9 % more bytes on random-model maps. It releases the GIL, so chunks compress in parallel threads.
    """
    return isal_zlib.compress(shuffled, ISAL_LEVEL)


def encode_chunk(chunk: np.ndarray) -> bytes:
    """One chunk through HDF5's shuffle + deflate filters, in numpy (a reference for `encode_maps`, which
    the writer uses): HDF5 decodes the result as its own."""
    size = chunk.dtype.itemsize
    raw = np.ascontiguousarray(chunk).view(np.uint8)
    shuffled = raw if size == 1 else np.ascontiguousarray(raw.reshape(-1, size).T)
    return _deflate(shuffled)


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


class EncodedMaps(NamedTuple):
    """A batch of maps ready to store: HDF5-shuffled chunk bytes (k, H·W·itemsize) uint8 on the host, the
    maps' (H, W), their float16 scales ((k,) float32, or None for float32 shards), whether every value was
    finite, and the largest |R| (for error messages)."""

    chunks: np.ndarray
    shape: tuple
    scale: np.ndarray | None
    finite: bool
    peak: float


def encode_maps(maps, precision: str = "float16") -> EncodedMaps:
    """Scale, convert and byte-shuffle maps (k, H, W) float32 where they are (numpy, or torch on any device).

    The bytes are those of the numpy path (`power_of_two_scale`, a round-to-nearest-even cast, HDF5's
    shuffle): dividing by a power of two and the cast are exact IEEE operations on every device
    (tests/storage/test_shards.py). See `encode_batch` for why this runs on the GPU in attribution jobs.
    """
    return encode_batch({None: maps}, precision)[None]


def encode_batch(batch: dict, precision: str = "float16") -> dict:
    """`encode_maps` for several analyzers' maps of one batch ({name: (k, H, W)}), one host copy for all.

    Why on the device: done on the host, the per-map passes (scale, cast, shuffle) held the GIL, and an
    H100 job waited for its writer (the writer thread alone managed 116 images/s, the GPU attributed 112).
    On the GPU they take microseconds, float16 bytes cross at half the size, and one pinned copy of the
    whole batch replaces a pageable copy per analyzer.
    """
    import torch

    if precision not in ("float16", "float32"):
        raise ValueError(f"precision must be float16 or float32, got {precision!r}")
    parts = {name: _encode_on_device(_as_tensor(m), precision) for name, m in batch.items()}
    if not parts:
        return {}
    flat = [t.reshape(-1).view(torch.uint8) for shuffled, scale, peak, _ in parts.values()
            for t in ((shuffled, peak) if scale is None else (shuffled, scale, peak))]
    if flat[0].device.type == "cpu":
        host = [t.numpy() for t in flat]
    else:
        joined = torch.cat(flat)
        pinned = torch.empty(joined.shape, dtype=torch.uint8, pin_memory=True)
        pinned.copy_(joined, non_blocking=True)
        torch.cuda.current_stream(joined.device).synchronize()
        host = np.split(pinned.numpy(), np.cumsum([t.numel() for t in flat])[:-1])
    out, it = {}, iter(host)
    for name, (shuffled, scale, _, shape) in parts.items():
        chunks = next(it).reshape(shuffled.shape)
        scale_h = None if scale is None else next(it).view(np.float32)
        peak = next(it).view(np.float32)
        out[name] = EncodedMaps(chunks, shape, scale_h,
                                bool(np.isfinite(peak).all()), float(peak.max()) if peak.size else 0.0)
    return out


def _as_tensor(maps):
    import torch

    if isinstance(maps, np.ndarray):
        with np.errstate(over="ignore"):
            return torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))
    return maps


def _encode_on_device(maps, precision: str):
    """(shuffled bytes (k, H·W·itemsize) uint8, scale (k,) float32 or None, peak |R| (k,) float32), all on
    the maps' device, and the maps' (H, W)."""
    import torch

    maps = maps.detach().float()
    if maps.ndim != 3:
        raise ValueError(f"maps must be (k, H, W), got shape {tuple(maps.shape)}")
    k = maps.shape[0]
    peak = maps.abs().amax((1, 2)) if maps.numel() else maps.new_zeros(k)  # NaN and inf propagate
    scale = None
    if precision == "float16":
        mantissa, exponent = torch.frexp(peak)  # peak = m·2^e, m in [0.5, 1); 2^e > peak unless m = 0.5
        e = exponent.long() - (mantissa == 0.5).long()  # the smallest 2^e ≥ peak: e in [-149, 128]
        # 2^e built from its float64 bits (exact, unlike pow/exp2 on a GPU); float32 2^128 rounds to inf
        scale = ((e + 1023) << 52).view(torch.float64).float()
        scale = torch.where(peak > 0, scale, torch.ones_like(scale))  # all-zero map: 1; beyond 2^127: inf
        maps = (maps / scale[:, None, None]).half()
    hw, size = maps.shape[1] * maps.shape[2], maps.element_size()
    raw = maps.reshape(k, hw).view(torch.uint8)  # little-endian bytes of each value
    shuffled = raw.reshape(k, hw, size).transpose(1, 2).reshape(k, hw * size)  # HDF5's shuffle filter
    if shuffled.data_ptr() == maps.data_ptr() and shuffled.numel():  # 1-pixel maps: a view of the input
        shuffled = shuffled.clone()
    return shuffled, scale, peak, tuple(maps.shape[1:])


class ShardWriter:
    """Write maps batch by batch into a temporary file; `close()` renames it into place.

    Why batch-wise: a shard of VGG-16 maps does not need to sit in memory, and an interrupted job leaves
    only the temporary name behind (never a file that looks complete). `pool` (threads) compresses a
    batch's chunks in parallel (ISA-L deflate); without it they are compressed one after the other.
    """

    def __init__(self, path, n: int, size: tuple[int, int], sample_ids, precision="float16",
                 pool: Executor | None = None, sums: bool = False, **attrs):
        if precision not in ("float16", "float32"):
            raise ValueError(f"precision must be float16 or float32, got {precision!r}")
        self.path = Path(path)
        self.n = n
        self.precision = precision
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
            self._sums = {k: self._f.create_dataset(k, (n,), dtype=np.float64) for k in SUMS} if sums else None
            if sums:
                self._f.attrs["sums_of"] = SUMS_OF
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

    def write(self, maps, sums: dict | None = None) -> None:
        """Append a batch of maps (k, H, W) float32 (numpy, or torch on any device), checked first: right
        shape and count, all finite. `sums`: their `lrp.evaluation.sums.relevance_sums` (a writer made with
        `sums=True` needs them)."""
        self.write_encoded(encode_maps(maps, self.precision), sums)

    def write_encoded(self, enc: EncodedMaps, sums: dict | None = None) -> None:
        """Append a batch that `encode_maps` prepared (on the GPU, in an attribution job): the chunks are
        only compressed (`pool` threads; ISA-L releases the GIL) and stored here."""
        k = enc.chunks.shape[0]
        where = f"{self.path} (samples {self._pos}..{self._pos + k - 1})"
        if enc.shape != self._rel.shape[1:]:
            raise ValueError(f"{where}: maps of shape {enc.shape}, the shard holds {self._rel.shape[1:]}")
        if (enc.scale is None) != (self._scale is None):
            raise ValueError(f"{where}: maps encoded for another precision than the shard's {self.precision}")
        if self._pos + k > self.n:
            raise ValueError(f"{where}: {self._pos + k} maps for a shard of {self.n}")
        if not enc.finite:
            raise ValueError(f"{where}: non-finite relevance (in float32); refusing to store it "
                             "(a bug upstream, not data)")
        if (sums is None) != (self._sums is None):
            raise ValueError(f"{where}: " + ("the shard stores metric sums: pass them" if sums is None
                                             else "metric sums for a shard made without sums=True"))
        if sums is not None:
            bad = [key for key in SUMS if np.shape(sums.get(key)) != (k,)]
            if bad:
                raise ValueError(f"{where}: metric sums {bad} missing or not one per map")
        if enc.scale is not None:
            if not np.isfinite(enc.scale).all():
                raise ValueError(f"{where}: relevance up to {enc.peak:.4g} is beyond what a float16 shard "
                                 "holds (2^127); set attribution.precision: float32")
            self._scale[self._pos:self._pos + k] = enc.scale
        if sums is not None:
            for key, d in self._sums.items():
                d[self._pos:self._pos + k] = sums[key]
        chunks = self._pool.map(_deflate, enc.chunks) if self._pool is not None else map(_deflate, enc.chunks)
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


def read_sums(path) -> tuple[np.ndarray, dict[str, np.ndarray], tuple[int, int]]:
    """(sample_ids, {SUMS..., s_tot}, map size) of one shard: what a metrics job scores."""
    with h5py.File(path, "r") as f:
        missing = [k for k in SUMS if k not in f]
        if missing:
            raise ValueError(f"{path}: no metric sums ({', '.join(missing)}): not written by an attribution job "
                             "of this lrp version; delete it and re-run its attribution")
        h, w = f["relevance"].shape[1:]
        sums = {k: f[k][:] for k in SUMS}
        sums["s_tot"] = np.full(len(sums["r_in"]), float(h * w))
        return f["sample_id"].asstr()[:], sums, (h, w)


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


def _decode(v):
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, str) and v[:1] in "[{":
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            return v
    return v
