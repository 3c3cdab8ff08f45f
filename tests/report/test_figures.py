"""Figs. 2 and 3: files appear at the expected pixel size, the data reductions are right, bad input fails."""

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from scipy.stats import t as student_t

from lrp.evaluation.metrics import baseline_mu, size_curve
from lrp.report import figures


def _png_shape(path):
    return mpimg.imread(path).shape[:2]


def _curves(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    f = rng.beta(1.2, 1.5, n)
    curves = {lab: size_curve(np.clip(f ** p + rng.normal(0, 0.05, n), 0, 1), f)
              for lab, p in (("LRP_CMP:α2+♭", 0.3), ("LRP_z", 0.7))}
    return curves, size_curve(baseline_mu(f)[0], f)


def _occ(n=400, seed=0):
    rng = np.random.default_rng(seed)
    f = rng.uniform(0, 1, n)
    logit = rng.normal(5, 2, n)
    return pd.DataFrame({"box_fraction": f, "logit": logit,
                         "logit_object_occluded": logit - np.abs(logit) * f,
                         "logit_context_occluded": logit - 0.2 * np.abs(logit) * (1 - f)})


def test_fig3_writes_png_and_pdf(tmp_path):
    curves, base = _curves()
    png, pdf = tmp_path / "fig3" / "a.png", tmp_path / "fig3" / "a.pdf"
    figures.plot_fig3(curves, base, png, pdf, "ImageNet (VGG-16)", min_count=20)
    expect = (round(figures.FIG3_HEIGHT_IN * figures.DPI), round(figures.WIDTH_IN * figures.DPI))
    assert _png_shape(png) == expect
    assert pdf.read_bytes().startswith(b"%PDF")
    assert sorted(p.name for p in png.parent.iterdir()) == ["a.pdf", "a.png"]  # no temp files left


def test_fig3_rejects_bad_input(tmp_path):
    curves, base = _curves()
    out = (tmp_path / "x.png", tmp_path / "x.pdf")
    with pytest.raises(ValueError, match="no curves"):
        figures.plot_fig3({}, base, *out, "t")
    with pytest.raises(ValueError, match="different bins"):
        figures.plot_fig3({"a": size_curve(np.ones(3), np.ones(3), n_bins=10)}, base, *out, "t")
    with pytest.raises(ValueError, match="lacks columns"):
        figures.plot_fig3({"a": pd.DataFrame({"bin_lo": [0.0]})}, base, *out, "t")
    empty = size_curve(np.full(3, np.nan), np.ones(3))
    with pytest.raises(ValueError, match="zero samples"):
        figures.plot_fig3({"a": empty}, base, *out, "t")
    assert not any(tmp_path.iterdir())


def test_occlusion_curves_hand_case():
    occ = pd.DataFrame({"box_fraction": [0.2, 0.2, 0.7, 0.5, 0.0],
                        "logit": [2.0, -2.0, 1.0, 1e-7, 3.0],
                        "logit_object_occluded": [1.0, -3.0, 0.0, 0.0, 3.0],
                        "logit_context_occluded": [2.0, -1.0, 0.5, 0.0, 0.0]})
    d, counts = figures.occlusion_curves(occ, n_bins=10)
    assert counts == {"n_used": 3, "n_small_logit": 1, "n_empty_box": 1}
    obj, ctx = d[d.region == "object"].set_index("bin"), d[d.region == "context"].set_index("bin")
    # object: relative changes -0.5 (area .2), -0.5 (area .2, negative logit uses |f|), -1 (area .7)
    assert obj.loc[2, "mean"] == -0.5 and obj.loc[2, "count"] == 2
    assert obj.loc[2, "ci_lo"] == obj.loc[2, "ci_hi"] == -0.5
    assert obj.loc[7, "mean"] == -1.0 and np.isnan(obj.loc[7, "ci_lo"])  # n = 1: no CI
    # context: areas .8, .8, .3; changes 0, +0.5, -0.5
    assert ctx.loc[8, "mean"] == 0.25 and ctx.loc[3, "mean"] == -0.5
    half = student_t.ppf(0.975, 1) * np.std([0, 0.5], ddof=1) / np.sqrt(2)
    assert ctx.loc[8, "ci_hi"] == pytest.approx(0.25 + half)
    assert obj["count"].sum() == ctx["count"].sum() == 3 and np.isnan(obj.loc[0, "mean"])


def test_fig2_writes_png_and_pdf(tmp_path):
    png, pdf = tmp_path / "f2.png", tmp_path / "f2.pdf"
    figures.plot_fig2(_occ(), png, pdf, "PVOC 2007", n_bins=10)
    assert _png_shape(png) == (round(figures.FIG2_HEIGHT_IN * figures.DPI), round(figures.WIDTH_IN * figures.DPI))
    assert pdf.read_bytes().startswith(b"%PDF")


def test_median_ci_from_order_statistics():
    # n = 10: l = binom.ppf(0.025, 10, 1/2) = 2, so [x_(2), x_(9)], coverage 1 − 2·11/1024 ≥ 0.95
    assert figures.median_ci(np.arange(1.0, 11.0)[::-1]) == (5.5, 2.0, 9.0)
    m, lo, hi = figures.median_ci([3.0, 1.0, 2.0])
    assert m == 2.0 and np.isnan(lo) and np.isnan(hi)  # n < 6: no two order statistics cover 95 %
    rng = np.random.default_rng(0)  # coverage of the true median 0 of N(0, 1), 400 samples of n = 25
    hits = [lo <= 0 <= hi for lo, hi in (figures.median_ci(rng.normal(size=25))[1:] for _ in range(400))]
    assert 0.93 <= np.mean(hits) <= 0.995


def test_fig2_median_and_logit_change_resist_a_tiny_logit():
    """One unit with f(x) = 1e-3 turns a bin's mean ratio into −1000; the median and the logit change are
    what Fig. 2 plots."""
    n = 30
    occ = pd.DataFrame({"box_fraction": np.full(n, 0.25), "logit": np.r_[np.full(n - 1, 2.0), 1e-3],
                        "logit_object_occluded": np.r_[np.full(n - 1, 1.0), -1.0], "logit_context_occluded": 2.0})
    d, _ = figures.occlusion_curves(occ, n_bins=10)
    obj = d[d.region == "object"].set_index("bin").loc[2]
    assert obj["mean"] < -30 and obj["median"] == -0.5 and obj["median_lo"] == obj["median_hi"] == -0.5
    assert obj["mean_delta"] == pytest.approx((-(n - 1) - 1.001) / n)
    assert obj["delta_lo"] < obj["mean_delta"] < obj["delta_hi"]


def test_fig2_rejects_bad_input(tmp_path):
    out = (tmp_path / "x.png", tmp_path / "x.pdf")
    with pytest.raises(ValueError, match="empty"):
        figures.plot_fig2(_occ().iloc[:0], *out, "t")
    with pytest.raises(ValueError, match="lacks columns"):
        figures.plot_fig2(_occ().drop(columns="logit"), *out, "t")
    tiny = _occ().assign(logit=0.0)
    with pytest.raises(ValueError, match="no usable samples"):
        figures.plot_fig2(tiny, *out, "t")
    bad = _occ()
    bad.loc[3, "logit_object_occluded"] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        figures.plot_fig2(bad, *out, "t")
    assert not any(tmp_path.iterdir())


def test_pairwise_and_per_class_figures(tmp_path):
    from lrp.report.localisation_figures import plot_pairwise, plot_pointing_per_class

    table = pd.DataFrame({"analyzer": ["a", "b", "c"], "label": ["A", "B", "C"]})
    pw = pd.DataFrame({"a": ["a", "a", "b"], "b": ["b", "c", "c"], "diff": [0.1, 0.3, 0.2],
                       "p_holm": [0.2, 0.001, 0.01], "significant": [False, True, True]})
    plot_pairwise(pw, table, tmp_path / "p.png", tmp_path / "p.pdf", title="t")
    assert (tmp_path / "p.png").stat().st_size > 1000 and (tmp_path / "p.pdf").stat().st_size > 1000
    with pytest.raises(ValueError, match="lacks columns"):
        plot_pairwise(pw.drop(columns="p_holm"), table, tmp_path / "x.png", tmp_path / "x.pdf", title="t")
    with pytest.raises(ValueError, match=r"analyzers \['c'\] that the table does not have"):
        plot_pairwise(pw, table.iloc[:2], tmp_path / "x.png", tmp_path / "x.pdf", title="t")
    frames = {"A": pd.DataFrame({"class_index": [0, 0, 1], "pointing_hit": [1.0, np.nan, 0.0]})}
    plot_pointing_per_class(frames, ["disc", "square"], tmp_path / "c.png", tmp_path / "c.pdf", title="t")
    assert (tmp_path / "c.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="lack pointing_hit"):
        plot_pointing_per_class({"A": frames["A"].drop(columns="pointing_hit")}, [], tmp_path / "c.png",
                                tmp_path / "c.pdf", title="t")
