"""Localisation measures beside μ / μ_w, from the per-map counts of `lrp.evaluation.map_scores`.

- rank accuracy (Arras et al., CLEVR-XAI, Inf. Fusion 2022): the share of the top-|mask| pixels inside the mask;
- top-k intersection (Theiner et al. 2021): the share of the top-k pixels inside the mask;
- energy pointing game (Wang et al., Score-CAM, CVPRW 2020): Σ inside / Σ total of the map shifted to min 0
  (Score-CAM's maps are min-max normalised; the scale cancels). On the positive part instead it would be μ.

All are NaN where undefined (empty mask; a constant map's energy), never 0, and the uniform map of the
Baseline row scores the mask's share of the input on each (`baseline_localisation`), as it does on μ.

Conventions against Quantus 0.6.0 (tests/evaluation/test_localisation.py): its RelevanceRankAccuracy and
TopKIntersection rank with `np.argsort`, so tied values are taken in memory order; here ties at the k-th
value share the remaining places in proportion. With `abs=False, normalise=False` and maps without ties the
two agree exactly.
"""

from __future__ import annotations

import numpy as np

__all__ = ["rank_accuracy", "topk_intersection", "energy_pointing", "baseline_localisation"]


def _ratio(num, den) -> np.ndarray:
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def rank_accuracy(rank_in, s_in) -> np.ndarray:
    """Share of the top-|mask| pixels inside the mask; NaN for an empty mask."""
    return _ratio(rank_in, s_in)


def topk_intersection(topk_in, k: int, s_in) -> np.ndarray:
    """Share of the top-k pixels inside the mask; NaN for an empty mask (as Quantus)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    share = _ratio(topk_in, np.full(np.shape(topk_in), float(k)))
    return np.where(np.asarray(s_in, dtype=np.float64) > 0, share, np.nan)


def energy_pointing(e_in, e_tot) -> np.ndarray:
    """Σ (L − min L) inside / over the map; NaN for a constant map."""
    return _ratio(e_in, e_tot)


def baseline_localisation(s_in, s_tot) -> dict[str, np.ndarray]:
    """The uniform map's scores (the Baseline row): every measure is the mask's share S_in/S_tot (ties share
    the top places in proportion; the shifted uniform map is the limit of a constant plus a vanishing ripple)."""
    f = _ratio(s_in, s_tot)
    f = np.where(np.asarray(s_in, dtype=np.float64) > 0, f, np.nan)
    return {"rank_accuracy": f, "topk": f.copy(), "energy": f.copy()}
