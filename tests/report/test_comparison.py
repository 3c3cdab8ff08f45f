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
