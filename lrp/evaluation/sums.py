"""Per-sample relevance sums: what μ and μ_w are computed from (`lrp.evaluation.metrics.mu_from_sums`).

A module of its own because attribution jobs compute these sums from their float32 maps (on the GPU) and
store them in the shards: the attribution stage's code hash (rerun trigger) covers this file, and editing
the rest of `lrp.evaluation.metrics` (summaries, bootstrap, size curves) does not re-run the attributions.

Contract (docs/architecture.md, data protocol §1): pixel relevance is the channel sum, clipped to its
positive part *after* summing; sums accumulate in float64.
"""

from __future__ import annotations

import numpy as np

POSITIVE_PART = ("after_channel_sum", "before_channel_sum")


def _pixel_relevance(relevance, positive_part: str) -> np.ndarray:
    """(N,C,H,W) or (N,H,W) numpy -> positive pixel relevance (N,H,W): float64 from a channel sum
    or float64 input, else float32 (the sums accumulate in float64 either way; an (N,H,W) float32 map
    needs no float64 copy, which made a metrics job twice as slow)."""
    r = np.asarray(relevance)
    if r.ndim == 4:
        if positive_part == "before_channel_sum":
            r = np.clip(r, 0, None)
        r = r.sum(axis=1, dtype=np.float64)
    elif r.dtype != np.float32:
        r = r.astype(np.float64, copy=False)
    if r.ndim != 3:
        raise ValueError(f"relevance must be (N,C,H,W) or (N,H,W), got shape {tuple(np.shape(relevance))}")
    if not np.isfinite(r).all():
        _refuse_non_finite(np.isfinite(r).all(axis=(1, 2)))
    return np.maximum(r, 0)


def _refuse_non_finite(finite_per_sample: np.ndarray):
    bad = np.flatnonzero(~finite_per_sample)
    raise ValueError(f"non-finite relevance in samples {bad[:10].tolist()} (of {len(bad)}): "
                     "an upstream bug (e.g. LRP denominator ~0), refusing to score it")


def _check_mask(dtype, is_bool: bool, shape: tuple, pixel_shape: tuple) -> None:
    if not is_bool:
        raise ValueError(f"mask must be bool, got dtype {dtype}")
    if shape != pixel_shape:
        raise ValueError(f"mask shape {shape} does not match relevance pixel shape {pixel_shape} (N,H,W)")


def _as_mask(mask, shape: tuple[int, ...]) -> np.ndarray:
    m = mask.detach().cpu().numpy() if hasattr(mask, "detach") else np.asarray(mask)  # a torch mask, numpy maps
    _check_mask(m.dtype, m.dtype == np.bool_, m.shape, shape)
    return m


def relevance_sums(relevance, mask, positive_part: str = "after_channel_sum") -> dict[str, np.ndarray]:
    """Per-sample float64 sums r_in, r_tot, s_in, s_tot: what the pipeline stores so μ can be recomputed.

    r_tot is computed as r_in + r_out, so μ ≤ 1 holds exactly and a full-image box gives μ = 1 exactly.
    """
    if positive_part not in POSITIVE_PART:
        raise ValueError(f"positive_part must be one of {POSITIVE_PART}, got {positive_part!r}")
    if hasattr(relevance, "detach"):
        return _relevance_sums_torch(relevance, mask, positive_part)
    r = _pixel_relevance(relevance, positive_part)
    m = _as_mask(mask, r.shape)
    # masked reductions (where=) in float64: no (N,H,W) temporaries
    r_in = np.sum(r, axis=(1, 2), dtype=np.float64, where=m)
    r_out = np.sum(r, axis=(1, 2), dtype=np.float64, where=~m)
    n, h, w = r.shape
    return {"r_in": r_in, "r_tot": r_in + r_out, "s_in": m.sum(axis=(1, 2)).astype(np.float64),
            "s_tot": np.full(n, float(h * w))}


def _relevance_sums_torch(relevance, mask, positive_part: str) -> dict[str, np.ndarray]:
    """`relevance_sums` of a torch tensor on its own device (a GPU attribution job scores its float32 maps
    before storing them); the same float64 sums as the numpy path, only summed in another order."""
    import torch

    r = relevance.detach()
    if r.ndim == 4:
        r = r.to(torch.float64)
        r = (r.clamp(min=0) if positive_part == "before_channel_sum" else r).sum(dim=1)
    elif r.dtype != torch.float32:
        r = r.to(torch.float64)
    if r.ndim != 3:
        raise ValueError(f"relevance must be (N,C,H,W) or (N,H,W), got shape {tuple(relevance.shape)}")
    finite = torch.isfinite(r).flatten(1).all(1).cpu().numpy()
    if not finite.all():
        _refuse_non_finite(finite)
    m = mask if isinstance(mask, torch.Tensor) else torch.from_numpy(np.asarray(mask))
    _check_mask(m.dtype, m.dtype == torch.bool, tuple(m.shape), tuple(r.shape))
    m = m.to(r.device, non_blocking=True)
    pos = r.clamp(min=0)
    zero = pos.new_zeros(())
    r_in = torch.where(m, pos, zero).sum((1, 2), dtype=torch.float64)
    r_out = torch.where(m, zero, pos).sum((1, 2), dtype=torch.float64)
    s_in = m.sum((1, 2)).to(torch.float64)
    r_in, r_tot, s_in = torch.stack([r_in, r_in + r_out, s_in]).cpu().numpy()  # one copy to the host
    n, h, w = r.shape
    return {"r_in": r_in, "r_tot": r_tot, "s_in": s_in, "s_tot": np.full(n, float(h * w))}
