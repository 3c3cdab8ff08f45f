"""How many relevance maps per second can an attribution job store? (HDF5 filters vs parallel chunk encoding)

A GPU attribution job hands every batch's maps (one per analyzer and image) to a background writer that
byte-shuffles, deflate-compresses and stores them (`lrp.storage.attributions.ShardWriter`). If the writer is slower than
the GPU, it, not the GPU, sets the job's speed. This times, in one process on the same maps, interleaved, each
up to and including `close()`:
- `hdf5-filters`: the maps assigned to an h5py dataset with gzip + shuffle, float16 by a plain cast (how
  shards were written before `ShardWriter` scaled float16 maps and encoded chunks itself);
- `ShardWriter, T threads`: `write()` of float32 maps: scaled, cast and byte-shuffled (`encode_maps`, torch on
  the CPU), then deflated by ISA-L in T threads (it releases the GIL) and stored with `write_direct_chunk`.
  T = 0: no pool, one chunk after the other on the calling thread.
- `write_encoded, T threads`: the maps encoded beforehand, untimed, as an attribution job does on its GPU:
  the writer thread's share of a GPU job (compress and store).
The maps: every ImageNet-study analyzer on a seeded random-weight VGG-16 at 224², channel-summed. Their
values are far smaller than a trained model's, which flatters a plain float16 cast (mostly subnormals,
which compress well); the JSON records the fraction and the stored bytes per map.

    python benchmarks/shard_writer.py --threads 0 1 2 --json out.json
    python benchmarks/shard_writer.py --quick                 # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lrp  # noqa: E402
from benchmarks.attribution import device_name  # noqa: E402
from benchmarks.pipeline import ANALYZERS  # noqa: E402
from lrp.storage.attributions import GZIP_LEVEL, ISAL_LEVEL, ShardWriter, encode_maps, power_of_two_scale, to_precision  # noqa: E402


def real_maps(n_images: int, size: int) -> dict[str, np.ndarray]:
    """{analyzer: (n_images, size, size) float32} channel-summed maps of a seeded random VGG-16."""
    torch.manual_seed(0)
    model = torchvision.models.vgg16(weights=None).eval().requires_grad_(False)
    patterns = {n: torch.rand_like(m.weight) for n, m in model.named_modules() if hasattr(m, "weight")}
    x = torch.randn(n_images, 3, size, size)
    t = torch.randint(0, 1000, (n_images,))
    opts = {a: ({"patterns": patterns} if a == "pattern_attribution" else {}) for a in ANALYZERS}
    return {a: R.sum(1).numpy() for a, R in lrp.attribute_many(model, x, t, opts).items()}


def batch_of(maps: np.ndarray, batch: int) -> np.ndarray:
    """`batch` maps cycled from the computed ones (each chunk is compressed on its own, so repeats cost the same)."""
    return maps[np.arange(batch) % len(maps)]


def time_hdf5_filters(path: Path, batches: dict, n_batches: int, precision: str) -> float:
    """Timed up to and including `close()`: HDF5 compresses chunks still in its chunk cache only then.
    float32 maps into a float16 dataset: HDF5 converts them (a plain cast)."""
    f = h5py.File(path, "w")
    sets = {a: f.create_dataset(a, (n_batches * len(b), *b.shape[1:]), dtype=precision,
                                chunks=(1, *b.shape[1:]), compression="gzip", compression_opts=GZIP_LEVEL,
                                shuffle=True) for a, b in batches.items()}
    tic = time.perf_counter()
    for i in range(n_batches):
        for a, b in batches.items():
            sets[a][i * len(b):(i + 1) * len(b)] = b
    f.close()
    return time.perf_counter() - tic


def time_shard_writer(directory: Path, batches: dict, n_batches: int, precision: str, threads: int,
                      encoded: bool = False) -> float:
    """`encoded`: the maps are encoded beforehand (`encode_maps`, untimed), as an attribution job does on its
    GPU; what is timed is the writer thread's share, compressing and storing."""
    pool = ThreadPoolExecutor(threads) if threads else None
    try:
        writers = {a: ShardWriter(directory / f"{a}.h5", n_batches * len(b), b.shape[1:],
                                  [str(i) for i in range(n_batches * len(b))], precision=precision, pool=pool)
                   for a, b in batches.items()}
        pre = {a: encode_maps(b, precision) for a, b in batches.items()} if encoded else {}
        tic = time.perf_counter()
        for _ in range(n_batches):
            for a, b in batches.items():
                writers[a].write_encoded(pre[a]) if encoded else writers[a].write(b)
        for w in writers.values():
            w.close()
        return time.perf_counter() - tic
    finally:
        if pool:
            pool.shutdown()


def _hdf5_cast(maps: np.ndarray) -> None:
    """HDF5's own float32 -> float16 conversion: an uncompressed float16 dataset, in memory."""
    with h5py.File("cast.h5", "w", driver="core", backing_store=False) as f:
        f.create_dataset("r", maps.shape, dtype=np.float16)[:] = maps


def conversion_ms_per_map(maps: np.ndarray) -> dict:
    """float32 -> float16 per map: numpy's astype, HDF5's conversion and torch (`to_precision`), raw and
    scaled maps."""
    scaled = maps / power_of_two_scale(maps)[:, None, None]
    out = {}
    for label, x in (("raw", maps), ("scaled", scaled)):
        for how, fn in (("numpy", lambda a: a.astype(np.float16)), ("hdf5", _hdf5_cast),
                        ("torch", lambda a: to_precision(a, np.float16))):
            fn(x)
            tic = time.perf_counter()
            for _ in range(3):
                fn(x)
            out[f"{label}_{how}"] = (time.perf_counter() - tic) / 3 / len(x) * 1e3
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--batch", type=int, default=64, help="images per batch (the GPU batch size)")
    p.add_argument("--batches", type=int, default=3, help="batches per timed run")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--images", type=int, default=4, help="distinct images whose maps are computed")
    p.add_argument("--precision", default="float16", choices=["float16", "float32"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="smoke run: 64², batch 4, 1 batch, 1 repeat")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    if a.quick:
        a.size, a.batch, a.batches, a.repeats, a.images = 64, 4, 1, 1, 2
    print(f"computing {len(ANALYZERS)} analyzers' maps of {a.images} images at {a.size}² ...", flush=True)
    maps = real_maps(a.images, a.size)
    batches = {name: batch_of(m, a.batch) for name, m in maps.items()}
    n_maps = a.batches * a.batch * len(batches)
    every = np.concatenate(list(maps.values()))
    nonzero = np.abs(every[every != 0])
    subnormal = float(np.mean(nonzero < np.finfo(np.float16).tiny)) if nonzero.size else 0.0
    rows, sizes = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        contenders = ([("hdf5-filters", None, False)] + [(f"ShardWriter, {t} threads", t, False) for t in a.threads]
                      + [(f"write_encoded, {t} threads", t, True) for t in a.threads])
        for r in range(a.repeats):  # interleaved, so drift on a shared machine hits every contender alike
            for label, threads, encoded in contenders:
                d = Path(tmp) / f"{r}-{threads}-{encoded}"
                d.mkdir()
                sec = (time_hdf5_filters(d / "ref.h5", batches, a.batches, a.precision) if threads is None
                       else time_shard_writer(d, batches, a.batches, a.precision, threads, encoded))
                rows.setdefault(label, []).append(sec)
                sizes[label] = sum(f.stat().st_size for f in d.iterdir()) / n_maps
    res = {"cpu": device_name(torch.device("cpu")), "cpus": os.cpu_count(), "size": a.size, "batch": a.batch,
           "analyzers": len(batches), "precision": a.precision, "maps_per_run": n_maps, "gzip_level": GZIP_LEVEL,
           "isal_level": ISAL_LEVEL,
           "seconds": rows, "maps_per_s": {k: n_maps / float(np.median(v)) for k, v in rows.items()},
           "bytes_per_map": sizes, "fraction_nonzero_below_float16_normal": subnormal,
           "float16_conversion_ms_per_map": conversion_ms_per_map(every)}
    print(f"{res['cpu']} ({res['cpus']} CPUs); {n_maps} maps of {a.size}² per run ({a.batches} batches × "
          f"{a.batch} images × {len(batches)} analyzers), {a.precision}, shuffle + deflate (hdf5-filters: zlib "
          f"level {GZIP_LEVEL}; ShardWriter: ISA-L level {ISAL_LEVEL}), "
          f"median of {a.repeats}")
    base = res["maps_per_s"]["hdf5-filters"]
    print(f"maps' nonzero values below float16's smallest normal (6.1e-5): {subnormal:.0%}")
    print(f"{'writer':26s} {'maps/s':>8s} {'images/s':>9s} {'vs hdf5':>8s} {'KiB/map':>8s}")
    for k, v in res["maps_per_s"].items():
        print(f"{k:26s} {v:8.0f} {v / len(batches):9.1f} {v / base:7.2f}x {sizes[k] / 1024:8.1f}")
    print("float32 -> float16, ms per map: " + ", ".join(
        f"{k} {v:.3f}" for k, v in res["float16_conversion_ms_per_map"].items()))
    print("images/s = maps/s / analyzers: the attribution rate (all analyzers) the writer can keep up with")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
