"""Table 1: our μ summaries beside the paper's numbers, written as CSV (full precision), Markdown and LaTeX.

Why a separate module: the comparison with the paper (name mapping, ranks, Kendall τ) is reporting, not
measurement; `lrp.evaluation.metrics` produces the numbers, this module only arranges and formats them.
"""

from __future__ import annotations

import math
import os
from importlib import resources

import numpy as np
import pandas as pd

from lrp.io import atomic_path

STATS = ("mu_w", "mu_le_0.25", "mu_le_0.5", "mu")
PAPER_DATASETS = ("voc2007", "imagenet")
_HEAD_MD = {"mu_w": "μ_w", "mu_le_0.25": "μ_≤0.25", "mu_le_0.5": "μ_≤0.5", "mu": "μ"}
_HEAD_TEX = {"mu_w": r"$\mu_w$", "mu_le_0.25": r"$\mu_{\leq 0.25}$", "mu_le_0.5": r"$\mu_{\leq 0.5}$",
             "mu": r"$\mu$"}
_TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                "α": r"$\alpha$", "β": r"$\beta$", "ε": r"$\varepsilon$", "μ": r"$\mu$",
                "♭": r"$\flat$", "≤": r"$\leq$", "τ": r"$\tau$", "–": "--", "±": r"$\pm$"}


def _read_csv(name: str) -> pd.DataFrame:
    with resources.files("lrp").joinpath("data", name).open("r", encoding="utf-8") as fh:
        return pd.read_csv(fh, dtype=str, keep_default_na=False)


def analyzer_names() -> pd.DataFrame:
    """analyzer -> paper_name ('' if the paper has no such row) and display label, for every registered
    analyzer (the built-ins in the paper's order, then your plugins'), from the one registry, lrp.composites."""
    from lrp.composites import REGISTRY

    rows = [{"analyzer": n, "paper_name": a.paper_name, "label": a.label or n} for n, a in REGISTRY.items()]
    return pd.DataFrame(rows, columns=["analyzer", "paper_name", "label"])


def paper_table(dataset: str) -> pd.DataFrame:
    """The paper's Table 1 rows of one dataset ('voc2007' or 'imagenet'), values as float."""
    if dataset not in PAPER_DATASETS:
        raise ValueError(f"paper_dataset must be one of {PAPER_DATASETS} or None, got {dataset!r}")
    t = _read_csv("table1_paper.csv")
    t = t[t["dataset"] == dataset].copy()
    for c in STATS:
        t[c] = t[c].astype(float)
    return t.reset_index(drop=True)


def build_table1(summaries: dict[str, dict], paper_dataset: str | None, n_samples: int,
                 paired: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per analyzer, ordered by μ_w descending (as the paper), with the paper's row joined.

    `n_samples` is the number of evaluated samples; every summary must account for all of them
    (n_used + n_nan), so a table never silently mixes runs over different sample sets. `paired`: the
    per-analyzer result of `lrp.evaluation.paired.paired_bootstrap` on μ_w, joined as `tied_with_best` and
    `p_holds_rank` (the Markdown, LaTeX and HTML tables mark the tied analyzers with *).
    """
    if not summaries:
        raise ValueError("build_table1() got no summaries")
    names = analyzer_names().set_index("analyzer")
    unknown = sorted(set(summaries) - set(names.index))
    if unknown:
        raise ValueError(f"unknown analyzer(s) {unknown}; known: {sorted(names.index)}")
    rows = []
    for analyzer, s in summaries.items():
        missing = [k for k in (*STATS, "n_used", "n_nan") if k not in s]
        if missing:
            raise ValueError(f"summary of {analyzer!r} lacks {missing} "
                             "(expected lrp.evaluation.metrics.summarize output)")
        if s["n_used"] + s["n_nan"] != n_samples:
            raise ValueError(f"summary of {analyzer!r} covers {s['n_used']} + {s['n_nan']} NaN samples, "
                             f"but n_samples = {n_samples}")
        row = {"analyzer": analyzer, "label": names.at[analyzer, "label"]}
        for k in STATS:
            row[k], row[f"{k}_lo"], row[f"{k}_hi"] = s[k], s.get(f"{k}_lo", np.nan), s.get(f"{k}_hi", np.nan)
        row.update({k: s[k] for k in ("n_used", "n_nan", "n_le_0.25", "n_le_0.5", "n_all_le_0.25",
                                      "n_all_le_0.5") if k in s})
        rows.append(row)
    t = pd.DataFrame(rows).sort_values("mu_w", ascending=False, na_position="last", kind="stable")
    t = t.reset_index(drop=True)
    if paired is not None:
        p = paired.set_index("analyzer")
        t["tied_with_best"] = t["analyzer"].map(p["tied_with_best"]).astype("boolean")
        t["p_holds_rank"] = t["analyzer"].map(p["p_holds_rank"])
        t.attrs["paired"] = dict(paired.attrs)
    if paper_dataset is None:
        return t
    paper = paper_table(paper_dataset)
    paper["paper_rank"] = paper["mu_w"].rank(ascending=False, method="min").astype(int)
    paper = paper.rename(columns={c: f"paper_{c}" for c in STATS})
    t["paper_name"] = t["analyzer"].map(names["paper_name"])
    t = t.merge(paper[["analyzer_paper", *[f"paper_{c}" for c in STATS], "paper_rank"]],
                how="left", left_on="paper_name", right_on="analyzer_paper").drop(columns=["analyzer_paper"])
    t["paper_rank"] = t["paper_rank"].astype("Int64")
    t["rank"] = t["mu_w"].rank(ascending=False, method="min").astype("Int64")
    t.attrs["paper_dataset"] = paper_dataset
    return t


def rank_agreement(table: pd.DataFrame) -> dict:
    """Kendall τ between our μ_w and the paper's μ_w over analyzers present in both (NaN if < 2)."""
    if "paper_mu_w" not in table:
        raise ValueError("table has no paper columns: build it with paper_dataset='voc2007' or 'imagenet'")
    both = table.dropna(subset=["mu_w", "paper_mu_w"])
    n = len(both)
    from scipy.stats import (
        kendalltau,  # here, not at the top: every Snakemake start imports this module
    )

    tau = float(kendalltau(both["mu_w"], both["paper_mu_w"]).statistic) if n >= 2 else math.nan
    return {"kendall_tau": tau, "n_common": n}


def printed(v) -> str:
    """One Table 1 value as every Table 1 output prints it (3 decimals; n/a when undefined)."""
    return "n/a" if v is None or pd.isna(v) else f"{v:.3f}"


def _fmt(v, lo=None, hi=None) -> str:
    if v is None or pd.isna(v) or lo is None or pd.isna(lo) or pd.isna(hi):
        return printed(v)
    return f"{v:.3f} [{lo:.3f}, {hi:.3f}]"


def tex_escape(text: str) -> str:
    """Escape LaTeX specials and map the Greek/music glyphs of our labels to math mode."""
    parts = str(text).split("μ_w")  # keep the subscript inside math: $\mu_w$, not $\mu$\_w
    return r"$\mu_w$".join("".join(_TEX_SPECIAL.get(ch, ch) for ch in part) for part in parts)


def _cells(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and body cells shared by Markdown and LaTeX (plain text; callers escape)."""
    paper = "paper_mu_w" in table
    head = ["Analyzer"]
    for k in STATS:
        head.append(k)
        if paper:
            head.append(f"paper_{k}")
    if paper:
        head += ["rank", "paper_rank"]
    marks = "tied_with_best" in table
    if marks:
        head.append("P(rank)")
    body = []
    for _, r in table.iterrows():
        row = [r["label"]]
        for k in STATS:
            cell = _fmt(r[k], r[f"{k}_lo"], r[f"{k}_hi"])
            row.append(cell + " *" if k == "mu_w" and marks and tied(r["tied_with_best"]) else cell)
            if paper:
                row.append("–" if pd.isna(r[f"paper_{k}"]) else _fmt(r[f"paper_{k}"]))
        if paper:
            row += ["–" if pd.isna(r[c]) else str(int(r[c])) for c in ("rank", "paper_rank")]
        if marks:
            row.append("–" if pd.isna(r["p_holds_rank"]) else f"{r['p_holds_rank']:.2f}")
        body.append(row)
    return head, body


def _footnote(table: pd.DataFrame) -> str:
    n = int(table["n_used"].iloc[0] + table["n_nan"].iloc[0])  # equal for all rows (build_table1 checks)
    nan = ", ".join(f"{lab} {int(k)}" for lab, k in zip(table["label"], table["n_nan"]) if k)
    text = (f"N = {n} samples; 95 % percentile-bootstrap CIs in brackets. Samples with an empty box or no "
            f"positive relevance are excluded (NaN): {nan or 'none'}.")
    if "n_all_le_0.25" in table:
        r = table.iloc[0]  # equal for all rows: counted over every unit, NaN or not
        text += (f" Samples with box fraction ≤0.25: {int(r['n_all_le_0.25'])}, ≤0.5: {int(r['n_all_le_0.5'])}"
                 " (an analyzer's NaN samples are left out of its μ_≤ columns too).")
    if "tied_with_best" in table:
        text += " " + paired_note(table.attrs.get("paired", {}), "μ_w")
    if "paper_mu_w" in table:
        agree = rank_agreement(table)
        ds = table.attrs.get("paper_dataset")
        text += (f" Paper values: Kohlbrenner et al. 2020, Table 1{f' ({ds})' if ds else ''};"
                 f" Kendall τ of μ_w ranks vs paper = {agree['kendall_tau']:.3f}"
                 f" over {agree['n_common']} analyzers.")
    return text


def tied(v) -> bool:
    """A `tied_with_best` cell as a bool (False where unknown), from the frame or read back from CSV."""
    return not pd.isna(v) and str(v).lower() in ("true", "1", "1.0")


def paired_note(attrs: dict, what: str, ranks: bool = True) -> str:
    """The footnote sentence that explains the * marks and P(rank) (lrp.evaluation.paired)."""
    n = attrs.get("n_units")
    units = f" on the {n} units every analyzer scores" if n is not None else ""
    return (f"*: not distinguishable from the best {what} (paired bootstrap of the differences{units}, "
            f"Holm-corrected over all pairs, α = {attrs.get('alpha', 0.05)})"
            + ("; P(rank): share of resamples in which the analyzer keeps its rank." if ranks else ".")
            + (f" Left out of the comparison (a value on fewer than half the units): {', '.join(attrs['left_out'])}."
               if attrs.get("left_out") else ""))


def _head_label(h: str, tex: bool) -> str:
    """Column header text; LaTeX headers are already valid LaTeX (math for μ)."""
    heads = _HEAD_TEX if tex else _HEAD_MD
    if h in heads:
        return heads[h]
    if h.startswith("paper_") and h[6:] in heads:
        return "paper " + heads[h[6:]]
    return h.replace("_", " ")


def to_markdown(table: pd.DataFrame, title: str) -> str:
    head, body = _cells(table)
    esc = lambda s: str(s).replace("|", r"\|")  # noqa: E731
    lines = [f"## {esc(title)}", "", "| " + " | ".join(_head_label(h, False) for h in head) + " |",
             "|" + "|".join([":---"] + ["---:"] * (len(head) - 1)) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in body]
    return "\n".join([*lines, "", esc(_footnote(table)), ""])


def to_latex(table: pd.DataFrame, title: str) -> str:
    """A booktabs `table` float (needs \\usepackage{booktabs}; \\flat and \\leq are core LaTeX)."""
    head, body = _cells(table)
    cols = "l" + "r" * (len(head) - 1)
    lines = [r"\begin{table}[t]", r"\centering", r"\scriptsize", rf"\caption{{{tex_escape(title)}}}",
             rf"\begin{{tabular}}{{{cols}}}", r"\toprule",
             " & ".join(_head_label(h, True) for h in head) + r" \\",
             r"\midrule"]
    lines += [" & ".join(tex_escape(c) for c in row) + r" \\" for row in body]
    lines += [r"\bottomrule", r"\end{tabular}", "",
              rf"\par\smallskip\footnotesize {tex_escape(_footnote(table))}", r"\end{table}", ""]
    return "\n".join(lines)


def write_table1(table: pd.DataFrame, csv_path: str | os.PathLike, md_path: str | os.PathLike,
                 tex_path: str | os.PathLike, title: str) -> None:
    """Write the table as CSV (full precision), Markdown and LaTeX, each atomically."""
    write_formats(table, csv_path, md_path, tex_path, to_markdown(table, title) if not table.empty else "",
                  to_latex(table, title) if not table.empty else "", "write_table1")


def markdown_table(title: str, head: list[str], body: list[list[str]], note: str, escape_star: bool = True) -> str:
    """A Markdown table with a "## title" heading and its footnote (Tables 2 and 3, the model comparison);
    cells and title escaped (`|`, and `*` unless the table marks nothing with it), headers as given."""
    esc = (lambda s: str(s).replace("|", r"\|").replace("*", r"\*")) if escape_star else \
        (lambda s: str(s).replace("|", r"\|"))
    lines = [f"## {esc(title)}", "", "| " + " | ".join(head) + " |",
             "|" + "|".join([":---"] + ["---:"] * (len(head) - 1)) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in body]
    return "\n".join([*lines, "", esc(note), ""])


def latex_table(title: str, head: list[str], body: list[list[str]], note: str) -> str:
    """A booktabs `table` float of text cells with its footnote (Tables 2 and 3, the model comparison)."""
    lines = [r"\begin{table}[t]", r"\centering", r"\scriptsize", rf"\caption{{{tex_escape(title)}}}",
             rf"\begin{{tabular}}{{l{'r' * (len(head) - 1)}}}", r"\toprule",
             " & ".join(tex_escape(h) for h in head) + r" \\", r"\midrule"]
    lines += [" & ".join(tex_escape(c) for c in row) + r" \\" for row in body]
    lines += [r"\bottomrule", r"\end{tabular}", "", rf"\par\smallskip\footnotesize {tex_escape(note)}",
              r"\end{table}", ""]
    return "\n".join(lines)


def write_formats(table: pd.DataFrame, csv_path, md_path, tex_path, markdown: str, latex: str, who: str) -> None:
    """A table's CSV (full precision) and its formatted Markdown and LaTeX, each atomically (Tables 1 and 2)."""
    if table.empty:
        raise ValueError(f"{who}() got an empty table")
    with atomic_path(csv_path) as tmp:
        table.to_csv(tmp, index=False)  # pandas writes shortest round-trip floats: full precision
    with atomic_path(md_path) as tmp:
        tmp.write_text(markdown, encoding="utf-8")
    with atomic_path(tex_path) as tmp:
        tmp.write_text(latex, encoding="utf-8")
