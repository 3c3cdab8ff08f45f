"""Attribution stages (workflow/rules/attribution.smk): PatternAttribution patterns, then every analyzer of
a shard from one forward pass, maps and μ's sums stored in attribution shards."""

from __future__ import annotations

import time

import torch

from lrp import __version__
from lrp.io import log
from lrp.models.base import pick_device
from lrp.models.zoo import load_model


def patterns(model_spec: dict, image_shards: list, out_h5, batch_size: int, device: str, max_images: int):
    from lrp import patterns as pat
    from lrp.storage.images import iter_shard_batches

    dev = pick_device(device)
    bundle = load_model(model_spec, dev)

    def batches():
        seen = 0
        for path in image_shards:
            for images, *_ in iter_shard_batches(path, batch_size, unique_images=True):
                if seen >= max_images:
                    return
                images = images[: max_images - seen]
                seen += len(images)
                yield bundle.preprocessing(torch.from_numpy(images), device=dev)

    pat.save(pat.compute(bundle.module, batches(), log=log), out_h5, model_checksum=bundle.checksum)


def analyzer_options(model_spec: dict, analyzers: dict, patterns_h5, device) -> dict:
    """Per-analyzer options for `attribute_many`: the model's α-β bias convention (`models.<m>.bias`:
    iNNvestigate for the Keras VGG-16, the LRP Toolbox for the PVOC net) for every analyzer that takes a
    bias, unless it sets its own, and the learned patterns for PatternAttribution."""
    from lrp import patterns as pat
    from lrp.composites import get, option_names

    model_bias = {"bias": model_spec["bias"]} if model_spec.get("bias") else {}
    opts = {name: {**{k: v for k, v in model_bias.items() if k in option_names(get(name))}, **dict(o or {})}
            for name, o in analyzers.items()}
    if "pattern_attribution" in opts:
        if not patterns_h5:
            raise ValueError("pattern_attribution is configured but no pattern file was given")
        opts["pattern_attribution"]["patterns"] = pat.load(patterns_h5, device=device)
    return opts


def set_deterministic(flag: bool) -> None:
    """torch.use_deterministic_algorithms for GPU runs (config `attribution.deterministic`).

    CPU runs are bit-identical on re-run without it (tested on the CI config). On CUDA a few kernels
    (e.g. max-pool and scatter backward) have no deterministic variant; they warn (warn_only) rather than
    stop the study, and the warning lands in the job log.
    """
    if flag:
        import os

        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS' condition for determinism
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        log("deterministic algorithms on (torch.use_deterministic_algorithms, warn_only)")


def _kill_point(shard: int | None) -> int | None:
    """Fault injection for the resume test: LRP_TEST_KILL="<shard>:<batches>" makes the job SIGKILL itself
    after that many batches of that shard, as a cluster's OOM killer or a pre-emption would."""
    import os

    spec = os.environ.get("LRP_TEST_KILL")
    if not spec:
        return None
    try:
        kill_shard, batches = (int(v) for v in spec.split(":"))
    except ValueError:
        raise ValueError(f"LRP_TEST_KILL={spec!r}: expected '<shard>:<batches>', e.g. '1:1'") from None
    return batches if kill_shard == shard else None


def attribute(model_spec: dict, image_shard_h5, analyzers: dict, out_paths: dict, batch_size: int, device: str,
              precision: str, patterns_h5=None, tf32: bool = False, shard: int | None = None,
              deterministic: bool = False, config: dict | None = None, fused: bool | str | None = None,
              top_k: int = 1000):
    """Every configured analyzer on one image shard from one forward pass per batch; one file per analyzer.

    `config` (the settings that made the maps) is stored in every file with the software versions; `fused`
    None or "auto" means fused kernels on CUDA (lrp.kernels.resolve), and the files record what ran."""
    from lrp.kernels import resolve
    from lrp.pipeline.provenance import stamp

    set_deterministic(deterministic)
    dev = pick_device(device)
    fused = resolve(fused, dev)
    bundle = load_model(model_spec, dev)
    opts = analyzer_options(model_spec, analyzers, patterns_h5, dev)
    attrs = dict(model=model_spec.get("arch", ""), model_checksum=bundle.checksum, lrp_version=__version__,
                 device=str(dev), torch=torch.__version__, tf32=int(tf32), shard=-1 if shard is None else shard,
                 deterministic=int(deterministic), fused=int(fused), **stamp(config or {}))
    attribute_shard(bundle, dev, image_shard_h5, opts, out_paths, batch_size, precision, tf32, attrs,
                    kill_after=_kill_point(shard), fused=fused, top_k=top_k)


def attribute_shard(bundle, dev, image_shard_h5, opts: dict, out_paths: dict, batch_size: int, precision: str,
                    tf32: bool, attrs: dict, timings: dict | None = None, kill_after: int | None = None,
                    io_threads: int | None = None, fused: bool | str | None = None, top_k: int = 1000):
    """The hot loop: prefetched uint8 batches -> device -> attribute_many -> background HDF5 writes.

    Beside μ's sums each map is scored where it is (`lrp.evaluation.map_scores`: the pointing game's maximum at
    the original resolution, rank accuracy's and top-k's counts with k = `top_k` at 224² scaled by area, the
    energy sums), so that float16 storage cannot change them.

    The writes run on a background thread, with `io_threads` threads (default: torch's thread count, i.e.
    the job's `threads`) compressing the chunks: a GPU produces maps faster than one thread compresses them.
    `timings` (optional) collects seconds per phase for benchmarks/pipeline.py: waiting for data, host-to-
    device + preprocessing, attribution, the metric sums (`sums`, on the device), encoding the maps on the
    device + device-to-host copies (`d2h`), and waiting for the writer (when its queue is full, and at the
    end); `writer_busy` is the writer thread's own time, which overlaps the rest.
    """
    from concurrent.futures import ThreadPoolExecutor

    from lrp.attribution import attribute_many
    from lrp.evaluation.map_scores import top_k_pixels
    from lrp.plugins import source_attrs
    from lrp.storage.attributions import ShardWriter, encode_batch
    from lrp.storage.images import iter_shard_batches, read_shard_attrs, shard_size
    from lrp.storage.loader import BackgroundWriter, prefetch

    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    t = timings if timings is not None else {}
    for k in ("load_wait", "h2d", "attribute", "sums", "d2h", "write_wait", "writer_busy"):
        t.setdefault(k, 0.0)
    n, ids, size = shard_size(image_shard_h5)
    transform, k_px = read_shard_attrs(image_shard_h5)["transform"], top_k_pixels(size, top_k)
    pool = ThreadPoolExecutor(max_workers=max(1, io_threads or torch.get_num_threads()),
                              thread_name_prefix="lrp-compress")
    writers = {}
    bg = None
    t0, done, n_batches = time.time(), 0, 0
    try:
        for name in opts:
            writers[name] = ShardWriter(out_paths[name], n, (size, size), ids, precision=precision, pool=pool,
                                        sums=True, top_k=k_px, analyzer=name,
                                        options={k: v for k, v in opts[name].items() if k != "patterns"},
                                        **source_attrs(name), **attrs)
        bg = BackgroundWriter(depth=2)  # whole batches: one analyzer's maps at a time would stall the loop
        batches = prefetch(iter_shard_batches(image_shard_h5, batch_size), pin=cuda)
        while True:
            tic = time.perf_counter()
            b = next(batches, None)
            t["load_wait"] += time.perf_counter() - tic
            if b is None:
                break
            tic = time.perf_counter()
            x = bundle.preprocessing(torch.as_tensor(b.images), device=dev)
            targets = torch.from_numpy(b.class_index).to(dev, non_blocking=True)
            masks = torch.from_numpy(b.masks).to(dev, non_blocking=True)
            sync()
            t["h2d"] += time.perf_counter() - tic
            tic = time.perf_counter()
            maps = attribute_many(bundle.module, x, targets, opts, tf32=tf32, fused=fused)
            maps = {name: R.sum(1) for name, R in maps.items()}
            sync()
            t["attribute"] += time.perf_counter() - tic
            tic = time.perf_counter()
            # μ's sums from the float32 maps, where they are: the metrics jobs only read them
            regions = _regions(b.source_size, transform, size)
            sums = {name: _scored(R, masks, regions, k_px, name, out_paths[name], done) for name, R in maps.items()}
            t["sums"] += time.perf_counter() - tic
            tic = time.perf_counter()
            # scaled, cast and byte-shuffled on the device, one host copy; the writer only compresses and stores
            host = encode_batch(maps, precision)
            t["d2h"] += time.perf_counter() - tic
            tic = time.perf_counter()
            bg.submit(_write_batch, writers, host, sums)  # blocks while the writer is two batches behind
            t["write_wait"] += time.perf_counter() - tic
            done += len(b.class_index)
            n_batches += 1
            if kill_after is not None and n_batches >= kill_after:
                import os
                import signal

                bg.close()  # part of the shard is on disk, under the temporary name
                log(f"LRP_TEST_KILL: killing this job after {n_batches} batch(es)")
                os.kill(os.getpid(), signal.SIGKILL)
            rate = done / (time.time() - t0)
            mem = f", GPU peak {torch.cuda.max_memory_allocated(dev) / 2**30:.2f} GiB" if cuda else ""
            log(f"attribute: {done}/{n} samples, {rate:.1f} samples/s, ETA {(n - done) / rate:.0f} s{mem}")
        tic = time.perf_counter()
        bg.close()
        t["write_wait"] += time.perf_counter() - tic
        t["writer_busy"] += bg.busy_s
        for w in writers.values():
            w.close()
    except BaseException:
        if bg is not None:
            try:
                bg.close()
            except BaseException:
                pass
        for w in writers.values():
            try:
                w.abort()
            except BaseException:  # keep cleaning up; the error to report is the one that got us here
                pass
        raise
    finally:
        pool.shutdown(wait=True)


def _regions(source_size, transform: str, size: int):
    """(B, 4) (left, top, width, height): where each model input lies in its original image."""
    import numpy as np

    from lrp.datasets.boxes import make_transform

    return np.array([make_transform(transform, int(w), int(h), size).source_region() for w, h in source_size],
                    dtype=np.int64).reshape(-1, 4)


def _scored(R, masks, regions, top_k: int, name: str, path, first: int) -> dict:
    """μ's sums and the map scores of one analyzer's batch; a non-finite map is an error naming the analyzer
    and the shard."""
    from lrp.evaluation.map_scores import map_scores
    from lrp.evaluation.sums import relevance_sums

    try:
        return {**relevance_sums(R, masks), **map_scores(R, masks, regions, top_k)}
    except ValueError as e:
        raise ValueError(f"{name} -> {path} (samples from {first}): {e}") from None


def _write_batch(writers: dict, encoded: dict, sums: dict) -> None:
    for name, enc in encoded.items():
        writers[name].write_encoded(enc, sums[name])
