"""One self-contained HTML page per dataset for the Snakemake report: model card, baseline check, Table 1
beside the paper (with the rank agreement), Table 2 and the provenance of the run.

Why a page of its own: the report's reader needs the checks that make Table 1 trustworthy (is the model
right? does the index reproduce the paper's baseline?) next to the table, not in separate JSON files.
"""

from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path

import pandas as pd

from lrp.io import atomic_path
from lrp.report.table import _cells, _footnote, _head_label, paper_table, rank_agreement

BASELINE_TOLERANCE = 0.003  # issue #4 acceptance: the Baseline row within ±0.003 of the paper's
_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:1.5em;color:#222;font-size:14px}
h1{font-size:1.4em} h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0} td,th{padding:3px 8px;border-bottom:1px solid #eee;text-align:right}
td:first-child,th:first-child{text-align:left} th{background:#f5f5f5} .ok{color:#1a7f37} .bad{color:#cf222e}
.note{color:#555;font-size:.92em;max-width:60em} code{background:#f5f5f5;padding:0 3px}
"""


def _esc(x) -> str:
    return html.escape(str(x))


def _table_html(head: list[str], body: list[list[str]]) -> str:
    rows = ["<tr>" + "".join(f"<th>{_esc(h)}</th>" for h in head) + "</tr>"]
    rows += ["<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in r) + "</tr>" for r in body]
    return "<table>" + "".join(rows) + "</table>"


def model_card_section(card: dict) -> str:
    keys = [k for k in ("top1", "top5", "mAP", "mAP_area", "n_samples", "n_images") if k in card]
    body = [[k, f"{card[k]:.4f}" if isinstance(card[k], float) else card[k]] for k in keys]
    body += [["model", card.get("model")], ["weights", card.get("weights")],
             ["weights sha256", card.get("checksum") or "–"]]
    status = ('<p class="ok">passed the accuracy check</p>' if card.get("passed")
              else '<p class="bad">FAILED the accuracy check</p>')
    return "<h2>Model card</h2>" + status + _table_html(["", "value"], body)


def baseline_section(baseline: pd.DataFrame, paper_dataset: str | None) -> str:
    """The uniform baseline from the index alone, beside the paper's Baseline row (±0.003 check)."""
    ours = baseline.iloc[0]
    stats = [("mu", "μ"), ("mu_le_0.25", "μ_≤0.25"), ("mu_le_0.5", "μ_≤0.5")]
    if paper_dataset is None:
        body = [[label, f"{ours[k]:.4f}", "–", "–"] for k, label in stats]
        verdict = '<p class="note">This dataset has no counterpart in the paper.</p>'
    else:
        paper = paper_table(paper_dataset).set_index("analyzer_paper").loc["Baseline"]
        body, ok = [], True
        for k, label in stats:
            diff = float(ours[k]) - float(paper[k])
            ok &= abs(diff) <= BASELINE_TOLERANCE
            body.append([label, f"{ours[k]:.4f}", f"{paper[k]:.3f}", f"{diff:+.4f}"])
        cls, word = ("ok", "within") if ok else ("bad", "NOT within")
        verdict = (f'<p class="{cls}">Baseline row {word} ±{BASELINE_TOLERANCE} of the paper '
                   f'(Kohlbrenner et al. 2020, Table 1, {_esc(paper_dataset)}).</p>')
    body.append(["N units (valid)", f"{int(ours['n_units'])} ({int(ours['n_valid'])})", "", ""])
    if "pointing" in baseline:
        body.append(["pointing game, image centre", "n/a" if pd.isna(ours["pointing"]) else f"{ours['pointing']:.4f}",
                     "", f"{int(ours['n_pointing_pairs'])} pairs, {int(ours['n_pointing_skipped'])} all-difficult"
                         " skipped"])
    return ("<h2>Baseline check (index only, no model)</h2>" + verdict +
            _table_html(["", "ours", "paper", "difference"], body))


def table1_section(table: pd.DataFrame) -> str:
    head, body = _cells(table)
    text = "<h2>Table 1</h2>" + _table_html([_head_label(h, False) for h in head], body)
    if "paper_mu_w" in table:
        agree = rank_agreement(table)
        tau = agree["kendall_tau"]
        text += (f"<p><b>Rank agreement with the paper:</b> Kendall τ = "
                 f"{'n/a' if math.isnan(tau) else f'{tau:.3f}'} over {agree['n_common']} analyzers "
                 "(μ_w ordering).</p>")
    return text + f'<p class="note">{_esc(_footnote(table))}</p>'


def table2_section(table: pd.DataFrame) -> str:
    from lrp.report.table2 import _cells as cells2
    from lrp.report.table2 import footnote

    head, body = cells2(table)
    return "<h2>Table 2: localisation beyond μ</h2>" + _table_html(head, body) + \
        f'<p class="note">{_esc(footnote(table))}</p>'


def table3_section(table: pd.DataFrame) -> str:
    from lrp.report.faithfulness import _cells as cells3
    from lrp.report.faithfulness import footnote

    head, body = cells3(table)
    return "<h2>Table 3: faithfulness (region perturbation)</h2>" + _table_html(head, body) + \
        f'<p class="note">{_esc(footnote(table))}</p>'


def sanity_section(df: pd.DataFrame) -> str:
    """Mean Spearman ρ with the trained model's maps after the output layer, and after every layer, is
    re-initialised (lrp.evaluation.randomisation)."""
    from lrp.report.faithfulness import _labels, sanity_summary

    s = sanity_summary(df)
    last = int(s["stage"].max())
    labels = _labels()
    body = []
    for name in dict.fromkeys(s["analyzer"]):
        d = s[s["analyzer"] == name].set_index("stage")
        body.append([labels.get(name, name), *(f"{d.at[k, c]:.3f}" for k in (1, last)
                                              for c in ("spearman", "spearman_abs"))])
    n = int(df["sample_id"].nunique())
    return ("<h2>Sanity check: cascading randomisation</h2><p>Spearman ρ between each analyzer's maps on the "
            f"trained model and on the model with its top layer, and all {last} layers, re-initialised (N = {n} "
            "units; Adebayo et al. 2018). Near 1 after all layers: the map does not depend on the model.</p>"
            + _table_html(["Analyzer", "ρ top layer", "ρ(|·|) top layer", "ρ all layers", "ρ(|·|) all layers"],
                          body))


def seed_spread_section(spread: pd.DataFrame, source: str) -> str:
    """μ_w per training seed beside the bootstrap CI: the CI covers only which units were sampled; the spread
    across seeds is how much a retrained model moves the number (lrp.pipeline.seeds)."""
    seeds = [c.removeprefix("mu_w_seed") for c in spread.columns if c.startswith("mu_w_seed")]
    head = ["Analyzer", *(f"μ_w seed {s}" for s in seeds), "mean ± sd", "range", "bootstrap CI ±"]
    body = [[r["label"], *(f"{r[f'mu_w_seed{s}']:.3f}" for s in seeds), f"{r['mu_w_mean']:.3f} ± {r['mu_w_sd']:.3f}",
             f"{r['mu_w_min']:.3f}–{r['mu_w_max']:.3f}", f"±{r['mu_w_ci_halfwidth']:.3f}"]
            for _, r in spread.iterrows()]
    return ("<h2>Seed to seed</h2><p>The same study with the model retrained from other seeds "
            f"({len(seeds)} models; {_esc(source)}). The bootstrap CI covers only which units were sampled: a "
            "difference smaller than the seed spread is a property of one trained model unless it holds for "
            "every seed (docs/reproducibility.md).</p>"
            + _table_html(head, body))


def provenance_section(provenance: dict) -> str:
    return ("<h2>Provenance</h2><pre>" + _esc(json.dumps(provenance, indent=2, sort_keys=True)) + "</pre>")


def write_summary(dataset: str, table_csv, baseline_csv, model_card_json, paper_dataset: str | None,
                  provenance: dict, out_html: str | os.PathLike, seed_spread_csv=None, table2_csv=None,
                  table3_csv=None, sanity_csv=None) -> None:
    """The summary page; with `seed_spread_csv` (lrp.pipeline.seeds' output) the seed-to-seed table too, with
    `table2_csv` Table 2, with `table3_csv` and `sanity_csv` the faithfulness table and the sanity check."""
    table = pd.read_csv(table_csv)
    if paper_dataset is not None:
        table.attrs["paper_dataset"] = paper_dataset
    card = json.loads(Path(model_card_json).read_text())
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>lrp-bench: {_esc(dataset)}</title>"
             f"<style>{_STYLE}</style></head><body><h1>lrp-bench — {_esc(dataset)}</h1>",
             model_card_section(card), baseline_section(pd.read_csv(baseline_csv), paper_dataset),
             table1_section(table)]
    if table2_csv:
        parts.append(table2_section(pd.read_csv(table2_csv)))
    if table3_csv:
        parts.append(table3_section(pd.read_csv(table3_csv)))
    if sanity_csv:
        parts.append(sanity_section(pd.read_csv(sanity_csv, dtype={"sample_id": str})))
    if seed_spread_csv:
        parts.append(seed_spread_section(pd.read_csv(seed_spread_csv), str(seed_spread_csv)))
    parts += [provenance_section(provenance), "</body></html>"]
    with atomic_path(out_html) as tmp:
        Path(tmp).write_text("\n".join(parts), encoding="utf-8")
