"""Which method, on which model: the datasets of one comparison (the same units, one model each) side by side.

Per analyzer and model: μ_w (Table 1), the pointing game (Table 2) and AOPC MoRF − LeRF (Table 3) with their CIs
and the analyzer's rank within its model; per pair of models, Kendall's τ between their μ_w rankings; and, when
given, each analyzer's paired difference of μ_w between the first model and each other one
(lrp.evaluation.model_pairs). Otherwise it arranges numbers the tables computed.
"""

from __future__ import annotations

import os

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from lrp.report.figures import _RC, WIDTH_IN, _save
from lrp.report.table import latex_table, markdown_table, write_formats

#: measure -> (table, value column, header)
MEASURES = {"mu_w": ("table1", "mu_w", "μ_w"), "pointing": ("table2", "pointing", "pointing game"),
            "faithfulness": ("table3", "diff", "AOPC MoRF − LeRF")}


def build_comparison(tables: dict[str, dict[str, pd.DataFrame]], models: dict[str, str],
                     model_pairs: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (analyzer, model): `tables` {dataset: {"table1"|"table2"|"table3": frame}} (a dataset may
    lack Table 2 or 3), `models` {dataset: model name}. Analyzers are those every dataset's Table 1 has, in the
    first dataset's Table 1 order. `model_pairs` (lrp.evaluation.model_pairs.paired_model_differences): its rows
    first dataset vs another become that dataset's `mu_w_diff*` columns (NaN on the first dataset's rows).
    Raises ValueError for fewer than two datasets or no common analyzer."""
    if len(tables) < 2:
        raise ValueError(f"a comparison needs at least two datasets, got {list(tables)}")
    names = [set(t["table1"]["analyzer"]) for t in tables.values()]
    first = next(iter(tables.values()))["table1"]
    analyzers = [a for a in first["analyzer"] if all(a in n for n in names)]
    if not analyzers:
        raise ValueError(f"the datasets {list(tables)} have no analyzer in common")
    labels = dict(zip(first["analyzer"], first["label"]))
    rows = []
    for dataset, t in tables.items():
        for a in analyzers:
            rows.append(_row(a, labels.get(a, a), dataset, models[dataset], t))
    out = pd.DataFrame(rows)
    for m in MEASURES:  # ranks among the analyzers that have the measure on every model, so ranks compare
        common = out.groupby("analyzer")[m].apply(lambda v: bool(v.notna().all()))
        ranked = out["analyzer"].map(common)
        out[f"{m}_rank"] = out[m].where(ranked).groupby(out["dataset"]).rank(ascending=False, method="min")
        out[f"{m}_rank"] = out[f"{m}_rank"].astype("Int64")
    if all("table3" in t and RANDOM in set(t["table3"]["analyzer"]) for t in tables.values()):
        # the random map: the chance level of AOPC on each model (AOPC scales differ between models); unranked
        extra = pd.DataFrame([_row(RANDOM, "Random map", d, models[d], t) for d, t in tables.items()])
        for m in MEASURES:
            extra[f"{m}_rank"] = pd.array([pd.NA] * len(extra), dtype="Int64")
        out = pd.concat([out, extra], ignore_index=True)
    return _with_model_pairs(out, model_pairs, next(iter(tables)))


DIFF = ("mu_w_diff", "mu_w_diff_lo", "mu_w_diff_hi", "mu_w_diff_p_holm", "mu_w_diff_significant")


def _with_model_pairs(out: pd.DataFrame, model_pairs: pd.DataFrame | None, first: str) -> pd.DataFrame:
    if model_pairs is None:
        return out
    vs_first = model_pairs[model_pairs["a"] == first].rename(columns={"b": "dataset"})
    cols = dict(zip(("diff", "diff_lo", "diff_hi", "p_holm", "significant"), DIFF))
    vs_first = vs_first[["analyzer", "dataset", *cols]].rename(columns=cols)
    out = out.merge(vs_first, on=["analyzer", "dataset"], how="left")
    out["mu_w_diff_significant"] = out["mu_w_diff_significant"].astype("boolean")
    return out


RANDOM = "random"


def _row(analyzer: str, label: str, dataset: str, model: str, t: dict) -> dict:
    row = {"analyzer": analyzer, "label": label, "dataset": dataset, "model": model}
    for m, (key, col, _) in MEASURES.items():
        frame = t.get(key)
        r = frame.set_index("analyzer").loc[analyzer] if frame is not None and analyzer in set(frame["analyzer"]) \
            else None
        for suffix in ("", "_lo", "_hi"):
            row[f"{m}{suffix}"] = float(r[col + suffix]) if r is not None and col + suffix in r else np.nan
    return row


def rank_agreement(comparison: pd.DataFrame, measure: str = "mu_w") -> pd.DataFrame:
    """Kendall's τ between the analyzers' `measure` rankings of every pair of models. The uniform baseline and
    the random map are left out (their values do not depend on the model and would count as agreement); NaN for
    fewer than three analyzers."""
    from scipy.stats import kendalltau

    kept = comparison[~comparison["analyzer"].isin(("baseline", RANDOM))]
    wide = kept.pivot(index="analyzer", columns="dataset", values=measure)
    datasets = list(dict.fromkeys(comparison["dataset"]))
    rows = []
    for i, a in enumerate(datasets):
        for b in datasets[i + 1:]:
            both = wide[[a, b]].dropna()
            tau = float(kendalltau(both[a], both[b]).statistic) if len(both) >= 3 else np.nan
            rows.append({"a": a, "b": b, "kendall_tau": tau, "n_analyzers": len(both)})
    return pd.DataFrame(rows, columns=["a", "b", "kendall_tau", "n_analyzers"])


def _cell(r, m: str) -> str:
    if pd.isna(r[m]):
        return "—"
    ci = "" if pd.isna(r[f"{m}_lo"]) else f" [{r[f'{m}_lo']:.3f}, {r[f'{m}_hi']:.3f}]"
    return f"{r[m]:.3f}{ci}" + ("" if pd.isna(r[f"{m}_rank"]) else f" ({r[f'{m}_rank']})")


def _diff_cell(r) -> str:
    if pd.isna(r["mu_w_diff"]):
        return "—"
    return (f"{r['mu_w_diff']:+.3f} [{r['mu_w_diff_lo']:+.3f}, {r['mu_w_diff_hi']:+.3f}]"
            + (" †" if not pd.isna(r["mu_w_diff_significant"]) and bool(r["mu_w_diff_significant"]) else ""))


def _cells(comparison: pd.DataFrame):
    datasets = list(dict.fromkeys(comparison["dataset"]))
    models = dict(zip(comparison["dataset"], comparison["model"]))
    measures = [m for m in MEASURES if comparison[m].notna().any()]
    diffs = datasets[1:] if "mu_w_diff" in comparison else []
    head = ["Analyzer", *(f"{MEASURES[m][2]} · {models[d]}" for m in measures for d in datasets),
            *(f"Δμ_w {models[d]} − {models[datasets[0]]}" for d in diffs)]
    body = []
    for a, g in comparison.groupby("analyzer", sort=False):
        by = g.set_index("dataset")
        body.append([g["label"].iloc[0], *(_cell(by.loc[d], m) for m in measures for d in datasets),
                     *(_diff_cell(by.loc[d]) for d in diffs)])
    return head, body


def footnote(comparison: pd.DataFrame) -> str:
    tau = rank_agreement(comparison)
    pairs = "; ".join(f"{r['a']} vs {r['b']}: τ = "
                      + ("n/a" if pd.isna(r["kendall_tau"]) else f"{r['kendall_tau']:.2f}")
                      + f" over {r['n_analyzers']} analyzers" for _, r in tau.iterrows())
    diff = ("" if "mu_w_diff" not in comparison else
            " Δμ_w: the analyzer's μ_w on a model minus on the first, paired bootstrap over the units both score "
            "[95 % CI]; †: a real difference (Holm-corrected over every analyzer and pair of models, α = 0.05).")
    return ("Each cell: value [95 % CI] (rank within the model, among the analyzers every model has the value "
            "for). μ_w from Table 1, the pointing game from Table 2, AOPC MoRF − LeRF from Table 3 of each dataset, "
            "on the same units; the random map is Table 3's chance level. Kendall τ of the μ_w rankings (baseline "
            f"left out): {pairs}.{diff}")


def to_markdown(comparison: pd.DataFrame, title: str) -> str:
    return markdown_table(title, *_cells(comparison), footnote(comparison), escape_star=False)


def to_latex(comparison: pd.DataFrame, title: str) -> str:
    return latex_table(title, *_cells(comparison), footnote(comparison))


def write_comparison(comparison: pd.DataFrame, csv_path, md_path, tex_path, title: str) -> None:
    write_formats(comparison, csv_path, md_path, tex_path, to_markdown(comparison, title),
                  to_latex(comparison, title), "write_comparison")


def plot_comparison(comparison: pd.DataFrame, out_png: str | os.PathLike, out_pdf: str | os.PathLike,
                    title: str) -> None:
    """One panel per measure: every analyzer's value and CI, one marker per model."""
    measures = [m for m in MEASURES if comparison[m].notna().any()]
    datasets = list(dict.fromkeys(comparison["dataset"]))
    models = dict(zip(comparison["dataset"], comparison["model"]))
    order = list(dict.fromkeys(comparison["analyzer"]))
    labels = [comparison.loc[comparison["analyzer"] == a, "label"].iloc[0] for a in order]
    y = np.arange(len(order))
    markers = "osD^v<>"
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(WIDTH_IN * len(measures) * 0.8, 0.22 * len(labels) + 1.4), layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, len(measures), sharey=True))
        for ax, m in zip(axes, measures):
            for j, d in enumerate(datasets):
                g = comparison[comparison["dataset"] == d].set_index("analyzer").reindex(order)
                off = (j - (len(datasets) - 1) / 2) * 0.25
                err = np.array([g[m] - g[f"{m}_lo"], g[f"{m}_hi"] - g[m]])
                ax.errorbar(g[m], y + off, xerr=np.where(np.isfinite(err), err, 0), fmt=markers[j % len(markers)],
                            ms=3, lw=0.7, label=models[d])
            ax.set(xlabel=MEASURES[m][2])
            ax.grid(axis="x", lw=0.3, alpha=0.5)
        axes[0].set_yticks(y, labels)
        axes[0].invert_yaxis()
        axes[-1].legend(loc="best", frameon=False)
        fig.suptitle(f"{title}\nbars: 95 % CIs; the same units for every model")
        _save(fig, out_png, out_pdf)
