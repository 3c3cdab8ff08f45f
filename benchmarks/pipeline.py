"""One attribution shard end to end on synthetic ImageNet-size data: where does the time go?

Builds an image shard of N random 224² images with random box masks, explains them with a random-weight
torchvision VGG-16 (all Table 1 analyzers of the ImageNet study, one forward pass per batch) with the
pipeline's own job code (`lrp.pipeline.attribution.attribute_shard`: it also computes μ's sums of every map on the
device), writes the attribution shards, then runs the metrics as the pipeline does: `lrp.pipeline.evaluation.metrics`,
one single-threaded process per analyzer, `--metric-jobs` at once (Snakemake's `--cores`). Times each phase; the
overhead counts everything but the attribution itself and the writer's own (overlapping) time. Goal (issue:
full scale): the I/O and metrics around the attributions cost ≤ 20 % of the attribution time on one H100.

    python benchmarks/pipeline.py --device cuda --n 512 --batch 64 --json out.json
    python benchmarks/pipeline.py --device cpu --n 8 --batch 4          # smoke run
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.attribution import device_name as cpu_or_gpu_name  # noqa: E402
from lrp.allocator import retain_freed_memory  # noqa: E402
from lrp.kernels import resolve  # noqa: E402
from lrp.models.base import ModelBundle  # noqa: E402
from lrp.models.zoo import TORCHVISION_PREPROCESSING  # noqa: E402
from lrp.pipeline.attribution import attribute_shard  # noqa: E402
from lrp.pipeline.evaluation import metrics  # noqa: E402

ANALYZERS = ["lrp_cmp_alpha2_flat", "lrp_cmp_alpha2", "lrp_cmp_alpha1", "lrp_cmp_alpha1_flat", "lrp_alpha2",
             "lrp_alpha1", "lrp_z", "lrp_cam", "guided_backprop", "pattern_attribution", "gradient"]


def synthetic_shard(path: Path, n: int, size: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
                         chunks=(1, size, size, 3), compression="lzf")
        f["image_row"] = np.arange(n, dtype=np.int32)
        f["image_size"] = np.full((n, 2), size, dtype=np.int32)  # as if the originals were the input size
        masks = np.zeros((n, size, size), bool)
        for i in range(n):
            x0, y0 = rng.integers(0, size // 2, 2)
            w, h = rng.integers(8, size // 2, 2)
            masks[i, y0:y0 + h, x0:x0 + w] = True
        f.create_dataset("masks", data=masks, chunks=(1, size, size), compression="lzf")
        f.create_dataset("sample_id", data=np.array([f"s{i}" for i in range(n)], dtype=object),
                         dtype=h5py.string_dtype("utf-8"))
        f["class_index"] = rng.integers(0, 1000, n)
        f["box_fraction"] = masks.reshape(n, -1).mean(1)
        f.attrs.update(shard=0, n_shards=1, transform="imagenet", size=size)


def _metrics_worker() -> None:
    """What `lrp.pipeline.runner` sets up in a metrics job: one thread (the rule's default),
    glibc keeping freed memory."""
    torch.set_num_threads(1)
    retain_freed_memory()


def _wait_for_all(barrier) -> None:
    barrier.wait(timeout=300)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--n", type=int, default=512)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--precision", default="float16", choices=["float16", "float32"])
    p.add_argument("--json", default=None)
    p.add_argument("--io-threads", type=int, default=None,
                   help="threads compressing the shards' chunks (default: torch's thread count, as in a pipeline job)")
    p.add_argument("--metric-jobs", type=int, default=None,
                   help="metrics jobs run at once, one process per analyzer with 1 thread, as `snakemake --cores k` "
                        "runs the metrics rule (default: min(analyzers, CPUs this process may use))")
    p.add_argument("--malloc", choices=["retain", "default"], default="retain",
                   help="retain: glibc keeps freed memory for reuse, as every pipeline job does (lrp.allocator)")
    kinds = p.add_mutually_exclusive_group()
    kinds.add_argument("--fused", dest="kernels", action="store_const", const=True,
                       help="fused elementwise kernels on any device (attribution.fused: true)")
    kinds.add_argument("--eager", dest="kernels", action="store_const", const=False,
                       help="eager elementwise steps (attribution.fused: false). Default: auto, fused on CUDA only")
    a = p.parse_args(argv)
    malloc = retain_freed_memory() if a.malloc == "retain" else "glibc defaults"
    dev = torch.device(a.device)
    fused = resolve(a.kernels, dev)
    torch.manual_seed(0)
    module = torchvision.models.vgg16(weights=None).eval().requires_grad_(False).to(dev)
    bundle = ModelBundle(module, TORCHVISION_PREPROCESSING, 224, [str(i) for i in range(1000)], "vgg16-random")
    patterns = {n: torch.rand_like(m.weight) for n, m in module.named_modules() if hasattr(m, "weight")}
    opts = {name: ({"patterns": patterns} if name == "pattern_attribution" else {}) for name in ANALYZERS}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        synthetic_shard(tmp / "images.h5", a.n, a.size)
        outs = {name: tmp / name / "0.h5" for name in ANALYZERS}
        # Warm-up batch (cuDNN autotuning, allocator) outside the timings.
        synthetic_shard(tmp / "warm.h5", min(a.batch, a.n), a.size)
        attribute_shard(bundle, dev, tmp / "warm.h5", opts, {k: tmp / "warm" / f"{k}.h5" for k in opts}, a.batch,
                        a.precision, False, {}, io_threads=a.io_threads, fused=fused)
        timings: dict = {}
        t0 = time.perf_counter()
        attribute_shard(bundle, dev, tmp / "images.h5", opts, outs, a.batch, a.precision, False, {}, timings,
                        io_threads=a.io_threads, fused=fused)
        timings["total_attribute_job"] = time.perf_counter() - t0
        jobs = a.metric_jobs or min(len(outs), len(os.sched_getaffinity(0)))
        spawn = multiprocessing.get_context("spawn")
        tic = time.perf_counter()
        with spawn.Manager() as manager, ProcessPoolExecutor(jobs, mp_context=spawn,
                                                             initializer=_metrics_worker) as pool:
            # Start every worker first (Python + torch import): a job's start-up, paid once per (dataset,
            # analyzer) job in the pipeline, not per shard. Each warm-up task waits for all the others, so
            # each worker runs exactly one.
            barrier = manager.Barrier(jobs)
            list(pool.map(_wait_for_all, [barrier] * jobs))
            timings["metrics_startup"] = time.perf_counter() - tic
            tic = time.perf_counter()
            done = [pool.submit(metrics, name, [tmp / "images.h5"], [path], tmp / "metrics" / f"{name}.csv")
                    for name, path in outs.items()]
            for f in done:
                f.result()
            timings["metrics"] = time.perf_counter() - tic
    overhead = sum(timings[k] for k in ("load_wait", "h2d", "sums", "d2h", "write_wait", "metrics"))
    device_name = cpu_or_gpu_name(dev)
    io_threads = a.io_threads or torch.get_num_threads()
    res = {"device": device_name, "n": a.n, "io_threads": io_threads, "metric_jobs": jobs, "batch": a.batch,
           "size": a.size, "analyzers": len(ANALYZERS), "fused": fused,
           "precision": a.precision, "torch": torch.__version__, "malloc": malloc, "timings_s": timings,
           "images_per_s": a.n / timings["attribute"],
           "overhead_fraction_of_attribution": overhead / timings["attribute"]}
    print(f"device {device_name}; {a.n} images, batch {a.batch}, {len(ANALYZERS)} analyzers, {a.precision} shards, "
          f"{io_threads} compression threads, {jobs} metrics jobs at once; {malloc}")
    for k, v in timings.items():
        note = {"writer_busy": "  (background thread: overlaps the rest; not part of the overhead)",
                "metrics_startup": "  (starting the metrics processes: once per analyzer job in the pipeline; "
                                   "not counted)",
                }.get(k, "")
        print(f"  {k:22s} {v:8.3f} s  ({v / timings['attribute'] * 100:5.1f} % of attribution){note}")
    print(f"  throughput: {res['images_per_s']:.1f} images/s (all analyzers); overhead = "
          f"{res['overhead_fraction_of_attribution'] * 100:.1f} % of attribution time (goal ≤ 20 %)")
    if timings["writer_busy"] > 0:
        res["writer_images_per_s"] = a.n / timings["writer_busy"]
        print(f"  the shard writer alone sustains {res['writer_images_per_s']:.1f} images/s "
              f"({res['writer_images_per_s'] / res['images_per_s']:.1f}× the attribution rate; "
              "below 1× it limits the job)")
    print(f"  => 50,000 images: {50000 / res['images_per_s'] / 60:.1f} min of attribution")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
