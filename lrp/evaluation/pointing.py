"""The pointing game (Zhang et al., ECCV 2016 / IJCV 2018) on TorchRay's protocol, and its centre baseline.

Protocol (TorchRay `benchmark/pointing_game.py`, whose VOC 2007 / COCO table is the published reference):
a unit is one (image, class) pair; its point is the maximum of the map brought to the original resolution
(`lrp.evaluation.map_scores`); it is a hit if some pixel of the union of the class's boxes lies strictly within
`tolerance` (15) pixels of the point — pixel (i, j) counts when (i − x)² + (j − y)² < tolerance²; pairs whose
boxes are all `difficult` are skipped; the score is the mean over classes of the per-class hit rates (the
per-pair rate is reported beside it). The centre baseline points at (width/2, height/2) whatever the image
shows: TorchRay's `center` row (69.6 % on VOC 2007 test).

Where this differs from Quantus' `PointingGame`: Quantus has no tolerance (the maximum must lie in the mask),
counts an empty mask as a hit (its result array is bool, so the NaN it assigns becomes True), and averages
over samples, not classes; an empty mask here is a skipped pair, never a hit.
"""

from __future__ import annotations

import json

import numpy as np

TOLERANCE = 15

__all__ = ["TOLERANCE", "centre_points", "point_hits", "pointing_outcome", "pointing_game", "all_difficult",
           "parse_boxes"]


def parse_boxes(column, source: str = "index") -> list[np.ndarray]:
    """An index's `source_boxes` column (JSON per row) -> one (k, 4) float64 array per row.
    Raises ValueError naming `source` and the row (1-based data line) whose value is not a list of finite
    4-number boxes."""
    out = []
    for i, text in enumerate(column):
        try:
            b = np.asarray(json.loads(text), dtype=np.float64).reshape(-1, 4)
            if not np.isfinite(b).all():
                raise ValueError("not finite")
        except (TypeError, ValueError) as e:
            raise ValueError(f"{source}: row {i + 1}: source_boxes {str(text)[:60]!r} are not a JSON list of "
                             f"[x0, y0, x1, y1]: {e}") from None
        out.append(b)
    return out


def all_difficult(column, source: str = "index", n_boxes=None) -> np.ndarray:
    """An index's `difficult` column (JSON list of 0/1 per box) -> bool per row: every box difficult (a pair
    TorchRay skips). A row without boxes counts as all difficult (there is nothing to point at). With `n_boxes`
    (boxes per row) a row whose flag count differs is an error. Raises ValueError naming `source` and the row."""
    out = []
    counts = None if n_boxes is None else list(n_boxes)
    for i, text in enumerate(column):
        try:
            flags = json.loads(text)
            if not isinstance(flags, list) or any(f not in (0, 1, True, False) for f in flags):
                raise ValueError("expected a list of 0/1")
            if counts is not None and len(flags) != counts[i]:
                raise ValueError(f"{len(flags)} flags for {counts[i]} boxes")
        except (TypeError, ValueError) as e:
            raise ValueError(f"{source}: row {i + 1}: difficult {str(text)[:60]!r}: {e}") from None
        out.append(all(bool(f) for f in flags))
    return np.array(out, dtype=bool)


def centre_points(width, height) -> np.ndarray:
    """(N, 2) float64 (x, y) = (width/2, height/2): TorchRay's `center` method."""
    w, h = np.asarray(width, dtype=np.float64), np.asarray(height, dtype=np.float64)
    return np.stack([w / 2, h / 2], axis=1)


def point_hits(points, boxes: list, tolerance: float = TOLERANCE) -> np.ndarray:
    """Per unit: does some pixel of the union of its half-open whole-pixel boxes [x0, y0, x1, y1) lie within
    `tolerance` of its point (x, y)? Exact and raster-free: the nearest pixel of a box to the point is the
    point rounded and clipped into the box, per axis. A unit without (non-empty) boxes never hits, nor does a
    NaN point (a constant map's: `pointing_outcome` makes it undefined rather than a miss).

    Raises ValueError if points and boxes do not pair up or a value is infinite.
    """
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(p) != len(boxes):
        raise ValueError(f"{len(p)} points for {len(boxes)} units")
    if np.isinf(p).any():
        raise ValueError("points must be finite (NaN: no point)")
    if tolerance < 0 or not np.isfinite(tolerance):
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
    owner = np.repeat(np.arange(len(boxes)), [len(b) for b in boxes])
    b = (np.concatenate([np.asarray(x, dtype=np.float64).reshape(-1, 4) for x in boxes]) if len(owner)
         else np.zeros((0, 4)))
    if not np.isfinite(b).all():
        raise ValueError("boxes must be finite")
    lo, hi = np.ceil(b[:, :2]), np.floor(b[:, 2:]) - 1  # first and last whole pixel of each box
    xy = p[owner]
    nearest = np.clip(np.floor(xy + 0.5), lo, hi)
    d2 = ((nearest - xy) ** 2).sum(axis=1)
    hit_box = (hi >= lo).all(axis=1) & (d2 < tolerance ** 2)
    hits = np.zeros(len(boxes), dtype=bool)
    np.logical_or.at(hits, owner, hit_box)
    return hits


def pointing_outcome(points, boxes: list, difficult_column, tolerance: float = TOLERANCE,
                     source: str = "index") -> np.ndarray:
    """Per unit 1.0 (hit), 0.0 (miss) or NaN: skipped (all boxes difficult) or no point (a constant map)."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    hits = point_hits(p, boxes, tolerance).astype(np.float64)
    skip = all_difficult(difficult_column, source, n_boxes=[len(b) for b in boxes])
    return np.where(skip | np.isnan(p).any(axis=1), np.nan, hits)


def pointing_game(hits, class_index, skip=None) -> dict:
    """Score hits: {pointing (mean of per-class rates), pointing_pairs (per-pair rate), n_pairs, n_skipped,
    per_class {class_index: (hits, pairs)}}. Classes without a counted pair are left out of the mean (TorchRay
    divides by all of a dataset's classes; on VOC 2007 test every class has pairs, so the two agree)."""
    hits = np.asarray(hits, dtype=bool)
    cls = np.asarray(class_index, dtype=np.int64)
    keep = np.ones(len(hits), dtype=bool) if skip is None else ~np.asarray(skip, dtype=bool)
    if not (hits.shape == cls.shape == keep.shape):
        raise ValueError(f"hits {hits.shape}, class_index {cls.shape} and skip {keep.shape} must have one entry "
                         "per unit")
    per_class = {}
    for c in np.unique(cls[keep]):
        sel = keep & (cls == c)
        per_class[int(c)] = (int(hits[sel].sum()), int(sel.sum()))
    rates = [h / n for h, n in per_class.values()]
    n = int(keep.sum())
    return {"pointing": float(np.mean(rates)) if rates else float("nan"),
            "pointing_pairs": float(hits[keep].mean()) if n else float("nan"),
            "n_pairs": n, "n_skipped": int((~keep).sum()), "per_class": per_class}
