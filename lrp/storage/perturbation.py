"""Perturbation shards: the region-perturbation curves of one image shard's perturbed units (docs/shards.md).

Schema: `sample_id` (n,) utf-8 and `class_index` (n,) int64, the units in image-shard order; one group per map
(`curves/<analyzer>`, the random-map baseline as `curves/random`) holding one (n, steps + 1) float64 dataset per
removal order (`morf`, `lerf`, `random`): the target logit after k regions are removed, k = 0 the unperturbed
input. Attributes record the settings (region, steps, fill, seed, input size), the model checksum and the lrp
version. Read through `read_perturbations`, which checks every shard against the others: a file may be hostile.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np

from lrp.io import atomic_path

STR = h5py.string_dtype("utf-8")
ORDERS = ("morf", "lerf", "random")  # lrp.evaluation.perturbation.ORDERS (storage does not import evaluation)
SETTINGS = ("region", "region_224", "steps", "fill", "seed", "input_size", "model_checksum")
"""Attributes every shard of one study must share."""


def write_perturbation(path, sample_ids, class_index, curves: dict, attrs: dict) -> None:
    """Write one shard atomically; `curves` {map name: {order: (n, steps + 1) array}}."""
    n = len(sample_ids)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("sample_id", data=np.asarray(sample_ids, dtype=object), dtype=STR)
        f["class_index"] = np.asarray(class_index, dtype=np.int64)
        for name, per in curves.items():
            for order, c in per.items():
                c = np.asarray(c, dtype=np.float64)
                if c.shape != (n, attrs["steps"] + 1):
                    raise ValueError(f"curves {name}/{order}: shape {c.shape}, expected {(n, attrs['steps'] + 1)}")
                f.create_dataset(f"curves/{name}/{order}", data=c)
        for k, v in attrs.items():
            f.attrs[k] = json.dumps(v) if isinstance(v, (dict, list)) else v


class Perturbations(NamedTuple):
    sample_id: np.ndarray  # (N,) str, the shards' units in shard order
    class_index: np.ndarray  # (N,) int64
    curves: dict  # {map name: {order: (N, steps + 1) float64}}
    orders: list
    attrs: dict  # the shared settings
    n_units: int


def _attr(v):
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, np.generic):
        v = v.item()
    return v


def _read_one(path: Path):
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path}: cannot open perturbation shard: {e}") from None
    with f:
        for key in ("sample_id", "class_index", "curves"):
            if key not in f:
                raise ValueError(f"{path}: not a perturbation shard, no '{key}'")
        attrs = {k: _attr(f.attrs[k]) for k in SETTINGS if k in f.attrs}
        missing = [k for k in SETTINGS if k not in attrs]
        if missing:
            raise ValueError(f"{path}: attributes {missing} missing: not written by this lrp version's "
                             "perturbation stage; delete it and re-run it")
        steps = attrs["steps"]
        if not isinstance(steps, int) or not 1 <= steps <= 1_000_000:
            raise ValueError(f"{path}: attribute 'steps' is {steps!r}, not a positive int")
        ids = f["sample_id"]
        if ids.ndim != 1 or ids.dtype.kind not in "OS":
            raise ValueError(f"{path}: 'sample_id' must be a 1-D string dataset")
        ids = ids.asstr()[:]
        cls = f["class_index"]
        if cls.shape != (len(ids),) or cls.dtype.kind not in "iu":
            raise ValueError(f"{path}: 'class_index' must be {len(ids)} integers")
        cls = cls[:].astype(np.int64)
        curves = {}
        for name, group in f["curves"].items():
            if not isinstance(group, h5py.Group):
                raise ValueError(f"{path}: 'curves/{name}' is not a group of orders")
            curves[name] = {}
            for order, ds in group.items():
                where = f"{path}: 'curves/{name}/{order}'"
                if order not in ORDERS:
                    raise ValueError(f"{where}: unknown order (expected one of {ORDERS})")
                if not isinstance(ds, h5py.Dataset) or ds.shape != (len(ids), steps + 1) or ds.dtype.kind != "f":
                    raise ValueError(f"{where}: expected a ({len(ids)}, {steps + 1}) float dataset")
                c = ds[:].astype(np.float64)
                if not np.isfinite(c).all():
                    bad = np.flatnonzero(~np.isfinite(c).all(1))
                    raise ValueError(f"{where}: non-finite logits for units {list(ids[bad[:5]])}")
                curves[name][order] = c
        return ids, cls, curves, attrs


def read_perturbations(paths: list) -> Perturbations:
    """All shards of one study as one set of curves. Raises ValueError naming the file for a malformed shard,
    shards whose settings, maps or orders differ, or a unit in two shards."""
    if not paths:
        raise ValueError("no perturbation shards")
    ids, cls, curves, ref, ref_path, layout = [], [], {}, None, None, None
    for p in map(Path, paths):
        i, c, cv, attrs = _read_one(p)
        shape = {name: sorted(per) for name, per in cv.items()}
        if ref is None:
            ref, ref_path, layout = attrs, p, shape
        elif attrs != ref:
            diff = sorted(k for k in SETTINGS if attrs.get(k) != ref.get(k))
            raise ValueError(f"{p}: settings {diff} differ from {ref_path}'s: re-run the perturbation stage")
        elif shape != layout:
            raise ValueError(f"{p}: maps/orders {shape} differ from {ref_path}'s {layout}")
        ids.append(i)
        cls.append(c)
        for name, per in cv.items():
            for order, arr in per.items():
                curves.setdefault(name, {}).setdefault(order, []).append(arr)
    sample_id = np.concatenate(ids)
    uniq, counts = np.unique(sample_id, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"units {list(uniq[counts > 1][:5])} appear in more than one perturbation shard")
    if len(sample_id) == 0:
        raise ValueError(f"the perturbation shards {[str(p) for p in paths][:3]}… hold no units: "
                         "faithfulness.max_units selected none")
    orders = sorted({o for per in layout.values() for o in per}, key=ORDERS.index)
    merged = {name: {o: np.concatenate(v) for o, v in per.items()} for name, per in curves.items()}
    return Perturbations(sample_id, np.concatenate(cls), merged, orders, ref, len(sample_id))
