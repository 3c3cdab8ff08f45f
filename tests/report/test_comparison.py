"""The model comparison (lrp.report.comparison, lrp.pipeline.report.comparison): Tables 1–3 of datasets that
differ only in the model, side by side, with ranks and Kendall's τ; different units refused."""

import numpy as np
import pandas as pd
import pytest

from lrp.datasets.index import INDEX_COLUMNS
from lrp.report.comparison import build_comparison, plot_comparison, rank_agreement, to_markdown


def _tables(mu_w: dict, pointing: dict | None = None, diff: dict | None = None) -> dict:
    names = list(mu_w)
    t1 = pd.DataFrame({"analyzer": names, "label": [n.upper() for n in names], "mu_w": list(mu_w.values())})
    t1["mu_w_lo"], t1["mu_w_hi"] = t1["mu_w"] - 0.1, t1["mu_w"] + 0.1
    out = {"table1": t1}
    if pointing:
        out["table2"] = pd.DataFrame({"analyzer": list(pointing), "pointing": list(pointing.values()),
                                      "pointing_lo": 0.0, "pointing_hi": 1.0})
    if diff:
        out["table3"] = pd.DataFrame({"analyzer": list(diff), "diff": list(diff.values()), "diff_lo": -1.0,
                                      "diff_hi": 2.0})
    return out


def test_side_by_side_with_ranks_and_tau(tmp_path):
    a = _tables({"lrp_z": 3.0, "gradient": 2.0, "gb": 1.5, "baseline": 1.0},
                {"lrp_z": 0.8, "gradient": 0.7, "gb": 0.65, "baseline": 0.6},
                {"lrp_z": 1.5, "gradient": 0.1, "gb": 0.3, "random": 0.02})
    b = _tables({"lrp_z": 2.0, "gradient": 2.5, "gb": 1.2, "baseline": 1.0, "only_here": 9.0},
                diff={"lrp_z": 0.9, "gradient": 0.2, "random": 0.05})
    c = build_comparison({"vgg": a, "resnet": b}, {"vgg": "VGG-16", "resnet": "ResNet-50"})
    assert set(c["analyzer"]) == {"lrp_z", "gradient", "gb", "baseline", "random"}  # the common ones + random
    by = c.set_index(["dataset", "analyzer"])
    assert by.loc[("vgg", "lrp_z"), "mu_w_rank"] == 1 and by.loc[("resnet", "lrp_z"), "mu_w_rank"] == 2
    assert by.loc[("vgg", "lrp_z"), "faithfulness"] == 1.5 and np.isnan(by.loc[("resnet", "lrp_z"), "pointing"])
    # ranks among the analyzers that have the value on every model: gb has no AOPC on resnet, so is unranked
    assert pd.isna(by.loc[("vgg", "gb"), "faithfulness_rank"]) and by.loc[("vgg", "gradient"), "faithfulness_rank"] == 2
    assert pd.isna(by.loc[("vgg", "lrp_z"), "pointing_rank"])  # resnet has no Table 2
    assert by.loc[("resnet", "random"), "faithfulness"] == 0.05 and pd.isna(by.loc[("resnet", "random"), "mu_w_rank"])
    tau = rank_agreement(c).iloc[0]  # baseline and random left out: lrp_z, gradient, gb
    assert tau["n_analyzers"] == 3 and tau["kendall_tau"] == pytest.approx(1 / 3)  # one discordant pair of three
    md = to_markdown(c, "Model comparison — t")
    assert "μ_w · VGG-16" in md and "μ_w · ResNet-50" in md and "3.000 [2.900, 3.100] (1)" in md and "τ = 0.33" in md
    assert "| Random map |" in md
    plot_comparison(c, tmp_path / "c.png", tmp_path / "c.pdf", "t")
    assert (tmp_path / "c.png").stat().st_size > 1000
    c.loc[c["analyzer"] == "gb", "label"] = "GRADIENT"  # two analyzers with one label (plugins may): still drawn
    plot_comparison(c, tmp_path / "d.png", tmp_path / "d.pdf", "t")


def test_tau_needs_three_analyzers():
    c = build_comparison({"a": _tables({"lrp_z": 2.0, "gradient": 1.0}), "b": _tables({"lrp_z": 1.0, "gradient": 2.0})},
                         {"a": "m", "b": "n"})
    assert np.isnan(rank_agreement(c).iloc[0]["kendall_tau"]) and "τ = n/a over 2" in to_markdown(c, "t")


def test_a_comparison_needs_two_datasets_with_common_analyzers():
    with pytest.raises(ValueError, match="at least two datasets"):
        build_comparison({"vgg": _tables({"lrp_z": 1.0})}, {"vgg": "m"})
    with pytest.raises(ValueError, match="no analyzer in common"):
        build_comparison({"a": _tables({"lrp_z": 1.0}), "b": _tables({"gradient": 1.0})}, {"a": "m", "b": "n"})


def test_datasets_with_other_units_are_refused(tmp_path):
    from lrp.pipeline.report import comparison

    inputs = {}
    for d, ids in (("a", ["u0", "u1"]), ("b", ["u0", "u2"])):
        row = {c: "" for c in INDEX_COLUMNS} | {"class_index": 0, "width": 8, "height": 8, "n_boxes": 1,
                                                 "box_fraction": 0.5}
        pd.DataFrame([{**row, "sample_id": s} for s in ids], columns=INDEX_COLUMNS).to_csv(tmp_path / f"{d}.csv",
                                                                                            index=False)
        _tables({"lrp_z": 1.0, "gradient": 0.5})["table1"].to_csv(tmp_path / f"t1_{d}.csv", index=False)
        inputs[d] = {"samples": tmp_path / f"{d}.csv", "table1": tmp_path / f"t1_{d}.csv"}
    out = {k: tmp_path / f"out.{k}" for k in ("csv", "md", "tex", "png", "pdf")}
    with pytest.raises(ValueError, match="comparisons.x: b and a evaluate different units"):
        comparison("x", inputs, {"a": "m", "b": "n"}, out)
    assert not out["csv"].exists()


# ----------------------------------------------------------------------------- paired differences between models
def test_paired_model_difference_is_the_mean_difference_on_common_units():
    """Hand case: b − a per unit is exactly 0.5 on the units both score, so diff = 0.5 with a zero-width CI; a unit
    NaN on one model is left out of that analyzer only; ids are matched, not positions."""
    from lrp.evaluation.model_pairs import paired_model_differences

    ids = ["u0", "u1", "u2", "u3"]
    a = {"z": pd.Series([1.0, 2.0, 3.0, np.nan], ids), "g": pd.Series([1.0, 1.0, 1.0, 1.0], ids)}
    b = {"z": pd.Series([9.0, 3.5, 2.5, 1.5], ids[::-1]), "g": pd.Series([1.0, 1.0, 1.0, 1.0], ids)}
    pairs = paired_model_differences({"vgg": a, "res": b}, n_boot=200, seed=0).set_index("analyzer")
    z = pairs.loc["z"]
    assert (z["a"], z["b"], z["n_units"]) == ("vgg", "res", 3)
    assert z["diff"] == pytest.approx(0.5) and z["diff_lo"] == pytest.approx(0.5) and z["diff_hi"] == pytest.approx(0.5)
    assert z["p"] == 0.0 and bool(z["significant"])  # a constant non-zero difference: no resample says otherwise
    g = pairs.loc["g"]
    assert g["diff"] == 0.0 and g["p"] == 1.0 and not bool(g["significant"])


def test_paired_model_differences_see_what_overlapping_cis_hide():
    """The point of pairing: two models whose μ_w vary together with the unit (its box size) have overlapping
    per-model CIs, yet a small consistent gap is significant; an unpaired noise-only gap is not, after Holm."""
    from lrp.evaluation.model_pairs import paired_model_differences

    rng = np.random.default_rng(1)
    ids = [f"u{i}" for i in range(400)]
    unit = rng.gamma(2.0, 1.5, 400)  # shared unit effect, sd ≈ 2.1
    vgg = {"x": pd.Series(unit, ids), "y": pd.Series(unit, ids)}
    res = {"x": pd.Series(unit + 0.1 + rng.normal(0, 0.2, 400), ids),
           "y": pd.Series(unit + rng.normal(0, 0.2, 400), ids)}
    pairs = paired_model_differences({"vgg": vgg, "res": res}, n_boot=1000, seed=0).set_index("analyzer")
    se_unpaired = unit.std() / np.sqrt(400) * np.sqrt(2)  # the gap measured against two separate CIs
    assert pairs.loc["x", "diff"] < 1.96 * se_unpaired  # overlapping per-model CIs ...
    assert bool(pairs.loc["x", "significant"]) and pairs.loc["x", "diff_lo"] > 0  # ... and a real difference
    assert not bool(pairs.loc["y", "significant"])
    p_small, p_large = sorted(pairs["p"])  # Holm by hand for two tests: 2·p₍₁₎, then max(that, p₍₂₎), capped at 1
    holm = {p_small: min(1.0, 2 * p_small), p_large: min(1.0, max(2 * p_small, p_large))}
    assert pairs["p_holm"].tolist() == pytest.approx([holm[p] for p in pairs["p"]])


def test_paired_model_differences_refuse_other_units_and_skip_mostly_nan():
    from lrp.evaluation.model_pairs import paired_model_differences

    with pytest.raises(ValueError, match="score different units"):
        paired_model_differences({"a": {"z": pd.Series([1.0], ["u0"])}, "b": {"z": pd.Series([1.0], ["u1"])}})
    with pytest.raises(ValueError, match="at least two datasets"):
        paired_model_differences({"a": {"z": pd.Series([1.0], ["u0"])}})
    ids = ["u0", "u1", "u2"]
    out = paired_model_differences({"a": {"z": pd.Series([1.0, np.nan, np.nan], ids)},
                                    "b": {"z": pd.Series([1.0, 2.0, 3.0], ids)}})
    assert np.isnan(out.loc[0, "diff"]) and np.isnan(out.loc[0, "p_holm"]) and pd.isna(out.loc[0, "significant"])
    with pytest.raises(ValueError, match="could not convert"):  # a text cell is an error, not a NaN to skip
        paired_model_differences({"a": {"z": pd.Series(["1.0", "oops", "2"], ids, dtype=object)},
                                  "b": {"z": pd.Series([1.0, 2.0, 3.0], ids)}})
    with pytest.raises(ValueError, match="n_boot must be at least 1"):
        paired_model_differences({"a": {"z": pd.Series([1.0], ["u0"])}, "b": {"z": pd.Series([2.0], ["u0"])}}, n_boot=0)
    one = paired_model_differences({"a": {"z": pd.Series([1.0, 2.0], ids[:2])},
                                    "b": {"z": pd.Series([1.5, 2.7], ids[:2])}}, n_boot=1)
    assert one.loc[0, "diff"] == pytest.approx(0.6) and np.isnan(one.loc[0, "p"])  # one resample: no test
    assert pd.isna(one.loc[0, "significant"])


def test_the_comparison_table_shows_the_paired_difference(tmp_path):
    from lrp.pipeline.report import comparison

    ids = [f"u{i}" for i in range(50)]
    rng = np.random.default_rng(0)
    inputs, metrics = {}, {}
    for d, shift in (("a", 0.0), ("b", 0.3)):
        row = {c: "" for c in INDEX_COLUMNS} | {"class_index": 0, "width": 8, "height": 8, "n_boxes": 1,
                                                 "box_fraction": 0.5}
        pd.DataFrame([{**row, "sample_id": s} for s in ids], columns=INDEX_COLUMNS).to_csv(tmp_path / f"{d}.csv",
                                                                                            index=False)
        _tables({"lrp_z": 2.0 + shift, "gradient": 1.0, "baseline": 1.0})["table1"].to_csv(tmp_path / f"t1_{d}.csv",
                                                                                           index=False)
        inputs[d] = {"samples": tmp_path / f"{d}.csv", "table1": tmp_path / f"t1_{d}.csv"}
        metrics[d] = {}
        for name, values in (("lrp_z", 2.0 + shift + rng.normal(0, 0.01, 50)), ("gradient", np.ones(50))):
            path = tmp_path / f"m_{d}_{name}.csv"
            pd.DataFrame({"sample_id": ids, "mu": 0.5, "mu_w": values, "box_fraction": np.linspace(0, 1, 50)}).to_csv(
                path, index=False)
            metrics[d][name] = path
    out = {k: tmp_path / f"out.{k}" for k in ("csv", "md", "tex", "png", "pdf")} | {
        "pairs": tmp_path / "pairs.csv", "fig3_png": tmp_path / "f3.png", "fig3_pdf": tmp_path / "f3.pdf"}
    comparison("x", inputs, {"a": "VGG", "b": "ResNet"}, out, metrics=metrics, n_boot=200, seed=0, min_count=2)
    assert out["fig3_png"].stat().st_size > 1000 and out["fig3_pdf"].read_bytes().startswith(b"%PDF")
    md = out["md"].read_text()
    assert "Δμ_w ResNet − VGG" in md and "+0.3" in md and "†" in md
    pairs = pd.read_csv(out["pairs"])
    assert set(pairs["analyzer"]) == {"lrp_z", "gradient"} and pairs.set_index("analyzer").loc["lrp_z", "significant"]
    table = pd.read_csv(out["csv"]).set_index(["dataset", "analyzer"])
    assert np.isnan(table.loc[("a", "lrp_z"), "mu_w_diff"]) and table.loc[("b", "lrp_z"), "mu_w_diff"] > 0.29


@pytest.mark.parametrize("edit, message", [
    (lambda df: df.drop(columns="box_fraction"), "lacks box_fraction"),
    (lambda df: pd.concat([df, df.iloc[:1]]), "unit 'u0' appears twice"),
    (lambda df: df.assign(mu_w=["x"] + [1.0] * (len(df) - 1)), "row 2: mu_w 'x' is not a number"),
    (lambda df: df.assign(box_fraction=[0.5, 1.5, 0.2]), "row 3: box_fraction outside"),
])
def test_a_hand_edited_metrics_file_is_refused_naming_it(tmp_path, edit, message):
    """The comparison reads every analyzer's per-unit metrics: a malformed file stops it with the file and row."""
    from lrp.pipeline.report import _unit_metrics

    path = tmp_path / "m.csv"
    edit(pd.DataFrame({"sample_id": ["u0", "u1", "u2"], "mu": 0.5, "mu_w": 1.0, "box_fraction": 0.5})).to_csv(
        path, index=False)
    with pytest.raises(ValueError, match=rf"m\.csv: .*{message}"):
        _unit_metrics(path)


def test_a_metrics_file_of_other_units_is_refused_naming_it(tmp_path):
    from lrp.pipeline.report import _unit_metrics

    path = tmp_path / "m.csv"
    pd.DataFrame({"sample_id": ["u0", "u9"], "mu": 0.5, "mu_w": 1.0, "box_fraction": 0.5}).to_csv(path, index=False)
    assert list(_unit_metrics(path, {"u0", "u9"}).index) == ["u0", "u9"]
    with pytest.raises(ValueError, match=r"m\.csv: scores other units than the dataset's samples.csv \(2 differ"):
        _unit_metrics(path, {"u0", "u1"})


def test_fig3_across_models_draws_one_panel_per_analyzer(tmp_path):
    from lrp.evaluation.metrics import size_curve
    from lrp.report.comparison_fig3 import plot_comparison_fig3

    f = np.random.default_rng(0).uniform(0, 1, 500)
    curves = {f"A{i}": {"vgg": size_curve(f ** 0.5, f, 20), "resnet": size_curve(f, f, 20)} for i in range(5)}
    plot_comparison_fig3(curves, tmp_path / "a.png", tmp_path / "a.pdf", "t", min_count=5)
    import matplotlib.image as mpimg

    h, w = mpimg.imread(tmp_path / "a.png").shape[:2]
    assert w > h  # two rows of four panels (the last three hidden)
    curves["A0"]["resnet"] = size_curve(f, f, 10)
    with pytest.raises(ValueError, match="'A0' of model 'resnet' uses other bins"):
        plot_comparison_fig3(curves, tmp_path / "b.png", tmp_path / "b.pdf", "t")
    with pytest.raises(ValueError, match="no curves"):
        plot_comparison_fig3({}, tmp_path / "c.png", tmp_path / "c.pdf", "t")
