"""Evaluation stages (workflow/rules/evaluation.smk): per-unit μ, Table 1 with bootstrap CIs, Figs. 2 and 3."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lrp.io import log


def metrics(analyzer: str, image_shards: list, attribution_shards: list, out_csv):
    """μ, μ_w and the relevance sums per sample of one analyzer (baseline: analytic, from the masks).

    The sums come from the attribution shards: their jobs computed them from the float32 maps (so μ does not
    depend on `attribution.precision`), and reading them here costs milliseconds, where scoring the stored
    maps took ~18 % of the attribution time on an H100 (benchmarks/README.md).
    """
    import h5py

    from lrp.evaluation.metrics import mu_from_sums, relevance_sums
    from lrp.io import atomic_path
    from lrp.storage.attributions import read_sums
    from lrp.storage.images import iter_shard_batches, shard_size

    ids, sums = [], []
    if analyzer == "baseline":
        for img in image_shards:
            for _, masks, _, mids in iter_shard_batches(img, 256, load_images=False):
                ids.append(mids)
                sums.append(relevance_sums(np.ones(masks.shape, np.float32), masks))
    else:
        if len(image_shards) != len(attribution_shards):
            raise ValueError("image and attribution shards do not pair up")
        for img, att in zip(image_shards, attribution_shards):
            rids, s, size = read_sums(att)
            _, mids, img_size = shard_size(img)
            if list(rids) != list(mids) or size != (img_size, img_size):
                raise ValueError(f"{att} and {img} disagree on sample order or map size")
            with h5py.File(img, "r") as f:  # the masks the sums were taken with are this shard's
                wrong = np.flatnonzero(np.abs(s["s_in"] / s["s_tot"] - f["box_fraction"][:]) > 1e-9)
            if wrong.size:
                raise ValueError(f"{att}: the sums' mask sizes differ from {img}'s box_fraction for samples "
                                 f"{list(mids[wrong[:5]])}: the image shard changed after the attribution")
            ids.append(mids)
            sums.append(s)
    s = {k: np.concatenate([b[k] for b in sums]) if sums else np.zeros(0) for k in ("r_in", "r_tot", "s_in", "s_tot")}
    mu, mu_w = mu_from_sums(**s)
    with np.errstate(invalid="ignore", divide="ignore"):
        df = pd.DataFrame({"sample_id": np.concatenate(ids) if ids else np.zeros(0, str),
                           "box_fraction": s["s_in"] / s["s_tot"], "mu": mu, "mu_w": mu_w,
                           "r_in": s["r_in"], "r_tot": s["r_tot"]})
    with atomic_path(out_csv) as tmp:
        df.to_csv(tmp, index=False)
    log(f"metrics {analyzer}: {len(df)} samples, mean μ {df['mu'].mean():.4f}, NaN {int(df['mu'].isna().sum())}")


def table1(metric_csvs: dict, paper_dataset, out_csv, out_md, out_tex, n_boot: int, seed: int, title: str):
    from lrp.evaluation.metrics import summarize
    from lrp.report.table import build_table1, write_table1

    summaries = {}
    n = 0
    for name, path in metric_csvs.items():
        df = pd.read_csv(path)
        n = len(df)
        summaries[name] = summarize(df["mu"].to_numpy(), df["mu_w"].to_numpy(), df["box_fraction"].to_numpy(),
                                    n_boot=n_boot, seed=seed)
    table = build_table1(summaries, paper_dataset, n)
    write_table1(table, out_csv, out_md, out_tex, title)


def fig3(metric_csvs: dict, out_png, out_pdf, title: str, min_count: int = 20):
    from lrp.evaluation.metrics import size_curve
    from lrp.report.figures import plot_fig3
    from lrp.report.table import analyzer_names

    labels = dict(zip(analyzer_names()["analyzer"], analyzer_names()["label"]))
    curves = {}
    baseline = None
    for name, path in metric_csvs.items():
        df = pd.read_csv(path)
        curve = size_curve(df["mu"].to_numpy(), df["box_fraction"].to_numpy())
        if name == "baseline":
            baseline = curve
        else:
            curves[labels.get(name, name)] = curve
    plot_fig3(curves, baseline, out_png, out_pdf, title=title, min_count=min_count)


def fig2(occlusion_csv, out_png, out_pdf, title: str):
    from lrp.report.figures import plot_fig2

    plot_fig2(pd.read_csv(occlusion_csv), out_png, out_pdf, title=title)
