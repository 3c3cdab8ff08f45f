"""Table 2: localisation beyond μ — the pointing game, rank accuracy, top-k intersection and the energy pointing
game per analyzer, with paired-bootstrap CIs and the analyzers not distinguishable from the best marked (*).

A module beside Table 1's (`lrp.report.table`): it only arranges numbers that `lrp.evaluation` computed.
"""

from __future__ import annotations

import os

import pandas as pd

from lrp.report.table import (
    analyzer_names,
    latex_table,
    markdown_table,
    paired_note,
    printed,
    tied,
    write_formats,
)

#: column -> (header, what the footnote calls it)
MEASURES = {
    "pointing": ("pointing game", "hit rate (mean of per-class rates; TorchRay's protocol, 15 px)"),
    "rank_accuracy": ("rank accuracy", "share of the top-|box| pixels inside the box"),
    "topk": ("top-k", "share of the top-k pixels inside the box"),
    "energy": ("energy PG", "Σ(L − min L) inside / total"),
}


def build_table2(per_measure: dict[str, pd.DataFrame], pointing_pairs: dict[str, float], top_k: int | None,
                 tolerance: float) -> pd.DataFrame:
    """One row per analyzer, ordered by the pointing game (descending). `per_measure` {measure: per-analyzer
    table of lrp.evaluation.paired.paired_bootstrap}; `pointing_pairs` {analyzer: per-pair hit rate}.
    Raises ValueError for an unknown measure or analyzer sets that differ between measures."""
    unknown = sorted(set(per_measure) - set(MEASURES))
    if unknown or not per_measure:
        raise ValueError(f"unknown or no measures {unknown}; expected some of {list(MEASURES)}")
    sets = {m: set(t["analyzer"]) for m, t in per_measure.items()}
    if len({frozenset(v) for v in sets.values()}) != 1:
        raise ValueError(f"measures cover different analyzers: {sets}")
    labels = dict(zip(analyzer_names()["analyzer"], analyzer_names()["label"]))
    first = next(iter(per_measure.values()))
    t = pd.DataFrame({"analyzer": first["analyzer"], "label": [labels.get(a, a) for a in first["analyzer"]]})
    for m, per in per_measure.items():
        p = per.set_index("analyzer")
        t[m], t[f"{m}_lo"], t[f"{m}_hi"] = (t["analyzer"].map(p[c]) for c in ("value", "lo", "hi"))
        t[f"{m}_tied_with_best"] = t["analyzer"].map(p["tied_with_best"])
        t[f"{m}_n_units"] = per.attrs.get("n_units")
    t["pointing_pairs"] = t["analyzer"].map(pointing_pairs)
    t["top_k"], t["tolerance"] = top_k, tolerance  # columns too: the CSV keeps what the footnote says
    key = "pointing" if "pointing" in per_measure else next(iter(per_measure))
    t = t.sort_values(key, ascending=False, kind="stable").reset_index(drop=True)
    t.attrs.update(top_k=top_k, tolerance=tolerance, paired=dict(first.attrs))
    return t


def _cells(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    measures = [m for m in MEASURES if m in table]
    head = ["Analyzer", *(MEASURES[m][0] for m in measures)]
    if "pointing_pairs" in table:
        head.append("pointing (per pair)")
    body = []
    for _, r in table.iterrows():
        row = [r["label"]]
        for m in measures:
            cell = printed(r[m]) if pd.isna(r[f"{m}_lo"]) else f"{r[m]:.3f} [{r[f'{m}_lo']:.3f}, {r[f'{m}_hi']:.3f}]"
            row.append(cell + " *" if tied(r[f"{m}_tied_with_best"]) else cell)
        if "pointing_pairs" in table:
            row.append(printed(r["pointing_pairs"]))
        body.append(row)
    return head, body


def footnote(table: pd.DataFrame) -> str:
    measures = [m for m in MEASURES if m in table]
    n = {m: int(table[f"{m}_n_units"].iloc[0]) for m in measures if not pd.isna(table[f"{m}_n_units"].iloc[0])}
    what = "; ".join(f"{MEASURES[m][0]}: {MEASURES[m][1]}" + (f", N = {n[m]}" if m in n else "") for m in measures)
    k, tol = (table[c].iloc[0] if c in table and not pd.isna(table[c].iloc[0]) else None
              for c in ("top_k", "tolerance"))
    extra = (f" k = {int(k)} pixels." if k else "") + (f" Pointing tolerance {tol:g} px." if tol is not None else "")
    return (f"{what}.{extra} 95 % paired-bootstrap CIs in brackets. The Baseline row is the uniform map (its "
            "point: the image centre, TorchRay's `center`). " + paired_note(
                {"alpha": table.attrs.get("paired", {}).get("alpha", 0.05)}, "value of the column", ranks=False)
            + " n/a: a value on fewer than half the units (e.g. constant maps), left out of the comparison.")


def to_markdown(table: pd.DataFrame, title: str) -> str:
    return markdown_table(title, *_cells(table), footnote(table))


def to_latex(table: pd.DataFrame, title: str) -> str:
    return latex_table(title, *_cells(table), footnote(table))


def write_table2(table: pd.DataFrame, csv_path: str | os.PathLike, md_path: str | os.PathLike,
                 tex_path: str | os.PathLike, title: str) -> None:
    """CSV (full precision), Markdown and LaTeX, each atomically."""
    write_formats(table, csv_path, md_path, tex_path, to_markdown(table, title) if not table.empty else "",
                  to_latex(table, title) if not table.empty else "", "write_table2")
