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
               seed: int = 0):
    """A model comparison (`comparisons.<name>`): the listed datasets' Tables 1–3 side by side, after checking
    that they scored the same units. `inputs` {dataset: {"samples", "table1", "table2", "table3"}}, `models`
    {dataset: model name}, `out` {"csv", "md", "tex", "png", "pdf", optionally "pairs"}. With `metrics`
    {dataset: {analyzer: per-unit metrics CSV}}, each analyzer's μ_w is also compared between the models unit by
    unit (lrp.evaluation.model_pairs; written to out["pairs"]). Raises ValueError when the units differ."""
    import pandas as pd

    from lrp.datasets.index import read_index
    from lrp.io import log
    from lrp.report.comparison import build_comparison, plot_comparison, write_comparison

    first = None
    for dataset, files in inputs.items():
        units = set(read_index(files["samples"])["sample_id"])
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

        per_unit = {d: {a: pd.read_csv(path, usecols=["sample_id", "mu_w"]).set_index("sample_id")["mu_w"]
                        for a, path in by_analyzer.items()} for d, by_analyzer in metrics.items()}
        pairs = paired_model_differences(per_unit, n_boot=max(1, n_boot), seed=seed)
        if out.get("pairs"):
            from lrp.io import atomic_path

            with atomic_path(out["pairs"]) as tmp:
                pairs.to_csv(tmp, index=False)
    result = build_comparison(tables, models, model_pairs=pairs)
    title = f"Model comparison — {name}"
    write_comparison(result, out["csv"], out["md"], out["tex"], title)
    plot_comparison(result, out["png"], out["pdf"], title)
    log(f"comparison {name}: {result['analyzer'].nunique()} analyzers × {len(inputs)} models")
