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
SETTINGS = ("region", "region_224", "steps", "fill", "seed", "input_size", "model_checksum", "max_units")
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


MAX_UNITS = 10_000_000
MAX_STEPS = 1_000_000


def _hard_links_only(f: h5py.File, path: Path) -> None:
    """Refuse soft and external links anywhere in the file: an external link would read another file."""
    bad = []

    def visit(group, prefix=""):
        for name in group:
            link = group.get(name, getlink=True)
            where = f"{prefix}{name}"
            if not isinstance(link, h5py.HardLink):
                bad.append(where)
                continue
            obj = group.get(name)
            if isinstance(obj, h5py.Group):
                visit(obj, where + "/")

    visit(f)
    if bad:
        raise ValueError(f"{path}: '{bad[0]}' is a soft or external link; a perturbation shard holds only its own "
                         "datasets")


def _attr(value, key: str, path: Path):
    """A scalar int, float or str attribute (bytes decoded); anything else is refused."""
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{path}: attribute '{key}' is not UTF-8 text") from None
    if isinstance(value, np.generic) and value.dtype.kind in "iuf":
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{path}: attribute '{key}' must be a scalar number or text, got {type(value).__name__}")
    return value


def _dataset(f, key: str, path: Path) -> h5py.Dataset:
    obj = f.get(key)
    if not isinstance(obj, h5py.Dataset):
        raise ValueError(f"{path}: '{key}' is {'missing' if obj is None else 'not a dataset'}")
    return obj


def _read_one(path: Path):
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path}: cannot open perturbation shard: {e}") from None
    try:
        with f:
            return _read_open(f, path)
    except (OSError, KeyError, TypeError, UnicodeError, RuntimeError) as e:  # a corrupt chunk, a bad dtype
        raise ValueError(f"{path}: unreadable perturbation shard ({type(e).__name__}: {e})") from None


def _read_open(f: h5py.File, path: Path):
    _hard_links_only(f, path)
    for key in ("sample_id", "class_index", "curves"):
        if key not in f:
            raise ValueError(f"{path}: not a perturbation shard, no '{key}'")
    missing = [k for k in SETTINGS if k not in f.attrs]
    if missing:
        raise ValueError(f"{path}: attributes {missing} missing: not written by this lrp version's "
                         "perturbation stage; delete it and re-run it")
    attrs = {k: _attr(f.attrs[k], k, path) for k in SETTINGS}
    steps = attrs["steps"]
    if not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"{path}: attribute 'steps' is {steps!r}, not an int in 1..{MAX_STEPS}")
    ids = _dataset(f, "sample_id", path)
    if ids.ndim != 1 or h5py.check_string_dtype(ids.dtype) is None:
        raise ValueError(f"{path}: 'sample_id' must be a 1-D string dataset")
    n = ids.shape[0]
    if n > MAX_UNITS:
        raise ValueError(f"{path}: 'sample_id' declares {n} units (at most {MAX_UNITS})")
    try:
        ids = ids.asstr()[:]
    except UnicodeDecodeError:
        raise ValueError(f"{path}: 'sample_id' is not UTF-8 text") from None
    cls = _dataset(f, "class_index", path)
    if cls.shape != (n,) or cls.dtype.kind not in "iu":
        raise ValueError(f"{path}: 'class_index' must be {n} integers")
    cls = cls[:]
    if n and (cls.min() < 0 or cls.max() >= 2 ** 31):
        raise ValueError(f"{path}: 'class_index' holds values outside 0..2³¹")
    cls = cls.astype(np.int64)
    group = f["curves"]
    if not isinstance(group, h5py.Group) or not len(group):
        raise ValueError(f"{path}: 'curves' must be a group with one group of orders per map")
    curves = {}
    for name in group:
        orders = group[name]
        if not isinstance(orders, h5py.Group) or not len(orders):
            raise ValueError(f"{path}: 'curves/{name}' is not a group of orders")
        curves[name] = {}
        for order in orders:
            where = f"{path}: 'curves/{name}/{order}'"
            if order not in ORDERS:
                raise ValueError(f"{where}: unknown order (expected one of {ORDERS})")
            ds = orders[order]
            if not isinstance(ds, h5py.Dataset) or ds.shape != (n, steps + 1) or ds.dtype.kind != "f":
                raise ValueError(f"{where}: expected a ({n}, {steps + 1}) float dataset")
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
