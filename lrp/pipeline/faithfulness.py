"""Faithfulness stages (workflow/rules/faithfulness.smk): region perturbation of the stored maps per shard,
the faithfulness table with its curves and scatter, and the cascading-randomisation sanity check."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch

from lrp import __version__
from lrp.io import log
from lrp.models.base import pick_device
from lrp.models.zoo import load_model

RANDOM = "random"
"""The random-map baseline: a map of uniform noise per unit (from the unit's seed), perturbed like the others,
so its MoRF and LeRF orders are random orders; a faithful analyzer must beat it."""


def unit_seed(seed: int, sample_id: str) -> int:
    """A unit's own seed (noise fill, random map) from the config seed and its sample id: the same under any
    sharding or unit selection."""
    from lrp.evaluation.perturbation import seed_of

    return seed_of(f"{seed}:{sample_id}")


def select_units(sample_ids, max_units: int | None, seed: int) -> set[str]:
    """The units perturbed: all, or the `max_units` with the smallest unit seeds (a seeded random subset that
    does not depend on how the index is sharded)."""
    ids = [str(s) for s in sample_ids]
    if max_units is None or max_units >= len(ids):
        return set(ids)
    return set(sorted(ids, key=lambda s: (unit_seed(seed, s), s))[:max_units])


def random_maps(seeds, size: int) -> torch.Tensor:
    """The random-map baseline of each unit: uniform noise from the unit's own stream ("random_map"),
    independent of its noise fill ("fill")."""
    from lrp.evaluation.perturbation import derive_seed

    maps = [torch.rand(size, size, generator=torch.Generator().manual_seed(derive_seed(s, "random_map")))
            for s in seeds]
    return torch.stack(maps) if maps else torch.zeros(0, size, size)


def value_range(preprocessing) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (low, high) of a valid input in the model's input space: pixels 0 and 255 preprocessed."""
    mean, std = torch.tensor(preprocessing.mean), torch.tensor(preprocessing.std)
    return (0 - mean) / std, (255 - mean) / std


def perturbation(model_spec: dict, image_shard_h5, attribution_shards: dict, index_csv, settings: dict, out_h5,
                 batch_size: int, device: str):
    """Region perturbation of every analyzer's stored maps (and the random-map baseline) on one image shard's
    selected units; curves per analyzer and order into `out_h5` (lrp.storage.perturbation).

    settings: the `faithfulness` config section (region at 224², steps, fill "mean" | "uniform", orders,
    max_units, seed). Raises ValueError when a map shard does not match the image shard.
    """
    from lrp.datasets.index import read_index
    from lrp.evaluation.perturbation import region_perturbation, region_size
    from lrp.storage.attribution_rows import read_rows
    from lrp.storage.images import iter_shard_batches, shard_size
    from lrp.storage.perturbation import write_perturbation

    dev = pick_device(device)
    bundle = load_model(model_spec, dev)
    bundle.module.eval()
    chosen = select_units(read_index(index_csv)["sample_id"], settings.get("max_units"), settings["seed"])
    n_all, ids_all, size = shard_size(image_shard_h5)
    rows = np.flatnonzero([s in chosen for s in ids_all])
    maps = {}
    for name, path in attribution_shards.items():
        ids, R = read_rows(path, rows)  # only the selected units' maps are decompressed
        if list(ids) != list(ids_all) or R.shape[1:] != (size, size):
            raise ValueError(f"{path}: its samples or map size differ from {image_shard_h5}'s: re-run its "
                             "attribution")
        maps[name] = R
    images, classes, sample_ids = [], [], []
    for b in iter_shard_batches(image_shard_h5, 256):
        sel = np.array([s in chosen for s in b.sample_id], dtype=bool)
        images.append(b.images[sel])
        classes.append(b.class_index[sel])
        sample_ids.append(b.sample_id[sel])
    images = np.concatenate(images) if images else np.zeros((0, size, size, 3), np.uint8)
    classes = np.concatenate(classes) if classes else np.zeros(0, np.int64)
    sample_ids = np.concatenate(sample_ids) if sample_ids else np.zeros(0, str)
    region = region_size(size, settings["region"])
    steps, orders, fill = settings["steps"], list(settings["orders"]), settings["fill"]
    seeds = [unit_seed(settings["seed"], s) for s in sample_ids]
    lo, hi = value_range(bundle.preprocessing)
    names = [*maps, RANDOM]
    curves = {name: {} for name in names}
    n = len(sample_ids)
    chunk = max(1, batch_size // (steps + 1)) * 4  # units per call: a few full forward batches each
    total = n * len(names) * len(orders) * (steps + 1)
    done, t0 = 0, time.time()
    for start in range(0, n, chunk):
        sl = slice(start, start + chunk)
        x = bundle.preprocessing(torch.from_numpy(images[sl]), device=dev)
        t = torch.from_numpy(classes[sl]).to(dev)
        for name in names:
            if name == RANDOM:
                R = random_maps(seeds[sl], size)
            else:
                R = torch.from_numpy(maps[name][sl])
            for order in orders:
                c, _ = region_perturbation(bundle.module, x, t, R.to(dev), region=region, steps=steps, order=order,
                                           fill=0.0 if fill == "mean" else "uniform", seed=seeds[sl],
                                           batch_size=batch_size, value_range=(lo, hi))
                curves[name].setdefault(order, []).append(c.numpy())
                done += c.numel()
        rate = done / (time.time() - t0)
        log(f"perturbation: {min(start + chunk, n)}/{n} units, {rate:.0f} images/s, "
            f"ETA {(total - done) / max(rate, 1e-9):.0f} s")
    out = {name: {o: (np.concatenate(v[o]) if v.get(o) else np.zeros((0, steps + 1))) for o in orders}
           for name, v in curves.items()}
    write_perturbation(out_h5, sample_ids, classes, out, dict(
        region=region, region_224=settings["region"], steps=steps, fill=fill, seed=settings["seed"],
        input_size=size, model_checksum=bundle.checksum, lrp_version=__version__, device=str(dev),
        max_units=-1 if settings.get("max_units") is None else settings["max_units"], n_shard_units=n_all))
    log(f"perturbation: {n} of {n_all} units, {len(names)} maps × {orders}, {steps} steps of {region}² regions, "
        f"{done / max(time.time() - t0, 1e-9):.0f} images/s")


def faithfulness(perturbation_shards: list, table1_csv, out: dict, n_boot: int, seed: int, title: str):
    """The faithfulness table (AOPC MoRF, LeRF, MoRF − LeRF with paired-bootstrap CIs), the mean perturbation
    curves and the scatter of faithfulness against μ_w (Table 1). `out` {"csv", "md", "tex", "curves": (png,
    pdf), "scatter": (png, pdf)}. Raises ValueError when the shards disagree on settings or analyzers."""
    from lrp.evaluation.perturbation import aopc as area
    from lrp.report.faithfulness import build_table3, plot_curves, plot_scatter, write_table3
    from lrp.storage.perturbation import read_perturbations

    data = read_perturbations(perturbation_shards)
    aopc = {name: {o: area(c) for o, c in per.items()} for name, per in data.curves.items()}
    from lrp.pipeline.evaluation import _paired  # Tables 1 and 2's paired bootstrap

    per_order = {}
    for order in data.orders:
        per_order[order] = _paired({n: v[order] for n, v in aopc.items()}, n_boot, seed)[0]
    if {"morf", "lerf"} <= set(data.orders):
        per_order["diff"] = _paired({n: v["morf"] - v["lerf"] for n, v in aopc.items()}, n_boot, seed)[0]
    table = build_table3(per_order, pd.read_csv(table1_csv), data.attrs)
    write_table3(table, out["csv"], out["md"], out["tex"], title)
    plot_curves(data.curves, *out["curves"], title=title.replace("Table 3", "Region perturbation"),
                attrs=data.attrs)
    plot_scatter(table, *out["scatter"], title=title.replace("Table 3", "Faithfulness vs localisation"))
    best = table.iloc[0]
    log(f"faithfulness: {len(table)} rows on {data.n_units} units, best AOPC MoRF {best['label']} "
        f"{best['morf']:.3f}")


def sanity(model_spec: dict, image_shard_h5, analyzers: dict, patterns_h5, out_csv, out_png, out_pdf, n_units: int,
           seed: int, device: str, title: str):
    """Cascading model-parameter randomisation (Adebayo et al. 2018) on the shard's first `n_units` units: the
    rank correlation of every analyzer's map on the trained model with its map after each layer from the
    output down is re-initialised (lrp.evaluation.randomisation); per-unit values into `out_csv`, the mean
    curves into the figure."""
    from lrp.evaluation.randomisation import cascading_randomisation
    from lrp.io import atomic_path
    from lrp.pipeline.attribution import analyzer_options
    from lrp.report.faithfulness import plot_sanity
    from lrp.storage.images import iter_shard_batches

    dev = pick_device(device)
    bundle = load_model(model_spec, dev)
    opts = analyzer_options(model_spec, analyzers, patterns_h5, dev)
    b = next(iter_shard_batches(image_shard_h5, n_units), None)
    if b is None:
        raise ValueError(f"{image_shard_h5}: no units for the sanity check")
    x = bundle.preprocessing(torch.from_numpy(b.images), device=dev)
    t0 = time.time()
    df = cascading_randomisation(bundle.module, x, torch.from_numpy(b.class_index).to(dev), opts, seed=seed,
                                 progress=lambda i, k, layer: log(f"sanity: layer {i}/{k} ({layer}) randomised"))
    df.insert(0, "sample_id", np.asarray(b.sample_id)[df.pop("unit").to_numpy()])
    with atomic_path(out_csv) as tmp:
        df.to_csv(tmp, index=False)
    plot_sanity(df, out_png, out_pdf, title=title)
    log(f"sanity: {len(b.sample_id)} units, {df['stage'].max()} layers, {time.time() - t0:.1f} s")
