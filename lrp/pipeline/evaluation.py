"""Evaluation stages (workflow/rules/evaluation.smk): per-unit μ, Table 1 with bootstrap CIs, Figs. 2 and 3."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lrp.io import log


def metrics(analyzer: str, image_shards: list, attribution_shards: list, out_csv, index_csv=None,
            tolerance: float = 15):
    """Per-unit localisation of one analyzer: μ, μ_w, rank accuracy, top-k intersection, energy, and the
    pointing game's point and hit (baseline: the uniform map analytically, the image centre as its point).

    The sums and counts come from the attribution shards: their jobs computed them from the float32 maps (so
    no metric depends on `attribution.precision`), and reading them here costs milliseconds, where scoring the
    stored maps took ~18 % of the attribution time on an H100 (benchmarks/README.md). The pointing game's
    boxes (original resolution, with their difficult flags) come from the index (`index_csv`, samples.csv);
    `tolerance` is its radius in pixels.
    """
    import h5py

    from lrp.evaluation.localisation import (
        baseline_localisation,
        energy_pointing,
        rank_accuracy,
        topk_intersection,
    )
    from lrp.evaluation.metrics import mu_from_sums, relevance_sums
    from lrp.evaluation.pointing import centre_points, parse_boxes, pointing_outcome
    from lrp.io import atomic_path
    from lrp.storage.attributions import read_attrs, read_sums
    from lrp.storage.images import iter_shard_batches, shard_size

    ids, sums, cls = [], [], []
    top_k = None
    if analyzer == "baseline":
        for img in image_shards:
            for _, masks, c, mids, _ in iter_shard_batches(img, 256, load_images=False):
                ids.append(mids)
                cls.append(c)
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
                cls.append(f["class_index"][:])
            if wrong.size:
                raise ValueError(f"{att}: the sums' mask sizes differ from {img}'s box_fraction for samples "
                                 f"{list(mids[wrong[:5]])}: the image shard changed after the attribution")
            k = read_attrs(att).get("top_k")
            if not isinstance(k, (int, np.integer)) or k < 1 or (top_k is not None and k != top_k):
                raise ValueError(f"{att}: top_k {k!r} is missing or differs from the other shards' {top_k}")
            top_k = int(k)
            ids.append(mids)
            sums.append(s)
    keys = sums[0].keys() if sums else ("r_in", "r_tot", "s_in", "s_tot")
    s = {k: np.concatenate([b[k] for b in sums]) if sums else np.zeros(0) for k in keys}
    sample_id = np.concatenate(ids) if ids else np.zeros(0, str)
    mu, mu_w = mu_from_sums(s["r_in"], s["r_tot"], s["s_in"], s["s_tot"])
    index = _index_rows(index_csv, sample_id) if index_csv is not None else None
    if analyzer == "baseline":
        loc = baseline_localisation(s["s_in"], s["s_tot"])
        points = centre_points(index["width"], index["height"]) if index is not None else None
    else:
        loc = {"rank_accuracy": rank_accuracy(s["rank_in"], s["s_in"]),
               "topk": topk_intersection(s["topk_in"], top_k, s["s_in"]),
               "energy": energy_pointing(s["e_in"], s["e_tot"])}
        points = np.stack([s["point_x"], s["point_y"]], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        df = pd.DataFrame({"sample_id": sample_id,
                           "class_index": np.concatenate(cls) if cls else np.zeros(0, np.int64),
                           "box_fraction": s["s_in"] / s["s_tot"], "mu": mu, "mu_w": mu_w,
                           "r_in": s["r_in"], "r_tot": s["r_tot"], **loc})
    if index is not None:
        df["point_x"], df["point_y"] = points[:, 0], points[:, 1]
        # NaN: every box of the pair is difficult (skipped), or the map is constant (no point)
        df["pointing_hit"] = pointing_outcome(points, parse_boxes(index["source_boxes"], str(index_csv)),
                                              index["difficult"], tolerance, source=str(index_csv))
    with atomic_path(out_csv) as tmp:
        df.to_csv(tmp, index=False)
    log(f"metrics {analyzer}: {len(df)} samples, mean μ {df['mu'].mean():.4f}, NaN {int(df['mu'].isna().sum())}")


def _index_rows(index_csv, sample_id: np.ndarray) -> pd.DataFrame:
    """The index rows of these samples, in their order; a sample the index lacks is an error naming the file."""
    from lrp.datasets.index import read_index

    df = read_index(index_csv).set_index("sample_id")
    missing = [sid for sid in sample_id[:1000] if sid not in df.index]
    if missing or len(set(sample_id) - set(df.index)):
        raise ValueError(f"{index_csv}: samples {missing[:5]} of the shards are not in the index: the index changed "
                         "after the image shards were written")
    return df.loc[sample_id].reset_index()


def table1(metric_csvs: dict, paper_dataset, out_csv, out_md, out_tex, n_boot: int, seed: int, title: str,
           out_paired=None, out_figure=None):
    """Table 1 (μ summaries with bootstrap CIs beside the paper), the analyzers not distinguishable from the
    best μ_w marked; `out_paired` gets the pairwise differences of μ_w (lrp.evaluation.paired), `out_figure`
    (png, pdf) their matrix."""
    from lrp.evaluation.metrics import summarize
    from lrp.report.table import build_table1, write_table1

    summaries, mu_w = {}, {}
    n = 0
    for name, path in metric_csvs.items():
        df = pd.read_csv(path)
        n = len(df)
        summaries[name] = summarize(df["mu"].to_numpy(), df["mu_w"].to_numpy(), df["box_fraction"].to_numpy(),
                                    n_boot=n_boot, seed=seed)
        mu_w[name] = df["mu_w"].to_numpy()
    per = None
    if len(mu_w) >= 2:
        per, pairwise = _paired(mu_w, n_boot, seed)
        if out_paired is not None:
            _write_csv(pairwise, out_paired)
    elif out_paired is not None:
        _write_csv(pd.DataFrame(columns=["a", "b", "diff", "diff_lo", "diff_hi", "p", "p_holm", "significant"]),
                   out_paired)
    table = build_table1(summaries, paper_dataset, n, paired=per)
    write_table1(table, out_csv, out_md, out_tex, title)
    if out_figure is not None:
        from lrp.report.localisation_figures import plot_pairwise

        plot_pairwise(pairwise if per is not None else pd.DataFrame(columns=["a", "b", "diff", "p_holm",
                                                                              "significant"]),
                      table, *out_figure, title=title.replace("Table 1", "Paired differences of μ_w"), what="μ_w")


def _paired(values: dict, n_boot: int, seed: int, groups=None):
    from lrp.evaluation.paired import paired_bootstrap

    return paired_bootstrap(values, n_boot=max(1, n_boot), seed=seed, groups=groups)


def _write_csv(df: pd.DataFrame, path) -> None:
    from lrp.io import atomic_path

    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def table2(metric_csvs: dict, out_csv, out_md, out_tex, out_paired, n_boot: int, seed: int, title: str,
           tolerance: float, top_k: int | None = None, samples_csv=None, out_figures: dict | None = None):
    """Table 2: pointing game, rank accuracy, top-k intersection, energy pointing game per analyzer, with
    paired-bootstrap CIs (the same resamples for every analyzer); `out_paired` gets the pointing game's
    pairwise differences; `out_figures` {"pairwise": (png, pdf), "per_class": (png, pdf)} their matrix and the
    per-class pointing game (class names from `samples_csv`, the index)."""
    from lrp.report.table2 import MEASURES, build_table2, write_table2

    frames = {name: pd.read_csv(path) for name, path in metric_csvs.items()}
    _check_units(frames)
    first = next(iter(frames.values()))
    if "pointing_hit" not in first:
        raise ValueError(f"{next(iter(metric_csvs.values()))}: no pointing_hit column: a metrics file of an older "
                         "lrp version; delete it and re-run the metrics")
    per_measure, pairwise = {}, None
    for m in MEASURES:
        values = {name: (df["pointing_hit"] if m == "pointing" else df[m]).to_numpy(dtype=np.float64)
                  for name, df in frames.items()}
        groups = first["class_index"].to_numpy() if m == "pointing" else None
        per, pw = _paired(values, n_boot, seed, groups=groups)
        per_measure[m] = per
        if m == "pointing":
            pairwise = pw
    pairs = {name: float(np.nanmean(df["pointing_hit"])) for name, df in frames.items()}
    table = build_table2(per_measure, pairs, top_k, tolerance)
    write_table2(table, out_csv, out_md, out_tex, title)
    _write_csv(pairwise, out_paired)
    figures = out_figures or {}
    if "pairwise" in figures:
        from lrp.report.localisation_figures import plot_pairwise

        plot_pairwise(pairwise, table, *figures["pairwise"], what="pointing game",
                      title=title.replace("Table 2", "Paired differences of the pointing game"))
    if "per_class" in figures:
        fig_pointing_per_class(metric_csvs, samples_csv, *figures["per_class"],
                               title=title.replace("Table 2", "Pointing game per class"))
    log(f"table2: {len(table)} analyzers, best pointing {table['label'].iloc[0]} {table['pointing'].iloc[0]:.3f}")


def _check_units(frames: dict) -> None:
    """Every metrics file covers the same units in the same order (the paired statistics pair them)."""
    names = list(frames)
    ref = frames[names[0]]["sample_id"].astype(str).tolist()
    for name in names[1:]:
        if frames[name]["sample_id"].astype(str).tolist() != ref:
            raise ValueError(f"metrics of {name} and {names[0]} cover different units: re-run the metrics")


def fig_pointing_per_class(metric_csvs: dict, samples_csv, out_png, out_pdf, title: str):
    """Per-class pointing-game hit rates (analyzers × classes); class names from the index."""
    from lrp.datasets.index import read_index
    from lrp.report.localisation_figures import plot_pointing_per_class
    from lrp.report.table import analyzer_names

    index = read_index(samples_csv)
    names = dict(zip(index["class_index"], index["class_name"]))
    class_names = [names.get(c, str(c)) for c in range(max(names) + 1)] if names else []
    labels = dict(zip(analyzer_names()["analyzer"], analyzer_names()["label"]))
    frames = {labels.get(n, n): pd.read_csv(p) for n, p in metric_csvs.items()}
    plot_pointing_per_class(frames, class_names, out_png, out_pdf, title=title)


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
