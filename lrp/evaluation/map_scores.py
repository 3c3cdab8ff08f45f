"""Per-map localisation scores that need the whole float32 map: computed in the attribution job, on its device.

Why here and not in the metrics job: the stored maps may be float16, and the pointing game's maximum (at the
original resolution), the top-ranked pixels and the min-shifted energy can all change with that rounding
(ties, near-ties). Like `lrp.evaluation.sums`, a module of its own: the attribution stage's code hash covers it,
and editing the metrics that turn these counts into rates (`lrp.evaluation.localisation`) re-runs only them.

Scores per map (float64 arrays), from the channel-summed map L (not clipped) and the unit's input mask:
  point_x, point_y  the maximum of L brought to the original image resolution (bilinear, align_corners=False,
                    as TorchRay's `resize_saliency`), in original-image pixels; ties: the first in row-major order;
                    NaN for a constant map (TorchRay's argmax would point at the top-left pixel)
  rank_in           how many of the top-|mask| pixels of L lie in the mask (rank accuracy, Arras et al. 2022)
  topk_in           how many of the top-k pixels of L lie in the mask (top-k intersection, Theiner et al. 2021)
  e_in, e_tot       Σ (L − min L) inside the mask and over the map (energy pointing game, Wang et al. 2020)
Ties at the k-th value are broken fairly, not by memory order: the tied pixels fill the remaining places in
proportion, so a count may be fractional and an all-equal map scores the mask's share (docs/metrics.md).
"""

from __future__ import annotations

import numpy as np

SCORES = ("point_x", "point_y", "rank_in", "topk_in", "e_in", "e_tot")
TOP_K_224 = 1000  # top-k intersection's k at 224 × 224 (Theiner et al.; Quantus' default k), scaled by area


def top_k_pixels(size: int, top_k: int = TOP_K_224) -> int:
    """k for a size × size map: `top_k` pixels at 224², scaled with the map's area (at least 1).
    Raises ValueError for a non-positive size or k."""
    if size < 1 or top_k < 1:
        raise ValueError(f"size and top_k must be positive, got size={size}, top_k={top_k}")
    return max(1, min(size * size, round(top_k * size * size / 224 ** 2)))


def _fair_top_count(v, ordered, inside, k):
    """Expected number of mask pixels among the k largest values of each row of v, ties at the k-th value
    shared in proportion (torch: v (N,P) float, `ordered` its rows sorted descending, inside (N,P) bool,
    k (N,) int64) -> (N,) float64."""
    import torch

    n, p = v.shape
    kk = k.clamp(min=1, max=p)
    t = ordered.gather(1, (kk - 1)[:, None])
    above, tied = v > t, v == t
    n_above, n_tied = above.sum(1), tied.sum(1)
    in_above, in_tied = (above & inside).sum(1), (tied & inside).sum(1)
    count = in_above.double() + (kk - n_above).double() * in_tied.double() / n_tied.double()
    return torch.where(k > 0, count, torch.zeros_like(count))


def _max_points(maps, regions: np.ndarray):
    """(N, 2) float64 (x, y): the maximum of each map resized to its region (left, top, width, height)."""
    import torch
    import torch.nn.functional as F

    n, h, w = maps.shape
    out = np.empty((n, 2), np.float64)
    for (left, top, rw, rh) in np.unique(regions, axis=0):
        rows = np.flatnonzero((regions == (left, top, rw, rh)).all(axis=1))
        m = maps[torch.as_tensor(rows, device=maps.device)]
        if (rh, rw) != (h, w):
            m = F.interpolate(m[:, None].double(), size=(int(rh), int(rw)), mode="bilinear",
                              align_corners=False)[:, 0]
        flat = m.flatten(1).argmax(1).cpu().numpy()  # the first maximum, as torch documents
        out[rows, 0] = flat % int(rw) + left
        out[rows, 1] = flat // int(rw) + top
    return out


def map_scores(maps, masks, regions, top_k: int) -> dict[str, np.ndarray]:
    """The scores above for a batch: `maps` (N,H,W) float torch tensor (channel sums, any device), `masks`
    (N,H,W) bool (torch or numpy), `regions` (N,4) int (left, top, width, height) of each map in its original
    image (lrp.datasets.boxes.BoxTransform.source_region), `top_k` pixels of this map size (top_k_pixels).

    Raises ValueError on shapes that do not match or a non-finite map (naming the samples).
    """
    import torch

    r = maps.detach()
    if r.ndim != 3:
        raise ValueError(f"maps must be (N,H,W), got shape {tuple(r.shape)}")
    m = masks if isinstance(masks, torch.Tensor) else torch.from_numpy(np.asarray(masks))
    if m.dtype != torch.bool or tuple(m.shape) != tuple(r.shape):
        raise ValueError(f"masks must be bool of the maps' shape {tuple(r.shape)}, got {m.dtype} {tuple(m.shape)}")
    regions = np.asarray(regions, dtype=np.int64).reshape(-1, 4)
    if len(regions) != len(r) or (regions[:, 2:] < 1).any():
        raise ValueError(f"regions must be (N,4) with positive width and height for N={len(r)} maps")
    finite = torch.isfinite(r).flatten(1).all(1).cpu().numpy()
    if not finite.all():
        raise ValueError(f"non-finite relevance in samples {np.flatnonzero(~finite)[:10].tolist()}")
    m = m.to(r.device)
    v, inside = r.flatten(1), m.flatten(1)
    s_in = inside.sum(1)
    ordered = v.sort(dim=1, descending=True).values  # one sort serves both counts
    rank_in = _fair_top_count(v, ordered, inside, s_in)
    topk_in = _fair_top_count(v, ordered, inside, torch.full_like(s_in, int(top_k)))
    shifted = (v.double() - v.double().min(1, keepdim=True).values)
    e_in = torch.where(inside, shifted, torch.zeros_like(shifted)).sum(1)
    e_tot = shifted.sum(1)
    counts = torch.stack([rank_in, topk_in, e_in, e_tot]).cpu().numpy()
    points = _max_points(r, regions)
    points[(v.amax(1) == v.amin(1)).cpu().numpy()] = np.nan  # a constant map has no maximum to point with
    return {"point_x": points[:, 0], "point_y": points[:, 1], "rank_in": counts[0], "topk_in": counts[1],
            "e_in": counts[2], "e_tot": counts[3]}
