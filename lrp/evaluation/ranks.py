"""Spearman's rank correlation row by row, ties sharing their mean rank (numpy only: the sanity check and the
report's rank correlations use it without loading the engine)."""

from __future__ import annotations

import numpy as np


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks of each row (ties share their mean rank, as Spearman's ρ wants)."""
    out = np.empty(x.shape, dtype=np.float64)
    for i, row in enumerate(x):
        _, inv, counts = np.unique(row, return_inverse=True, return_counts=True)
        ends = np.cumsum(counts)
        out[i] = ((ends - counts + 1 + ends) / 2)[inv]
    return out


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's ρ between the rows of a and b (N, P); NaN where a row is constant."""
    ra, rb = average_ranks(a), average_ranks(b)
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    den = np.sqrt((ra ** 2).sum(1) * (rb ** 2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (ra * rb).sum(1) / den, np.nan)
