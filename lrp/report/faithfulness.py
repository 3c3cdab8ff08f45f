"""Table 3 and its figures: faithfulness by region perturbation beside localisation, and the sanity check.

Arranges numbers that lrp.evaluation computed (AOPC, paired-bootstrap CIs, rank correlations); draws on bare
`Figure`s as lrp.report.figures does.
"""

from __future__ import annotations

import os

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from lrp.report.figures import _RC, WIDTH_IN, _save
from lrp.report.table import (
    analyzer_names,
    latex_table,
    markdown_table,
    paired_note,
    printed,
    tied,
    write_formats,
)

RANDOM_LABEL = "Random map"
COLUMNS = {"morf": "AOPC MoRF", "lerf": "AOPC LeRF", "diff": "MoRF − LeRF"}
"""Table 3's measures: AOPC of the most-relevant-first curve (higher: more faithful), of the least-relevant-first
control (lower is better) and their difference (the area between the two curves)."""


def _labels() -> dict:
    names = analyzer_names()
    return {**dict(zip(names["analyzer"], names["label"])), "random": RANDOM_LABEL}


def build_table3(per_measure: dict[str, pd.DataFrame], table1: pd.DataFrame, attrs: dict) -> pd.DataFrame:
    """One row per map (analyzers and the random map), ordered by AOPC MoRF (descending); μ_w from Table 1
    beside (NaN for the random map). `per_measure` {morf|lerf|diff: per-analyzer table of paired_bootstrap}.
    Raises ValueError for an unknown measure or analyzer sets that differ."""
    unknown = sorted(set(per_measure) - set(COLUMNS))
    if unknown or not per_measure:
        raise ValueError(f"unknown or no measures {unknown}; expected some of {list(COLUMNS)}")
    sets = {m: frozenset(t["analyzer"]) for m, t in per_measure.items()}
    if len(set(sets.values())) != 1:
        raise ValueError(f"measures cover different maps: { {m: sorted(s) for m, s in sets.items()} }")
    labels = _labels()
    first = next(iter(per_measure.values()))
    t = pd.DataFrame({"analyzer": first["analyzer"], "label": [labels.get(a, a) for a in first["analyzer"]]})
    for m, per in per_measure.items():
        p = per.set_index("analyzer")
        t[m], t[f"{m}_lo"], t[f"{m}_hi"] = (t["analyzer"].map(p[c]) for c in ("value", "lo", "hi"))
        t[f"{m}_tied_with_best"] = t["analyzer"].map(p["tied_with_best"]) if m != "lerf" else False
    mu = table1.set_index("analyzer")
    for c in ("mu_w", "mu_w_lo", "mu_w_hi"):
        t[c] = t["analyzer"].map(mu[c]) if c in mu else np.nan
    t["n_units"] = first.attrs.get("n_units")
    for k in ("region", "steps", "fill"):
        t[k] = attrs.get(k)
    key = "morf" if "morf" in per_measure else next(iter(per_measure))
    t = t.sort_values(key, ascending=False, kind="stable").reset_index(drop=True)
    t.attrs.update(paired=dict(first.attrs), settings=dict(attrs))
    return t


def rank_correlation(table: pd.DataFrame, measure: str = "diff") -> tuple[float, int]:
    """Spearman's ρ across the analyzers between μ_w and a faithfulness measure (the random map left out),
    and the number of analyzers; NaN for fewer than three."""
    from lrp.evaluation.ranks import spearman

    d = table[table["analyzer"] != "random"].dropna(subset=["mu_w", measure])
    if len(d) < 3:
        return float("nan"), len(d)
    return float(spearman(d["mu_w"].to_numpy()[None], d[measure].to_numpy()[None])[0]), len(d)


def _cells(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    measures = [m for m in COLUMNS if m in table]
    head = ["Analyzer", *(COLUMNS[m] for m in measures), "μ_w"]
    body = []
    for _, r in table.iterrows():
        row = [r["label"]]
        for m in measures:
            cell = printed(r[m]) if pd.isna(r[f"{m}_lo"]) else f"{r[m]:.3f} [{r[f'{m}_lo']:.3f}, {r[f'{m}_hi']:.3f}]"
            row.append(cell + " *" if tied(r[f"{m}_tied_with_best"]) else cell)
        row.append("—" if pd.isna(r["mu_w"]) else f"{r['mu_w']:.3f}")
        body.append(row)
    return head, body


def footnote(table: pd.DataFrame) -> str:
    s = table.attrs.get("settings", {})
    first = table.iloc[0]
    n = first["n_units"]
    fill = {"mean": "the training-set mean", "uniform": "uniform noise"}.get(str(first["fill"]), str(first["fill"]))
    rho, k = rank_correlation(table) if "diff" in table else (float("nan"), 0)
    corr = f" Spearman ρ(μ_w, MoRF − LeRF) across the {k} analyzers = {rho:.2f}." if np.isfinite(rho) else ""
    return (f"Region perturbation (Samek et al. 2017) on N = {int(n) if not pd.isna(n) else '?'} units: "
            f"{int(first['steps'])} regions of {s.get('region', first['region'])}² px removed one per step, "
            f"replaced by {fill}; AOPC = mean over k = 0..L of f(x⁰) − f(xᵏ) in logit units (higher MoRF, lower "
            "LeRF: more faithful). Random map: uniform noise per unit, the chance level. 95 % paired-bootstrap "
            "CIs in brackets. " + paired_note({"alpha": table.attrs.get("paired", {}).get("alpha", 0.05)},
                                              "AOPC MoRF or MoRF − LeRF", ranks=False) + corr)


def to_markdown(table: pd.DataFrame, title: str) -> str:
    return markdown_table(title, *_cells(table), footnote(table))


def to_latex(table: pd.DataFrame, title: str) -> str:
    return latex_table(title, *_cells(table), footnote(table))


def write_table3(table: pd.DataFrame, csv_path, md_path, tex_path, title: str) -> None:
    """CSV (full precision), Markdown and LaTeX, each atomically."""
    write_formats(table, csv_path, md_path, tex_path, to_markdown(table, title) if not table.empty else "",
                  to_latex(table, title) if not table.empty else "", "write_table3")


def _colors(names):
    cmap = matplotlib.colormaps["tab20"]
    return {n: ("0.3" if n == "random" else cmap(i % 20)) for i, n in enumerate(names)}


def mean_curve(curves: np.ndarray, level_z: float = 1.96) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean of f(x⁰) − f(xᵏ) over units per step, and its normal-approximation 95 % CI."""
    d = curves[:, :1] - curves
    m = d.mean(0)
    se = d.std(0, ddof=1) / np.sqrt(len(d)) if len(d) > 1 else np.full_like(m, np.nan)
    return m, m - level_z * se, m + level_z * se


def plot_curves(curves: dict, out_png: str | os.PathLike, out_pdf: str | os.PathLike, title: str,
                attrs: dict) -> None:
    """The mean perturbation curves f(x⁰) − f(xᵏ) per map, MoRF (left) and LeRF (right), with 95 % CIs."""
    labels = _labels()
    orders = [o for o in ("morf", "lerf") if any(o in v for v in curves.values())]
    colors = _colors(list(curves))
    n = len(next(iter(next(iter(curves.values())).values())))
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(WIDTH_IN * 2, 3.4), layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, len(orders), sharey=True))
        for ax, order in zip(axes, orders):
            for name, per in curves.items():
                m, lo, hi = mean_curve(per[order])
                k = np.arange(len(m))
                ax.plot(k, m, color=colors[name], lw=1.4 if name == "random" else 1.0,
                        ls="--" if name == "random" else "-", label=labels.get(name, name))
                ax.fill_between(k, lo, hi, color=colors[name], alpha=0.15, lw=0)
            ax.axhline(0, color="0.6", lw=0.5)
            ax.set(xlabel=f"regions removed ({attrs.get('region')}² px each)",
                   title=f"{'most' if order == 'morf' else 'least'} relevant first ({order.upper()})")
        axes[0].set_ylabel("mean f(x⁰) − f(xᵏ) (target logit)")
        axes[-1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
        fig.suptitle(f"{title}\nN = {n} units per curve; bands: 95 % CI of the mean; logit units, no ratio")
        _save(fig, out_png, out_pdf)


def plot_scatter(table: pd.DataFrame, out_png: str | os.PathLike, out_pdf: str | os.PathLike, title: str) -> None:
    """Faithfulness (MoRF − LeRF) against localisation (μ_w) per analyzer, with both CIs; the random map as a
    horizontal line (it has no μ_w)."""
    measure = "diff" if "diff" in table else "morf"
    d = table[table["analyzer"] != "random"]
    rho, k = rank_correlation(table, measure)
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(WIDTH_IN, 3.4), layout="constrained")
        ax = fig.subplots()
        ax.errorbar(d["mu_w"], d[measure], xerr=[d["mu_w"] - d["mu_w_lo"], d["mu_w_hi"] - d["mu_w"]],
                    yerr=[d[measure] - d[f"{measure}_lo"], d[f"{measure}_hi"] - d[measure]], fmt="o", ms=3,
                    lw=0.7, color="tab:blue", ecolor="0.5")
        # one label per point (coinciding analyzers, e.g. LRP_z and LRP_ε, share it), alternately above and
        # below in x order so that neighbours do not overwrite each other
        points = d.groupby([d["mu_w"].round(3), d[measure].round(3)], sort=True)["label"].agg(" = ".join)
        for i, ((x, y), label) in enumerate(points.items()):
            ax.annotate(label, (x, y), fontsize=5.5, xytext=(3, 3 if i % 2 == 0 else -8),
                        textcoords="offset points")
        ax.margins(x=0.2, y=0.1)
        rnd = table[table["analyzer"] == "random"]
        if len(rnd):
            ax.axhline(float(rnd[measure].iloc[0]), color="0.3", ls="--", lw=0.8, label=RANDOM_LABEL)
            ax.legend(loc="best", frameon=False)
        corr = f"Spearman ρ = {rho:.2f} over {k} analyzers" if np.isfinite(rho) else f"{k} analyzers"
        ax.set(xlabel="μ_w (localisation, Table 1)", ylabel=f"AOPC {COLUMNS[measure]} (faithfulness)",
               title=f"{title}\n{corr}; bars: 95 % CIs")
        _save(fig, out_png, out_pdf)


def sanity_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Mean ρ and ρ(|·|) per (stage, layer, analyzer) with the number of units that have a value."""
    g = df.groupby(["stage", "layer", "analyzer"], sort=False)
    return g.agg(spearman=("spearman", "mean"), spearman_abs=("spearman_abs", "mean"),
                 n=("spearman", "count")).reset_index()


def plot_sanity(df: pd.DataFrame, out_png: str | os.PathLike, out_pdf: str | os.PathLike, title: str) -> None:
    """Mean Spearman ρ between the trained and the cascadingly randomised model's maps, per analyzer."""
    s = sanity_summary(df)
    labels = _labels()
    names = list(dict.fromkeys(s["analyzer"]))
    colors = _colors(names)
    layers = s.drop_duplicates("stage").sort_values("stage")
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(WIDTH_IN * 2, 3.4), layout="constrained")
        axes = fig.subplots(1, 2, sharey=True)
        for ax, col, what in zip(axes, ("spearman", "spearman_abs"), ("ρ of the maps", "ρ of |maps|")):
            for name in names:
                d = s[s["analyzer"] == name].sort_values("stage")
                ax.plot(d["stage"], d[col], marker="o", ms=2.5, lw=1.0, color=colors[name],
                        label=labels.get(name, name))
            ax.set_xticks(layers["stage"], layers["layer"], rotation=60, ha="right", fontsize=5.5)
            ax.axhline(0, color="0.6", lw=0.5)
            ax.set(xlabel="randomised down to layer (output first)", title=what, ylim=(-1.05, 1.05))
        axes[0].set_ylabel("mean Spearman ρ with the trained model's map")
        axes[-1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
        n = int(df["unit"].nunique()) if "unit" in df else int(df["sample_id"].nunique())
        fig.suptitle(f"{title}\nN = {n} units; a method that ignores the model stays near 1")
        _save(fig, out_png, out_pdf)
