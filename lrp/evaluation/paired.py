"""Which differences are real: a paired bootstrap of every analyzer-vs-analyzer difference on the same units.

Why paired: analyzers are scored on the same (image, class) units, so most of the unit-to-unit variation is
shared; resampling the units once for all analyzers (the same indices) removes it from every difference, where
comparing two separate CIs would call many real gaps "overlapping". Each resample gives every analyzer's
statistic; from them come
  - per analyzer: the percentile CI of its statistic, its rank (1 = highest), the probability that it holds that
    rank and that it ranks first;
  - per pair (a, b): the difference a − b, its percentile CI, a two-sided p-value from the bootstrap standard
    error of the difference (normal approximation, `_p_value` says why not the tail share) and its Holm-adjusted
    value over all pairs (family-wise error ≤ alpha);
  - `tied_with_best`: analyzers whose difference to the best is not significant after Holm (the best included).
The statistic is the mean over units, or with `groups` the mean of per-group means (the pointing game's mean
of per-class hit rates). Units where any analyzer is NaN are left out for all (counted in `n_dropped`), so
every analyzer is compared on the same units; an analyzer with a value on fewer than `min_valid` (half) of the
units would shrink that common set to a biased rest, so it is left out of the comparison instead (its row has
NaN statistics and no mark; named in `left_out`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

__all__ = ["paired_bootstrap", "holm"]

_CHUNK_ELEMENTS = 2_000_000  # resamples × units per chunk of indices


def holm(p) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (step-down, monotone, capped at 1)."""
    p = np.asarray(p, dtype=np.float64)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return out


def _p_value(diff: float, se: float) -> float:
    """Two-sided p of a difference from its bootstrap standard error (normal approximation). Why not the share
    of resamples beyond 0: with 1,000 resamples its smallest value is 2/1001, and Holm over the 78 pairs of 13
    analyzers multiplies that to 0.16, so no difference, however large, could ever be significant."""
    if not se > 0:
        return 1.0 if diff == 0 else 0.0
    return math.erfc(abs(diff) / se / math.sqrt(2))


def _statistic(x: np.ndarray, groups: np.ndarray | None, n_groups: int) -> np.ndarray:
    """Statistic of rows of x (..., n): mean, or mean over groups of group means (NaN groups skipped)."""
    if groups is None:
        return x.mean(axis=-1)
    lead = x.shape[:-1]
    x2, g2 = x.reshape(-1, x.shape[-1]), np.broadcast_to(groups, x.shape).reshape(-1, x.shape[-1])
    rows = np.arange(len(x2))[:, None] * n_groups + g2
    sums = np.bincount(rows.ravel(), weights=x2.ravel(), minlength=len(x2) * n_groups).reshape(len(x2), n_groups)
    counts = np.bincount(rows.ravel(), minlength=len(x2) * n_groups).reshape(len(x2), n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / counts, np.nan)
    return np.nanmean(means, axis=1).reshape(lead)


def paired_bootstrap(values: dict[str, np.ndarray], n_boot: int = 1000, seed: int = 0, ci: float = 0.95,
                     alpha: float = 0.05, groups=None, min_valid: float = 0.5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-analyzer table, pairwise table) as described above; `values` {analyzer: per-unit array}, aligned.

    Raises ValueError for fewer than two analyzers (after leaving out the mostly-NaN ones), arrays of different
    lengths, no unit valid for all, or bad n_boot / ci / alpha.
    """
    all_names = list(values)
    if len(all_names) < 2:
        raise ValueError(f"paired_bootstrap needs at least two analyzers, got {all_names}")
    left_out = [n for n in all_names if np.isfinite(np.asarray(values[n], dtype=np.float64)).mean() < min_valid]
    names = [n for n in all_names if n not in left_out]
    if len(names) < 2:
        raise ValueError(f"paired_bootstrap needs at least two analyzers with values on ≥ {min_valid:.0%} of the "
                         f"units; left out: {left_out}")
    if n_boot < 1 or not 0 < ci < 1 or not 0 < alpha < 1:
        raise ValueError(f"need n_boot >= 1, 0 < ci < 1 and 0 < alpha < 1; got {n_boot}, {ci}, {alpha}")
    x = np.stack([np.asarray(values[n], dtype=np.float64) for n in names]) if len(
        {np.shape(v) for v in values.values()}) == 1 else None
    if x is None or x.ndim != 2:
        raise ValueError("every analyzer needs one value per unit, for the same units: "
                         + ", ".join(f"{n} {np.shape(v)}" for n, v in values.items()))
    g = None if groups is None else np.asarray(groups)
    if g is not None and g.shape != x.shape[1:]:
        raise ValueError(f"groups {g.shape} must give one group per unit ({x.shape[1]})")
    valid = np.isfinite(x).all(axis=0)
    x = x[:, valid]
    n = x.shape[1]
    if n == 0:
        raise ValueError("no unit has a value for every analyzer")
    n_groups = 0
    if g is not None:
        _, g = np.unique(g[valid], return_inverse=True)
        n_groups = int(g.max()) + 1
    point = _statistic(x, g, n_groups)
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_ELEMENTS // n)
    boot = []
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_boot - start), n))
        boot.append(_statistic(x[:, idx], None if g is None else g[idx], n_groups))  # (A, b)
    boot = np.concatenate(boot, axis=1)
    q = 100 * np.array([(1 - ci) / 2, (1 + ci) / 2])
    lo, hi = np.percentile(boot, q, axis=1)
    rank = pd.Series(point).rank(ascending=False, method="min").to_numpy(dtype=int)
    boot_rank = (-boot).argsort(axis=0).argsort(axis=0) + 1  # (A, b): 1 = highest in that resample
    pairs = []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            d = boot[i] - boot[j]
            p = _p_value(point[i] - point[j], d.std(ddof=1) if n_boot > 1 else 0.0)
            dlo, dhi = np.percentile(d, q)
            pairs.append({"a": names[i], "b": names[j], "diff": point[i] - point[j], "diff_lo": dlo,
                          "diff_hi": dhi, "p": p})
    pw = pd.DataFrame(pairs)
    pw["p_holm"] = holm(pw["p"].to_numpy())
    pw["significant"] = pw["p_holm"] < alpha
    best = names[int(np.argmax(point))]
    tied = {best}
    for _, r in pw.iterrows():
        if best in (r["a"], r["b"]) and not r["significant"]:
            tied.add(r["b"] if r["a"] == best else r["a"])
    per = pd.DataFrame({"analyzer": names, "value": point, "lo": lo, "hi": hi, "rank": rank,
                        "p_holds_rank": (boot_rank == rank[:, None]).mean(axis=1),
                        "p_best": (boot_rank == 1).mean(axis=1), "tied_with_best": [a in tied for a in names]})
    if left_out:
        out = pd.DataFrame({"analyzer": left_out, "tied_with_best": False})
        per = pd.concat([per, out], ignore_index=True)
        per["rank"] = per["rank"].astype("Int64")
    per.attrs.update(n_units=n, n_dropped=int((~valid).sum()), n_boot=n_boot, seed=seed, alpha=alpha,
                     left_out=left_out)
    pw.attrs.update(per.attrs)
    return per, pw
