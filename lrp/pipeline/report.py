"""Report stages (workflow/rules/report.smk): Fig. 1-style panels, the summary page, the provenance manifest."""

from __future__ import annotations

from lrp.io import log
from lrp.models.base import pick_device
from lrp.models.zoo import load_model
from lrp.pipeline.attribution import analyzer_options


def panel(model_spec: dict, image_shards: list, analyzers: dict, patterns_h5, sample_ids, n_images: int,
          flat_analyzer: str, device: str, out: dict, title: str):
    """Fig. 1-style panels: every analyzer on a few images, and the flat rule on the first n conv layers."""
    from lrp.report.panel import select_samples, write_panels
    from lrp.report.table import analyzer_names

    dev = pick_device(device)
    bundle = load_model(model_spec, dev)
    opts = analyzer_options(model_spec, analyzers, patterns_h5, dev)
    samples = select_samples(image_shards, sample_ids or None, n=n_images)
    log(f"panel: samples {samples.sample_id}")
    labels = dict(zip(analyzer_names()["analyzer"], analyzer_names()["label"]))
    flat_opts = analyzer_options(model_spec, {flat_analyzer: analyzers.get(flat_analyzer, {})}, None, dev)
    write_panels(bundle, samples, opts, dev, out, title=title, labels=labels, flat_analyzer=flat_analyzer,
                 flat_options=flat_opts[flat_analyzer])


def summary(dataset: str, table_csv, baseline_csv, model_card_json, paper_dataset, config: dict, out_html,
            seed_spread_csv=None, table2_csv=None, table3_csv=None, sanity_csv=None):
    from lrp.pipeline.provenance import versions
    from lrp.report.summary import write_summary

    write_summary(dataset, table_csv, baseline_csv, model_card_json, paper_dataset,
                  {"versions": versions(), "config": config}, out_html, seed_spread_csv=seed_spread_csv,
                  table2_csv=table2_csv, table3_csv=table3_csv, sanity_csv=sanity_csv)


def provenance(files: list, config: dict, out_json, root, plugins=None):
    from lrp.pipeline.provenance import write_manifest

    doc = write_manifest(files, config, out_json, root=root, plugins=plugins)
    log(f"provenance: {len(doc['files'])} files")


def comparison(name: str, inputs: dict, models: dict, out: dict, metrics: dict | None = None, n_boot: int = 1000,
               seed: int = 0, min_count: int = 20):
    """A model comparison (`comparisons.<name>`): the listed datasets' Tables 1–3 side by side, after checking
    that they scored the same units. `inputs` {dataset: {"samples", "table1", "table2", "table3"}}, `models`
    {dataset: model name}, `out` {"csv", "md", "tex", "png", "pdf", optionally "pairs", "fig3_png", "fig3_pdf"}.
    With `metrics` {dataset: {analyzer: per-unit metrics CSV}}, each analyzer's μ_w is also compared between the
    models unit by unit (lrp.evaluation.model_pairs; written to out["pairs"]) and its μ by box size drawn per
    model (Fig. 3 across models, bins of fewer than `min_count` units left out). Raises ValueError when the units
    differ or a metrics file is malformed (naming it)."""
    import pandas as pd

    from lrp.datasets.index import read_index
    from lrp.io import log
    from lrp.report.comparison import build_comparison, plot_comparison, write_comparison

    first = None
    for dataset, files in inputs.items():
        units = set(read_index(files["samples"])["sample_id"].astype(str))
        if first is None:
            first = (dataset, units)
        elif units != first[1]:
            raise ValueError(f"comparisons.{name}: {dataset} and {first[0]} evaluate different units "
                             f"({len(units ^ first[1])} differ): a comparison needs the same data and index settings")
    tables = {d: {k: pd.read_csv(files[k]) for k in ("table1", "table2", "table3") if files.get(k)}
              for d, files in inputs.items()}
    pairs = None
    if metrics:
        from lrp.evaluation.model_pairs import paired_model_differences

        frames = {d: {a: _unit_metrics(path, first[1]) for a, path in metrics[d].items()} for d in inputs}
        per_unit = {d: {a: f["mu_w"] for a, f in by_analyzer.items()} for d, by_analyzer in frames.items()}
        pairs = paired_model_differences(per_unit, n_boot=max(1, n_boot), seed=seed)
        if out.get("pairs"):
            from lrp.io import atomic_path

            with atomic_path(out["pairs"]) as tmp:
                pairs.to_csv(tmp, index=False)
        if out.get("fig3_png"):
            _comparison_fig3(frames, models, out["fig3_png"], out["fig3_pdf"], f"Fig. 3 across models — {name}",
                             min_count)
    result = build_comparison(tables, models, model_pairs=pairs)
    title = f"Model comparison — {name}"
    write_comparison(result, out["csv"], out["md"], out["tex"], title)
    plot_comparison(result, out["png"], out["pdf"], title)
    log(f"comparison {name}: {result['analyzer'].nunique()} analyzers × {len(inputs)} models")


UNIT_METRICS = ("sample_id", "mu", "mu_w", "box_fraction")
"""The per-unit columns of a metrics CSV (lrp.pipeline.evaluation.metrics) that a comparison reads."""


def _unit_metrics(path, units: set | None = None):
    """A metrics CSV's per-unit μ, μ_w and box fraction, indexed by unit. Raises ValueError naming the file for a
    missing column, a repeated unit, non-numeric values, a box fraction outside [0, 1], or units other than
    `units` (the index's)."""
    import numpy as np
    import pandas as pd

    try:
        df = pd.read_csv(path, usecols=lambda c: c in UNIT_METRICS, dtype={"sample_id": str})
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a metrics CSV ({e})") from None
    missing = [c for c in UNIT_METRICS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: not a metrics CSV (lacks {', '.join(missing)})")
    if df["sample_id"].duplicated().any():
        raise ValueError(f"{path}: unit {df['sample_id'][df['sample_id'].duplicated()].iloc[0]!r} appears twice")
    for col in ("mu", "mu_w", "box_fraction"):
        values = pd.to_numeric(df[col], errors="coerce")
        bad = values.isna() & df[col].notna()
        if bad.any():
            raise ValueError(f"{path}: row {int(np.argmax(bad.to_numpy())) + 2}: {col} {df[col][bad].iloc[0]!r} is "
                             f"not a number")
        df[col] = values.astype(float)
    f = df["box_fraction"].to_numpy()
    if not ((f >= 0) & (f <= 1)).all():
        raise ValueError(f"{path}: row {int(np.argmax(~((f >= 0) & (f <= 1)))) + 2}: box_fraction outside [0, 1]")
    if units is not None and set(df["sample_id"]) != units:
        other = sorted(set(df["sample_id"]) ^ units)
        raise ValueError(f"{path}: scores other units than the dataset's samples.csv ({len(other)} differ, e.g. "
                         f"{other[0]!r}): re-run its metrics")
    return df.set_index("sample_id")


def _comparison_fig3(frames: dict, models: dict, out_png, out_pdf, title: str, min_count: int):
    from lrp.evaluation.metrics import size_curve
    from lrp.report.comparison_fig3 import plot_comparison_fig3
    from lrp.report.table import analyzer_names

    labels = dict(zip(analyzer_names()["analyzer"], analyzer_names()["label"]))  # as each dataset's Fig. 3
    curves: dict = {}
    for d, by_analyzer in frames.items():
        for a, f in by_analyzer.items():
            curve = size_curve(f["mu"].to_numpy(), f["box_fraction"].to_numpy(), n_bins=20)
            curves.setdefault(labels.get(a, a), {})[models[d]] = curve
    plot_comparison_fig3(curves, out_png, out_pdf, title, min_count=min_count)
