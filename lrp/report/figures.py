"""Figs. 2 and 3 of Kohlbrenner et al. 2020, sized for a 3.5-inch paper column (fonts ≥ 7 pt).

Figures are drawn on a bare `matplotlib.figure.Figure` (Agg canvas) rather than through pyplot, so no
global backend or figure registry is touched and plotting is safe inside Snakemake jobs and tests.
"""

from __future__ import annotations

import os

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from scipy.stats import t as student_t

from lrp.evaluation.metrics import bin_index
from lrp.io import atomic_path

WIDTH_IN, HEIGHT_IN, DPI = 3.5, 3.6, 200
FIG3_HEIGHT_IN = 4.4  # room for the legend below the panels
FIG2_HEIGHT_IN = 4.6  # three panels: median ratio, logit change, counts
_RC = {"font.size": 7, "axes.titlesize": 7.5, "axes.labelsize": 7, "xtick.labelsize": 7,
       "ytick.labelsize": 7, "legend.fontsize": 7, "pdf.fonttype": 42, "svg.fonttype": "none"}
_CURVE_COLUMNS = ("bin_lo", "bin_hi", "mean_mu", "count")
_OCC_COLUMNS = ("box_fraction", "logit", "logit_object_occluded", "logit_context_occluded")
MIN_ABS_LOGIT = 1e-6


def _new_figure(height: float = HEIGHT_IN) -> tuple[Figure, object, object]:
    """Main panel over a short count panel sharing x."""
    fig = Figure(figsize=(WIDTH_IN, height), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    return fig, top, bottom


def _save(fig: Figure, out_png: str | os.PathLike, out_pdf: str | os.PathLike) -> None:
    """PNG (200 dpi, fixed pixel size) and PDF, each atomically, without time stamps (reproducible bytes)."""
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None})
    with atomic_path(out_pdf) as tmp:
        fig.savefig(tmp, format="pdf",
                    metadata={"CreationDate": None, "Creator": None, "Producer": None})


def _check_curve(name: str, df: pd.DataFrame) -> None:
    missing = [c for c in _CURVE_COLUMNS if c not in df]
    if missing:
        raise ValueError(f"size curve {name!r} lacks columns {missing} "
                         "(expected lrp.evaluation.metrics.size_curve output)")
    if df.empty:
        raise ValueError(f"size curve {name!r} is empty")


def plot_fig3(curves: dict[str, pd.DataFrame], baseline_curve: pd.DataFrame, out_png: str | os.PathLike,
              out_pdf: str | os.PathLike, title: str, min_count: int = 20) -> None:
    """Fig. 3: mean μ per box-size bin per analyzer, the uniform baseline y = bin centre, and bin counts.

    Bins with fewer than `min_count` samples are left out of the curves (a mean of a handful of samples
    would read as a trend) and drawn as grey dots / grey count bars, so their existence stays visible.
    """
    if not curves:
        raise ValueError("plot_fig3() got no curves")
    if min_count < 0:
        raise ValueError(f"min_count must be >= 0, got {min_count}")
    _check_curve("baseline", baseline_curve)
    edges_lo, edges_hi = baseline_curve["bin_lo"].to_numpy(), baseline_curve["bin_hi"].to_numpy()
    for name, df in curves.items():
        _check_curve(name, df)
        if not (np.array_equal(df["bin_lo"].to_numpy(), edges_lo)
                and np.array_equal(df["bin_hi"].to_numpy(), edges_hi)):
            raise ValueError(f"size curve {name!r} uses different bins than the baseline curve")
    if sum(int(df["count"].sum()) for df in curves.values()) == 0:
        raise ValueError("plot_fig3(): every curve has zero samples")
    x = (edges_lo + edges_hi) / 2
    width = edges_hi - edges_lo
    with matplotlib.rc_context(_RC):
        fig, ax, axc = _new_figure(FIG3_HEIGHT_IN)
        colors = matplotlib.colormaps["tab10"].colors
        styles = ("-", "--", "-.", ":")
        low_x, low_y = [], []
        for i, (label, df) in enumerate(curves.items()):
            ok = df["count"].to_numpy() >= min_count
            y = df["mean_mu"].to_numpy(dtype=float)
            ax.plot(x, np.where(ok, y, np.nan), color=colors[i % 10], ls=styles[(i // 10) % 4], lw=1.0,
                    label=label)
            low = ~ok & ~np.isnan(y)
            low_x.append(x[low])
            low_y.append(y[low])
        ax.plot(x, x, color="k", ls=(0, (1, 1)), lw=1.0, label="Baseline (uniform)")
        low_x, low_y = np.concatenate(low_x), np.concatenate(low_y)
        if low_x.size:
            ax.plot(low_x, low_y, ls="none", marker=".", ms=3, color="0.65",
                    label=f"bins < {min_count} samples")
        for v in (0.25, 0.5):
            ax.axvline(v, color="0.5", lw=0.6, ls="--", zorder=0)
        ax.set(xlim=(0, 1), ylim=(0, 1.02), ylabel="mean μ (in-box relevance ratio)", title=title)
        fig.legend(loc="outside lower center", ncol=3 if len(curves) > 3 else 2, handlelength=1.5,
                   columnspacing=0.8, handletextpad=0.4, frameon=False)  # outside: never hides a curve
        counts = baseline_curve["count"].to_numpy()
        axc.bar(x, counts, width=width, color=["0.35" if c >= min_count else "0.8" for c in counts], lw=0)
        axc.axhline(min_count, color="0.5", lw=0.6, ls=":")
        for v in (0.25, 0.5):
            axc.axvline(v, color="0.5", lw=0.6, ls="--", zorder=0)
        axc.set(xlabel="box size S_in / S_tot (fraction of input)", ylabel="samples")
        _save(fig, out_png, out_pdf)


def _binned_mean_ci(area: np.ndarray, rel: np.ndarray, n_bins: int, level: float = 0.95):
    """Per-bin mean, Student-t CI of the mean (NaN for n < 2) and count; two-pass variance for stability."""
    k = bin_index(area, n_bins)
    n = np.bincount(k, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(k, weights=rel, minlength=n_bins) / n
        ss = np.bincount(k, weights=(rel - mean[k]) ** 2, minlength=n_bins)
        se = np.sqrt(ss / (n - 1) / n)
        half = student_t.ppf((1 + level) / 2, np.maximum(n - 1, 1)) * np.where(n >= 2, se, np.nan)
    return mean, mean - half, mean + half, n


def median_ci(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Median and its distribution-free CI from order statistics: [x_(l), x_(n−l+1)] with l the binomial
    (n, ½) quantile of (1 − level)/2, coverage ≥ level. NaN bounds for n < 6 (no such pair exists)."""
    from scipy.stats import binom

    v = np.sort(np.asarray(values, dtype=np.float64))
    n = len(v)
    if n == 0:
        return np.nan, np.nan, np.nan
    lo_rank = int(binom.ppf((1 - level) / 2, n, 0.5))
    if lo_rank < 1:
        return float(np.median(v)), np.nan, np.nan
    return float(np.median(v)), float(v[lo_rank - 1]), float(v[n - lo_rank])


def _binned_median_ci(area: np.ndarray, rel: np.ndarray, n_bins: int, level: float = 0.95):
    k = bin_index(area, n_bins)
    out = np.array([median_ci(rel[k == b], level) for b in range(n_bins)]).reshape(n_bins, 3)
    return out[:, 0], out[:, 1], out[:, 2]


def occlusion_curves(occ: pd.DataFrame, n_bins: int = 10) -> tuple[pd.DataFrame, dict[str, int]]:
    """Fig. 2 data per bin of occluded area, per region: the relative logit change (f(x̃)−f(x))/|f(x)| as the
    paper plots it — its mean (ci_*: 95 % Student-t CI) and, robust to the units whose |f(x)| is near 0, its
    median (median_lo/hi: 95 % order-statistic CI) — and the change in logit units f(x̃)−f(x) (mean_delta,
    delta_lo/hi: 95 % Student-t CI), with the count.

    Object occlusion removes area = box fraction, context occlusion removes 1 − box fraction. Samples with
    |f(x)| < 1e-6 (relative change undefined) or an empty box (no object in view, nothing to occlude) are
    excluded and counted. Returns (DataFrame[region, bin, bin_lo, bin_hi, mean, ci_lo, ci_hi, median, median_lo,
    median_hi, mean_delta, delta_lo, delta_hi, count], {n_used, n_small_logit, n_empty_box}).
    """
    missing = [c for c in _OCC_COLUMNS if c not in occ]
    if missing:
        raise ValueError(f"occlusion table lacks columns {missing}; needs {list(_OCC_COLUMNS)}")
    if occ.empty:
        raise ValueError("occlusion table is empty")
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    v = {c: occ[c].to_numpy(dtype=np.float64) for c in _OCC_COLUMNS}
    bad = ~np.isfinite(np.stack(list(v.values()))).all(axis=0)
    if bad.any():
        raise ValueError(f"occlusion table has non-finite values in {int(bad.sum())} rows")
    f, logit = v["box_fraction"], v["logit"]
    small = np.abs(logit) < MIN_ABS_LOGIT
    empty = (f <= 0) & ~small
    keep = ~small & ~empty
    counts = {"n_used": int(keep.sum()), "n_small_logit": int(small.sum()), "n_empty_box": int(empty.sum())}
    if not keep.any():
        raise ValueError(f"occlusion table has no usable samples ({counts['n_small_logit']} with |f(x)| < "
                         f"{MIN_ABS_LOGIT:g}, {counts['n_empty_box']} with an empty box)")
    f, logit = f[keep], logit[keep]
    edges = np.arange(n_bins + 1) / n_bins
    parts = []
    for region, area, column in (("object", f, "logit_object_occluded"),
                                 ("context", 1 - f, "logit_context_occluded")):
        delta = v[column][keep] - logit
        mean, lo, hi, n = _binned_mean_ci(area, delta / np.abs(logit), n_bins)
        med, med_lo, med_hi = _binned_median_ci(area, delta / np.abs(logit), n_bins)
        dmean, dlo, dhi, _ = _binned_mean_ci(area, delta, n_bins)
        parts.append(pd.DataFrame({"region": region, "bin": np.arange(n_bins), "bin_lo": edges[:-1],
                                   "bin_hi": edges[1:], "mean": mean, "ci_lo": lo, "ci_hi": hi, "median": med,
                                   "median_lo": med_lo, "median_hi": med_hi, "mean_delta": dmean,
                                   "delta_lo": dlo, "delta_hi": dhi, "count": n}))
    return pd.concat(parts, ignore_index=True), counts


def plot_fig2(occ: pd.DataFrame, out_png: str | os.PathLike, out_pdf: str | os.PathLike, title: str,
              n_bins: int = 10) -> None:
    """Fig. 2: logit change vs occluded area, object vs context (see `occlusion_curves`).

    Top: the paper's relative change Δf/|f(x)|, as the per-bin MEDIAN with its 95 % CI — a mean would let the
    few units with |f(x)| near 0 dominate a bin. Middle: the mean Δf in logit units, which no small logit can
    inflate. The object curve below the context curve is the paper's evidence that the model relies on the
    object; the bottom panel gives every bin's count (large occluded areas have few units per region).
    """
    data, counts = occlusion_curves(occ, n_bins)
    width = 1 / n_bins
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(WIDTH_IN, FIG2_HEIGHT_IN), layout="constrained")
        ax, axd, axc = fig.subplots(3, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2, 1]})
        for j, (region, color) in enumerate((("object", "tab:red"), ("context", "tab:blue"))):
            d = data[data["region"] == region]
            x = ((d["bin_lo"] + d["bin_hi"]) / 2).to_numpy()
            ax.plot(x, d["median"], color=color, marker="o", ms=2.5, lw=1.0, label=f"{region} occluded")
            ax.fill_between(x, d["median_lo"], d["median_hi"], color=color, alpha=0.25, lw=0)
            axd.plot(x, d["mean_delta"], color=color, marker="o", ms=2.5, lw=1.0)
            axd.fill_between(x, d["delta_lo"], d["delta_hi"], color=color, alpha=0.25, lw=0)
            axc.bar(x + (j - 0.5) * width / 2.2, d["count"], width=width / 2.2, color=color, lw=0)
        for a in (ax, axd):
            a.axhline(0, color="0.5", lw=0.6)
        ax.set(xlim=(0, 1), ylabel="median Δf / |f(x)|",
               title=f"{title}\nN = {counts['n_used']}; excluded: {counts['n_small_logit']} with |f(x)| < "
                     f"{MIN_ABS_LOGIT:g}, {counts['n_empty_box']} empty box")
        axd.set(ylabel="mean Δf (logit)")
        handles, _ = ax.get_legend_handles_labels()
        ax.legend(handles=[*handles, Patch(color="0.5", alpha=0.4, lw=0, label="95 % CI")], loc="best",
                  frameon=False)
        axc.set(xlabel="occluded area (fraction of input)", ylabel="units")
        _save(fig, out_png, out_pdf)
