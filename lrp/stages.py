"""One function per pipeline stage: what a Snakemake rule's thin script calls.

Each takes file paths and plain parameters, composes the library's building blocks, reports progress on
stderr (the rule's log) and writes its outputs atomically. Keeping the glue here, not in the scripts,
makes every stage importable and testable without Snakemake.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import __version__
from .models.base import pick_device


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


RESIZE = {"voc": "warp", "imagenet": "imagenet"}
"""Image (and box) transform per dataset format, as in the paper: PVOC images are rescaled to the input
without cropping; ImageNet's shorter side goes to the input size, then a centre crop. The index builds
its boxes with the same transform, so the two can never disagree."""


def _write_json(obj, path) -> None:
    from .io import atomic_path

    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)


# ---------------------------------------------------------------------------------------------------
# Data


def _archive_limits(cfg: dict) -> dict:
    """`datasets.<name>.limits` as keywords of lrp.acquire's extraction (unset: the module's defaults)."""
    limits = cfg.get("limits") or {}
    names = {"archive_bytes": "max_bytes", "archive_members": "max_members"}
    return {kw: limits[key] for key, kw in names.items() if key in limits}


def data(name: str, cfg: dict, out_json):
    """Make a dataset's annotations available and record where they are (data.json). VOC and the demo keep
    their images beside the annotations; ImageNet's images are the `images` stage's business, except for
    Kaggle's box CSV, which has no image sizes, so that indexing it needs the images here already."""
    source = cfg.get("source", "local")
    if source == "demo":
        from .datasets.demo import generate_demo

        root = Path(out_json).parent / "VOCdevkit" / "DEMO"
        d = cfg.get("demo", {})
        log(f"generating the demo data set in {root}")
        summary = generate_demo(root, n_train=d.get("n_train", 2000), n_test=d.get("n_test", 600),
                                image_size=cfg["input_size"], seed=d.get("seed", 0),
                                max_objects=d.get("max_objects", 4))
        info = {"root": str(root), "annotations": str(root), "images": str(root / "JPEGImages"), "demo": summary}
    elif cfg["format"] == "voc":
        from .acquire import prepare_voc

        root = prepare_voc(cfg.get("root"), download=source == "download", key=f"datasets.{name}.root",
                           **_archive_limits(cfg))
        info = {"root": str(root), "annotations": str(root), "images": str(Path(root) / "JPEGImages")}
    else:
        from .acquire import is_box_csv, prepare_imagenet_boxes

        boxes = prepare_imagenet_boxes(cfg.get("boxes"), key=f"datasets.{name}",
                                       work_dir=Path(out_json).parent / "raw", **_archive_limits(cfg))
        info = {"annotations": str(boxes)}
        if is_box_csv(boxes):
            info["images"] = str(_imagenet_images(name, cfg, out_json))
    _write_json(info, out_json)
    log(f"data {name}: {info}")


def _imagenet_images(name: str, cfg: dict, out_json) -> Path:
    from .acquire import prepare_imagenet_images

    return prepare_imagenet_images(cfg.get("images"), key=f"datasets.{name}",
                                   work_dir=Path(out_json).parent / "raw", **_archive_limits(cfg))


def images(name: str, cfg: dict, data_json, out_json):
    """Make a dataset's images available and record where they are (images.json): what the image shards
    read. Kept apart from `data` so that the index and the Baseline row need only the annotation files."""
    info = json.loads(Path(data_json).read_text())
    folder = info.get("images") or _imagenet_images(name, cfg, out_json)
    _write_json({"images": str(folder)}, out_json)
    log(f"images {name}: {folder}")


def class_list(name_or_list) -> list[str]:
    """Class names of a dataset config: 'voc', 'demo', 'imagenet' or an explicit list."""
    if isinstance(name_or_list, list):
        return name_or_list
    if name_or_list == "voc":
        from .datasets.voc import VOC_CLASSES
        return list(VOC_CLASSES)
    if name_or_list == "demo":
        from .datasets.demo import DEMO_CLASSES
        return list(DEMO_CLASSES)
    if name_or_list == "imagenet":
        from .datasets.imagenet import wnid_index
        return list(wnid_index())
    raise ValueError(f"unknown class list {name_or_list!r}")


def index(data_json, cfg: dict, out_csv, report_json, key: str = "datasets.<name>"):
    """The evaluation units of a dataset, from annotation files alone. With `cfg["pattern_images"]` (the
    patterns' index, ImageNet format): the training JPEGs of that folder; `key` names it in errors."""
    from .datasets.index import write_index

    info = json.loads(Path(data_json).read_text())
    size, on_error = cfg["input_size"], cfg.get("on_error", "raise")
    if cfg.get("pattern_images"):  # ImageNet patterns: a plain folder of training JPEGs, no annotations
        from .datasets.index import index_image_folder

        if not Path(cfg["pattern_images"]).is_dir():
            raise FileNotFoundError(f"{key}.patterns.images: {cfg['pattern_images']!r} is not a folder of "
                                    f"training JPEGs")
        df, report = index_image_folder(cfg["pattern_images"], size=size, limit=cfg.get("max_samples"))
    elif cfg["format"] == "voc":
        from .datasets.voc import index_voc
        df, report = index_voc(info["annotations"], cfg["splits"], classes=class_list(cfg.get("classes", "voc")),
                               size=size, on_error=on_error)
    else:
        from .datasets.imagenet import index_imagenet
        df, report = index_imagenet(info["annotations"], size=size, on_error=on_error, image_dir=info.get("images"))
    if cfg.get("max_samples"):
        df = df.iloc[: cfg["max_samples"]]
        report = {**report, "truncated_to": cfg["max_samples"]}
    write_index(df, out_csv)
    _write_json({**report, "n_samples": len(df)}, report_json)
    log(f"index: {len(df)} evaluation units -> {out_csv}")


def baseline(index_csv, out_csv):
    from .datasets.index import baseline_stats, read_index, write_baseline

    write_baseline(baseline_stats(read_index(index_csv)), out_csv)


def image_shard(data_json, index_csv, cfg: dict, shard: int, n_shards: int, out_h5, workers: int):
    from .datasets.index import read_index
    from .preprocess import write_image_shard

    info = json.loads(Path(data_json).read_text())
    image_dir = cfg.get("pattern_images") or info.get("images")  # the patterns' training JPEGs, or the data's
    if image_dir is None:
        raise ValueError(f"{data_json}: records no image folder; the image shards need the images")
    pixels = (cfg.get("limits") or {}).get("image_pixels")
    write_image_shard(read_index(index_csv), shard, n_shards, image_dir, transform=RESIZE[cfg["format"]],
                      size=cfg["input_size"], out_path=out_h5, workers=workers,
                      **({"max_pixels": pixels} if pixels else {}))


# ---------------------------------------------------------------------------------------------------
# Models


def train_model(data_json, spec: dict, out_model, card_json, threads: int):
    """Train a model the config trains itself, by `spec["recipe"]`; record its training and test accuracy.

    demo_vgg (default): the demo VGG on the dataset's own train split. finetune_alexnet: the PVOC model,
    ImageNet AlexNet fine-tuned multi-label (lrp.models.finetune) on `spec["train_data_json"]`'s images (a
    `training_data` entry) or the dataset's own, scored on the dataset's `eval_split`.
    """
    from .models.checkpoint import save_bundle, write_model_card
    from .models.demo import evaluate_multilabel, train_demo_model

    root = json.loads(Path(data_json).read_text())["root"]
    classes = class_list(spec.get("classes", "demo"))
    recipe = spec.get("recipe", "demo_vgg")
    if recipe == "finetune_alexnet":
        from .models.finetune import run_finetune

        train_root = json.loads(Path(spec["train_data_json"]).read_text())["root"] \
            if spec.get("train_data_json") else None
        run_finetune(root, classes, {**spec, "train_root": train_root}, out_model, card_json, threads, log=log)
        return
    if recipe != "demo_vgg":
        raise ValueError(f"models.{spec.get('name', '?')}.train.recipe: unknown recipe {recipe!r} "
                         f"(demo_vgg, finetune_alexnet)")
    bundle, history = train_demo_model(root, classes, split="train", epochs=spec.get("epochs", 10),
                                       batch_size=spec.get("batch_size", 64), lr=spec.get("lr", 2e-3),
                                       seed=spec.get("seed", 0), image_size=spec["input_size"], threads=threads,
                                       log=log)
    checksum = save_bundle(bundle, out_model)
    test = evaluate_multilabel(bundle, root, classes, "test")
    log(f"trained model: test mAP {test['mAP']:.3f}")
    write_model_card({"name": bundle.name, "checksum": checksum, "history": history, "metrics": {"test": test},
                      "lrp_version": __version__}, card_json)


def load_model(spec: dict, device):
    from .models.zoo import load_model as zoo_load

    bundle = zoo_load(spec)
    bundle.module.to(device)
    return bundle


# ---------------------------------------------------------------------------------------------------
# Occlusion check (Fig. 2) and model card


def occlusion(model_spec: dict, image_shards: list, out_csv, out_logits, batch_size: int, device: str):
    import h5py

    from .io import atomic_path
    from .occlusion import occlusion_logits
    from .preprocess import iter_shard_batches

    dev = pick_device(device)
    bundle = load_model(model_spec, dev)
    rows, all_logits, t0, n = [], [], time.time(), 0
    for path in image_shards:
        for images, masks, cls, ids in iter_shard_batches(path, batch_size):
            x = bundle.preprocessing(torch.from_numpy(images), device=dev)
            full, f, fo, fc = occlusion_logits(bundle.module, x, torch.from_numpy(masks).to(dev),
                                               torch.from_numpy(cls).to(dev))
            frac = masks.reshape(len(masks), -1).mean(1)
            rows.append(pd.DataFrame({"sample_id": ids, "class_index": cls, "box_fraction": frac,
                                      "logit": f.cpu().numpy(), "logit_object_occluded": fo.cpu().numpy(),
                                      "logit_context_occluded": fc.cpu().numpy()}))
            all_logits.append(full.cpu().numpy())
            n += len(ids)
        log(f"occlusion: {n} samples, {n / (time.time() - t0):.1f} samples/s")
    df = pd.concat(rows, ignore_index=True)
    logits = np.concatenate(all_logits)
    from .occlusion import target_rank
    df["target_rank"] = target_rank(logits, df["class_index"].to_numpy())
    with atomic_path(out_csv) as tmp:
        df.to_csv(tmp, index=False)
    with atomic_path(out_logits) as tmp, h5py.File(tmp, "w") as h:
        h["logits"] = logits.astype(np.float32)
        h["sample_id"] = df["sample_id"].to_numpy().astype(object)


def model_card(model_spec: dict, index_csv, occlusion_csv, logits_h5, task: str, thresholds: dict, out_json,
               train_card=None):
    """Accuracy of the explained model on the evaluation units; stop the run if it is far off."""
    import h5py

    from .datasets.index import read_index
    from .models.base import sha256_file

    occ = pd.read_csv(occlusion_csv)
    card = {"model": model_spec.get("arch"), "weights": str(model_spec.get("weights")),
            "checksum": sha256_file(model_spec["weights"]) if model_spec.get("weights") and
            Path(model_spec["weights"]).exists() else None, "n_samples": len(occ), "task": task,
            "lrp_version": __version__}
    if task == "single_label":
        card["top1"] = float((occ["target_rank"] < 1).mean())
        card["top5"] = float((occ["target_rank"] < 5).mean())
    else:
        idx = read_index(index_csv)
        with h5py.File(logits_h5, "r") as h:
            logits, ids = h["logits"][:], h["sample_id"].asstr()[:]
        if len(ids) != len(idx) or not np.array_equal(ids, idx["sample_id"].to_numpy(dtype=str)):
            raise ValueError(f"{logits_h5} and {index_csv} list different samples (or in another order); "
                             "delete both and re-run")
        card.update(_multilabel_map(idx, logits))
    if train_card:
        card["training"] = json.loads(Path(train_card).read_text())
    failures = [f"{k} = {card.get(k)} < required {v}" for k, v in (thresholds or {}).items()
                if card.get(k) is None or card[k] < v]
    card["passed"] = not failures
    _write_json(card, out_json)
    if failures:
        raise SystemExit(f"model card {out_json}: the model is far off its expected accuracy "
                         f"({'; '.join(failures)}). Check the weights and preprocessing before trusting any "
                         f"attribution; thresholds are set under models.<name>.min_accuracy in the config.")
    log(f"model card: {json.dumps({k: v for k, v in card.items() if k != 'training'})}")


def _multilabel_map(idx: pd.DataFrame, logits: np.ndarray) -> dict:
    """mAP over images from sample-level logits: one score vector per image, labels = classes present."""
    from .models.demo import average_precision

    first = ~idx["image_id"].duplicated()
    scores = logits[first.to_numpy()]
    images = idx["image_id"][first].to_numpy()
    labels = np.zeros_like(scores, dtype=bool)
    pos = {img: i for i, img in enumerate(images)}
    labels[idx["image_id"].map(pos).to_numpy(), idx["class_index"].to_numpy()] = True
    aps = [average_precision(scores[:, c], labels[:, c]) for c in range(scores.shape[1]) if labels[:, c].any()]
    # average_precision -> (VOC07 11-point, area). Not the VOC07 *protocol*: the images are those with
    # evaluation units and a class with only difficult boxes counts as present (the study's units include
    # difficult boxes); the protocol number of a trained model is in its training.json (metrics.test).
    return {"mAP": float(np.mean([a[0] for a in aps])),
            "mAP_kind": "11-point AP over the evaluated images, classes with a unit = present (difficult included)",
            "mAP_area": float(np.mean([a[1] for a in aps])), "n_images": int(len(images)),
            "n_classes_evaluated": len(aps)}


# ---------------------------------------------------------------------------------------------------
# Attributions


def patterns(model_spec: dict, image_shards: list, out_h5, batch_size: int, device: str, max_images: int):
    from . import patterns as pat
    from .preprocess import iter_shard_batches

    dev = pick_device(device)
    bundle = load_model(model_spec, dev)

    def batches():
        seen = 0
        for path in image_shards:
            for images, _, _, _ in iter_shard_batches(path, batch_size, unique_images=True):
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
    from . import patterns as pat
    from .composites import get, option_names

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
              deterministic: bool = False, config: dict | None = None, fused: bool | str | None = None):
    """Every configured analyzer on one image shard from one forward pass per batch; one file per analyzer.

    `config` (the settings that made the maps) is stored in every file with the software versions; `fused`
    None or "auto" means fused kernels on CUDA (lrp.kernels.resolve), and the files record what ran."""
    from .kernels import resolve
    from .provenance import stamp

    set_deterministic(deterministic)
    dev = pick_device(device)
    fused = resolve(fused, dev)
    bundle = load_model(model_spec, dev)
    opts = analyzer_options(model_spec, analyzers, patterns_h5, dev)
    attrs = dict(model=model_spec.get("arch", ""), model_checksum=bundle.checksum, lrp_version=__version__,
                 device=str(dev), torch=torch.__version__, tf32=int(tf32), shard=-1 if shard is None else shard,
                 deterministic=int(deterministic), fused=int(fused), **stamp(config or {}))
    attribute_shard(bundle, dev, image_shard_h5, opts, out_paths, batch_size, precision, tf32, attrs,
                    kill_after=_kill_point(shard), fused=fused)


def attribute_shard(bundle, dev, image_shard_h5, opts: dict, out_paths: dict, batch_size: int, precision: str,
                    tf32: bool, attrs: dict, timings: dict | None = None, kill_after: int | None = None,
                    io_threads: int | None = None, fused: bool | str | None = None):
    """The hot loop: prefetched uint8 batches -> device -> attribute_many -> background HDF5 writes.

    The writes run on a background thread, with `io_threads` threads (default: torch's thread count, i.e.
    the job's `threads`) compressing the chunks: a GPU produces maps faster than one thread compresses them.
    `timings` (optional) collects seconds per phase for benchmarks/pipeline.py: waiting for data, host-to-
    device + preprocessing, attribution, the metric sums (`sums`, on the device), encoding the maps on the
    device + device-to-host copies (`d2h`), and waiting for the writer (when its queue is full, and at the
    end); `writer_busy` is the writer thread's own time, which overlaps the rest.
    """
    from concurrent.futures import ThreadPoolExecutor

    from .attribution import attribute_many
    from .loader import BackgroundWriter, prefetch
    from .plugins import source_attrs
    from .preprocess import iter_shard_batches, shard_size
    from .shards import ShardWriter, encode_batch

    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    t = timings if timings is not None else {}
    for k in ("load_wait", "h2d", "attribute", "sums", "d2h", "write_wait", "writer_busy"):
        t.setdefault(k, 0.0)
    n, ids, size = shard_size(image_shard_h5)
    pool = ThreadPoolExecutor(max_workers=max(1, io_threads or torch.get_num_threads()),
                              thread_name_prefix="lrp-compress")
    writers = {}
    bg = None
    t0, done, n_batches = time.time(), 0, 0
    try:
        for name in opts:
            writers[name] = ShardWriter(out_paths[name], n, (size, size), ids, precision=precision, pool=pool,
                                        sums=True, analyzer=name, options={k: v for k, v in opts[name].items()
                                                                if k != "patterns"}, **source_attrs(name), **attrs)
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
            sums = {name: _scored(R, masks, name, out_paths[name], done) for name, R in maps.items()}
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


def _scored(R, masks, name: str, path, first: int) -> dict:
    """μ's sums of one analyzer's batch; a non-finite map is an error naming the analyzer and the shard."""
    from .sums import relevance_sums

    try:
        return relevance_sums(R, masks)
    except ValueError as e:
        raise ValueError(f"{name} -> {path} (samples from {first}): {e}") from None


def _write_batch(writers: dict, encoded: dict, sums: dict) -> None:
    for name, enc in encoded.items():
        writers[name].write_encoded(enc, sums[name])


# ---------------------------------------------------------------------------------------------------
# Evaluation


def metrics(analyzer: str, image_shards: list, attribution_shards: list, out_csv):
    """μ, μ_w and the relevance sums per sample of one analyzer (baseline: analytic, from the masks).

    The sums come from the attribution shards: their jobs computed them from the float32 maps (so μ does not
    depend on `attribution.precision`), and reading them here costs milliseconds, where scoring the stored
    maps took ~18 % of the attribution time on an H100 (benchmarks/README.md).
    """
    import h5py

    from .io import atomic_path
    from .metrics import mu_from_sums, relevance_sums
    from .preprocess import iter_shard_batches, shard_size
    from .shards import read_sums

    ids, sums = [], []
    if analyzer == "baseline":
        for img in image_shards:
            for _, masks, _, mids in iter_shard_batches(img, 256, load_images=False):
                ids.append(mids)
                sums.append(relevance_sums(np.ones(masks.shape, np.float32), masks))
    else:
        if len(image_shards) != len(attribution_shards):
            raise ValueError("image and attribution shards do not pair up")
        for img, att in zip(image_shards, attribution_shards):
            rids, s, size = read_sums(att)
            _, mids, img_size = shard_size(img)
            if list(rids) != list(mids) or size != (img_size, img_size):
                raise ValueError(f"{att} and {img} disagree on sample order or map size")
            with h5py.File(img, "r") as f:  # the masks the sums were taken with are this shard's
                wrong = np.flatnonzero(np.abs(s["s_in"] / s["s_tot"] - f["box_fraction"][:]) > 1e-9)
            if wrong.size:
                raise ValueError(f"{att}: the sums' mask sizes differ from {img}'s box_fraction for samples "
                                 f"{list(mids[wrong[:5]])}: the image shard changed after the attribution")
            ids.append(mids)
            sums.append(s)
    s = {k: np.concatenate([b[k] for b in sums]) if sums else np.zeros(0) for k in ("r_in", "r_tot", "s_in", "s_tot")}
    mu, mu_w = mu_from_sums(**s)
    with np.errstate(invalid="ignore", divide="ignore"):
        df = pd.DataFrame({"sample_id": np.concatenate(ids) if ids else np.zeros(0, str),
                           "box_fraction": s["s_in"] / s["s_tot"], "mu": mu, "mu_w": mu_w,
                           "r_in": s["r_in"], "r_tot": s["r_tot"]})
    with atomic_path(out_csv) as tmp:
        df.to_csv(tmp, index=False)
    log(f"metrics {analyzer}: {len(df)} samples, mean μ {df['mu'].mean():.4f}, NaN {int(df['mu'].isna().sum())}")


def table1(metric_csvs: dict, paper_dataset, out_csv, out_md, out_tex, n_boot: int, seed: int, title: str):
    from .metrics import summarize
    from .table import build_table1, write_table1

    summaries = {}
    n = 0
    for name, path in metric_csvs.items():
        df = pd.read_csv(path)
        n = len(df)
        summaries[name] = summarize(df["mu"].to_numpy(), df["mu_w"].to_numpy(), df["box_fraction"].to_numpy(),
                                    n_boot=n_boot, seed=seed)
    table = build_table1(summaries, paper_dataset, n)
    write_table1(table, out_csv, out_md, out_tex, title)


def fig3(metric_csvs: dict, out_png, out_pdf, title: str, min_count: int = 20):
    from .figures import plot_fig3
    from .metrics import size_curve
    from .table import analyzer_names

    labels = dict(zip(analyzer_names()["analyzer"], analyzer_names()["label"]))
    curves = {}
    baseline = None
    for name, path in metric_csvs.items():
        df = pd.read_csv(path)
        curve = size_curve(df["mu"].to_numpy(), df["box_fraction"].to_numpy())
        if name == "baseline":
            baseline = curve
        else:
            curves[labels.get(name, name)] = curve
    plot_fig3(curves, baseline, out_png, out_pdf, title=title, min_count=min_count)


def fig2(occlusion_csv, out_png, out_pdf, title: str):
    from .figures import plot_fig2

    plot_fig2(pd.read_csv(occlusion_csv), out_png, out_pdf, title=title)


# ---------------------------------------------------------------------------------------------------
# Report: qualitative panels (Fig. 1), the per-dataset summary page, provenance


def panel(model_spec: dict, image_shards: list, analyzers: dict, patterns_h5, sample_ids, n_images: int,
          flat_analyzer: str, device: str, out: dict, title: str):
    """Fig. 1-style panels: every analyzer on a few images, and the flat rule on the first n conv layers."""
    from .panel import select_samples, write_panels
    from .table import analyzer_names

    dev = pick_device(device)
    bundle = load_model(model_spec, dev)
    opts = analyzer_options(model_spec, analyzers, patterns_h5, dev)
    samples = select_samples(image_shards, sample_ids or None, n=n_images)
    log(f"panel: samples {samples.sample_id}")
    labels = dict(zip(analyzer_names()["analyzer"], analyzer_names()["label"]))
    flat_opts = analyzer_options(model_spec, {flat_analyzer: analyzers.get(flat_analyzer, {})}, None, dev)
    write_panels(bundle, samples, opts, dev, out, title=title, labels=labels, flat_analyzer=flat_analyzer,
                 flat_options=flat_opts[flat_analyzer])


def summary(dataset: str, table_csv, baseline_csv, model_card_json, paper_dataset, config: dict, out_html):
    from .provenance import versions
    from .summary import write_summary

    write_summary(dataset, table_csv, baseline_csv, model_card_json, paper_dataset,
                  {"versions": versions(), "config": config}, out_html)


def provenance(files: list, config: dict, out_json, root, plugins=None):
    from .provenance import write_manifest

    doc = write_manifest(files, config, out_json, root=root, plugins=plugins)
    log(f"provenance: {len(doc['files'])} files")
