"""Figures of Table 2's measures: the pairwise-difference matrix of a paired bootstrap, and the pointing game per
class. Drawn on bare matplotlib Figures (no pyplot state), saved as in `lrp.report.figures`."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from lrp.report.figures import _RC, DPI, _save  # noqa: F401  (DPI: the same pixel size as Figs. 2-3)

_PAIR_COLUMNS = ("a", "b", "diff", "p_holm", "significant")


def plot_pairwise(pairwise: pd.DataFrame, table: pd.DataFrame, out_png: str | os.PathLike,
                  out_pdf: str | os.PathLike, title: str, what: str = "μ_w") -> None:
    """Matrix of differences row − column (colour), analyzers in `table`'s order (best first); a dot marks a
    difference that is significant after Holm. Raises ValueError if the pairwise table lacks its columns or
    names analyzers the table does not have."""
    import matplotlib

    missing = [c for c in _PAIR_COLUMNS if c not in pairwise]
    if missing:
        raise ValueError(f"pairwise table lacks columns {missing} (expected lrp.evaluation.paired output)")
    order = list(table["analyzer"])
    labels = dict(zip(table["analyzer"], table["label"]))
    unknown = sorted((set(pairwise["a"]) | set(pairwise["b"])) - set(order))
    if unknown:
        raise ValueError(f"pairwise table names analyzers {unknown} that the table does not have")
    pos = {a: i for i, a in enumerate(order)}
    n = len(order)
    diff, sig = np.full((n, n), np.nan), np.zeros((n, n), bool)
    for _, r in pairwise.iterrows():
        i, j = pos[r["a"]], pos[r["b"]]
        diff[i, j], diff[j, i] = r["diff"], -r["diff"]
        sig[i, j] = sig[j, i] = str(r["significant"]).lower() in ("true", "1")
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(3.5, 3.4), layout="constrained")
        ax = fig.subplots()
        lim = np.nanmax(np.abs(diff)) if np.isfinite(diff).any() else 1.0
        im = ax.imshow(diff, cmap="RdBu_r", vmin=-lim, vmax=lim)
        ys, xs = np.nonzero(sig)
        ax.scatter(xs, ys, s=4, c="k", marker="o", linewidths=0)
        ticks = [labels[a] for a in order]
        ax.set_xticks(range(n), ticks, rotation=90)
        ax.set_yticks(range(n), ticks)
        ax.set_title(title)
        fig.colorbar(im, ax=ax, shrink=0.8, label=f"{what}: row − column")
        ax.set_xlabel("• significant after Holm (paired bootstrap)")
        _save(fig, out_png, out_pdf)


def plot_pointing_per_class(frames: dict[str, pd.DataFrame], class_names: list, out_png: str | os.PathLike,
                            out_pdf: str | os.PathLike, title: str) -> None:
    """Hit rate per class (columns) and analyzer (rows, best overall first): `frames` {label: metrics CSV
    with class_index and pointing_hit (NaN: skipped pair)}. Raises ValueError without pointing_hit."""
    import matplotlib

    rates, overall = {}, {}
    for label, df in frames.items():
        if "pointing_hit" not in df or "class_index" not in df:
            raise ValueError(f"metrics of {label!r} lack pointing_hit / class_index")
        g = df.dropna(subset=["pointing_hit"]).groupby("class_index")["pointing_hit"].mean()
        rates[label] = g
        overall[label] = g.mean()
    order = sorted(rates, key=lambda k: -np.nan_to_num(overall[k], nan=-1))
    classes = sorted(set().union(*(r.index for r in rates.values()))) if rates else []
    m = np.array([[rates[k].get(c, np.nan) for c in classes] for k in order])
    names = [class_names[c] if 0 <= c < len(class_names) else str(c) for c in classes]
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(max(3.5, 0.22 * len(classes) + 1.8), 0.2 * len(order) + 1.4), layout="constrained")
        ax = fig.subplots()
        im = ax.imshow(m, cmap="viridis", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(classes)), names, rotation=90)
        ax.set_yticks(range(len(order)), [f"{k} ({overall[k]:.2f})" for k in order])
        ax.set_title(title)
        fig.colorbar(im, ax=ax, shrink=0.8, label="pointing-game hit rate")
        _save(fig, out_png, out_pdf)
