"""Attribution localisation metrics of Kohlbrenner et al. 2020: μ, μ_w, their summaries and size curves.

Contract: docs/architecture.md and the data protocol §1. Pixel relevance is the channel sum, clipped to its
positive part *after* summing (LRP heatmaps are channel-summed first); sums accumulate in float64 so that
50k-sample means do not drift. Undefined samples (empty box, no positive relevance) are NaN, never 0 as
in Quantus, so that they are excluded from means and counted instead of silently lowering them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lrp.evaluation.sums import (  # noqa: F401  (re-exported: lrp.evaluation.metrics.relevance_sums)
    POSITIVE_PART,
    relevance_sums,
)

THRESHOLDS = (0.25, 0.5)
_BOOT_CHUNK_ELEMENTS = 1_000_000  # resamples x N per chunk: ~8 MB of indices, ~48 MB gathered


def mu_from_sums(r_in, r_tot, s_in, s_tot) -> tuple[np.ndarray, np.ndarray]:
    """(μ, μ_w) from stored sums; NaN where S_in = 0 (box cropped away) or R_tot = 0 (no positive part)."""
    r_in, r_tot, s_in, s_tot = (np.asarray(a, dtype=np.float64) for a in (r_in, r_tot, s_in, s_tot))
    valid = (r_tot > 0) & (s_in > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mu = np.where(valid, r_in / r_tot, np.nan)
        mu_w = np.where(valid, mu * s_tot / s_in, np.nan)
    return mu, mu_w


def inside_total_ratio(relevance, mask, positive_part: str = "after_channel_sum"
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample μ = R_in/R_tot and μ_w = μ·S_tot/S_in (float64, NaN where undefined)."""
    return mu_from_sums(**relevance_sums(relevance, mask, positive_part))


def _check_fraction(box_fraction) -> np.ndarray:
    f = np.asarray(box_fraction, dtype=np.float64)
    if f.ndim != 1:
        raise ValueError(f"box_fraction must be 1-D, got shape {f.shape}")
    if not (np.isfinite(f) & (f >= 0) & (f <= 1)).all():
        raise ValueError("box_fraction must be finite and within [0, 1]")
    return f


def baseline_mu(box_fraction) -> tuple[np.ndarray, np.ndarray]:
    """Uniform attribution, analytically: μ = S_in/S_tot, μ_w = 1 (NaN where the box is empty)."""
    f = _check_fraction(box_fraction)
    mu = np.where(f > 0, f, np.nan)
    return mu, np.where(f > 0, 1.0, np.nan)


def _stats(sums: np.ndarray, n: int) -> np.ndarray:
    """Statistics (μ_w, μ_≤0.25, μ_≤0.5, μ) from column sums of `_columns`; shape (4, ...)."""
    with np.errstate(invalid="ignore", divide="ignore"):  # 0/0 -> NaN for an empty threshold subset
        return np.stack([sums[0] / n, sums[1] / sums[2], sums[3] / sums[4], sums[5] / n])


def _columns(mu: np.ndarray, mu_w: np.ndarray, f: np.ndarray) -> np.ndarray:
    """(6, n) per-sample addends; every statistic is a ratio of their sums, so one gather serves all four."""
    s25, s50 = (f <= THRESHOLDS[0]).astype(np.float64), (f <= THRESHOLDS[1]).astype(np.float64)
    return np.stack([mu_w, mu * s25, s25, mu * s50, s50, mu])


def summarize(mu, mu_w, box_fraction, n_boot: int = 1000, seed: int = 0, ci: float = 0.95) -> dict:
    """Table 1 cells (μ_w, μ_≤0.25, μ_≤0.5, μ) over valid samples with percentile-bootstrap CIs.

    All four statistics share the same resamples of the valid samples, so their CIs are comparable;
    resample subsets with no sample ≤ a threshold are ignored for that statistic (nan-percentile).
    """
    mu, mu_w = np.asarray(mu, dtype=np.float64), np.asarray(mu_w, dtype=np.float64)
    f = _check_fraction(box_fraction)
    if not (mu.shape == mu_w.shape == f.shape):
        raise ValueError(f"mu {mu.shape}, mu_w {mu_w.shape}, box_fraction {f.shape} "
                         "must have the same 1-D shape")
    if f.size == 0:
        raise ValueError("summarize() got no samples")
    if not np.array_equal(np.isnan(mu), np.isnan(mu_w)):
        raise ValueError("mu and mu_w must be NaN for the same samples")
    if n_boot < 1 or not 0 < ci < 1:
        raise ValueError(f"need n_boot >= 1 and 0 < ci < 1, got n_boot={n_boot}, ci={ci}")
    valid = ~np.isnan(mu)
    cols = _columns(mu[valid], mu_w[valid], f[valid])
    n = cols.shape[1]
    if n == 0:
        point = lo = hi = np.full(4, np.nan)
    else:
        point = _stats(cols.sum(axis=1), n)
        rng = np.random.default_rng(seed)
        chunk = max(1, _BOOT_CHUNK_ELEMENTS // n)
        boot = np.concatenate([
            _stats(cols[:, rng.integers(0, n, size=(min(chunk, n_boot - start), n))].sum(axis=2), n)
            for start in range(0, n_boot, chunk)], axis=1)  # (4, n_boot)
        q = 100 * np.array([(1 - ci) / 2, (1 + ci) / 2])
        lo, hi = np.full(4, np.nan), np.full(4, np.nan)
        ok = ~np.isnan(boot).all(axis=1)
        if ok.any():
            lo[ok], hi[ok] = np.nanpercentile(boot[ok], q, axis=1)
    keys = ["mu_w", "mu_le_0.25", "mu_le_0.5", "mu"]
    out: dict = {}
    for k, p, low, high in zip(keys, point, lo, hi):
        out[k], out[f"{k}_lo"], out[f"{k}_hi"] = float(p), float(low), float(high)
    out["n_used"], out["n_nan"] = int(n), int((~valid).sum())
    out["n_le_0.25"], out["n_le_0.5"] = int(cols[2].sum()), int(cols[4].sum())  # the units μ_≤ averages
    # every unit with a non-empty box in the bin, NaN or not: the same for all analyzers of a run
    out["n_all_le_0.25"] = int(((f > 0) & (f <= 0.25)).sum())
    out["n_all_le_0.5"] = int(((f > 0) & (f <= 0.5)).sum())
    return out


def bin_index(values, n_bins: int) -> np.ndarray:
    """Index of the equal-width bin on [0,1]: bin k = [k/n, (k+1)/n), the last bin closed.

    Compares against the same float edges k/n that are reported as bin_lo/bin_hi, so a value printed as
    0.29 lands in the bin whose bin_lo is 0.29 (floor(0.29*100) would give 28).
    """
    v = np.asarray(values, dtype=np.float64)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if not (np.isfinite(v) & (v >= 0) & (v <= 1)).all():
        raise ValueError("values to bin must be finite and within [0, 1]")
    edges = np.arange(n_bins + 1) / n_bins
    return np.minimum(np.searchsorted(edges, v, side="right") - 1, n_bins - 1)


def size_curve(mu, box_fraction, n_bins: int = 100) -> pd.DataFrame:
    """Fig. 3 data: mean μ per equal-width bin of box fraction; NaN μ excluded, empty bins NaN/0."""
    mu = np.asarray(mu, dtype=np.float64)
    f = _check_fraction(box_fraction)
    if mu.shape != f.shape:
        raise ValueError(f"mu {mu.shape} and box_fraction {f.shape} must have equal shape")
    valid = ~np.isnan(mu)
    k = bin_index(f[valid], n_bins)
    count = np.bincount(k, minlength=n_bins)
    total = np.bincount(k, weights=mu[valid], minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / count, np.nan)
    edges = np.arange(n_bins + 1) / n_bins
    return pd.DataFrame({"bin": np.arange(n_bins), "bin_lo": edges[:-1], "bin_hi": edges[1:],
                         "mean_mu": mean, "count": count.astype(np.int64)})
