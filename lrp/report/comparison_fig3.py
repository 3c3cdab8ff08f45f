"""Fig. 3 across models: for each analyzer, mean μ by box size on every model of a comparison, one panel per
analyzer with one curve per model and the uniform baseline (μ = box size) as the diagonal.

Why a panel per analyzer: the question is whether a method's localisation depends on the object's size in the
same way on both architectures; a panel per model (each dataset's own Fig. 3) makes the reader compare curves
across figures. Bins with fewer than `min_count` units are not drawn, as in Fig. 3.
"""

from __future__ import annotations

import math
import os

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from lrp.report.figures import _RC, _check_curve, _save

N_COLS = 4
PANEL_IN = 1.75


def plot_comparison_fig3(curves: dict[str, dict[str, pd.DataFrame]], out_png: str | os.PathLike,
                         out_pdf: str | os.PathLike, title: str, min_count: int = 20) -> None:
    """`curves` {analyzer label: {model: lrp.evaluation.metrics.size_curve frame}}, every curve on the same bins.
    Raises ValueError for no curves, a malformed curve or curves on different bins."""
    if not curves or not any(curves.values()):
        raise ValueError("plot_comparison_fig3() got no curves")
    first = next(c for by_model in curves.values() for c in by_model.values())
    edges = first["bin_lo"].to_numpy(), first["bin_hi"].to_numpy()
    for label, by_model in curves.items():
        for model, df in by_model.items():
            _check_curve(f"{label} · {model}", df)
            if not (np.array_equal(df["bin_lo"].to_numpy(), edges[0])
                    and np.array_equal(df["bin_hi"].to_numpy(), edges[1])):
                raise ValueError(f"size curve {label!r} of model {model!r} uses other bins than the first curve")
    x = (edges[0] + edges[1]) / 2
    models = list(dict.fromkeys(m for by_model in curves.values() for m in by_model))
    n_rows = math.ceil(len(curves) / N_COLS)
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(PANEL_IN * N_COLS, PANEL_IN * n_rows + 0.8), layout="constrained")
        axes = np.atleast_2d(fig.subplots(n_rows, N_COLS, sharex=True, sharey=True, squeeze=False))
        colors = matplotlib.colormaps["tab10"].colors
        for ax, (label, by_model) in zip(axes.flat, curves.items()):
            ax.plot(x, x, color="k", ls=(0, (1, 1)), lw=0.8)
            for j, model in enumerate(models):
                if model in by_model:
                    df = by_model[model]
                    ok = df["count"].to_numpy() >= min_count
                    ax.plot(x, np.where(ok, df["mean_mu"].to_numpy(dtype=float), np.nan), color=colors[j % 10],
                            lw=1.0)
            ax.set_title(label)
            for v in (0.25, 0.5):
                ax.axvline(v, color="0.6", lw=0.5, ls="--", zorder=0)
        for ax in axes.flat[len(curves):]:
            ax.set_visible(False)
        for ax in axes[-1]:
            ax.set_xlabel("box size")
        for ax in axes[:, 0]:
            ax.set_ylabel("mean μ")
        axes[0, 0].set(xlim=(0, 1), ylim=(0, 1.02))
        handles = [matplotlib.lines.Line2D([], [], color=colors[j % 10], lw=1.0) for j in range(len(models))]
        handles.append(matplotlib.lines.Line2D([], [], color="k", ls=(0, (1, 1)), lw=0.8))
        fig.legend(handles, [*models, "Baseline (uniform)"], loc="outside lower center", ncol=len(models) + 1,
                   frameon=False)
        fig.suptitle(f"{title}\nmean μ by box size (bins with < {min_count} units not drawn)")
        _save(fig, out_png, out_pdf)
