"""μ / μ_w contract (data protocol §1.2), summaries, size curves, and the Quantus cross-check (§1.3)."""

import numpy as np
import pytest
import torch

from lrp.evaluation import metrics
from lrp.evaluation.metrics import (
    baseline_mu,
    bin_index,
    inside_total_ratio,
    mu_from_sums,
    relevance_sums,
    size_curve,
    summarize,
)


def _mask(shape, *pixels):
    m = np.zeros(shape, bool)
    for p in pixels:
        m[p] = True
    return m


# ---------------------------------------------------------------- per-sample μ, μ_w


def test_hand_2x2_channel_summed_input():
    r = np.array([[[1.0, 2.0], [3.0, -4.0]]])  # (1,2,2): -4 clipped; R_tot = 6
    mu, mu_w = inside_total_ratio(r, _mask((1, 2, 2), (0, 0, 0)))
    assert mu[0] == pytest.approx(1 / 6)
    assert mu_w[0] == pytest.approx(1 / 6 * 4 / 1)


def test_hand_3x3_clips_after_channel_sum_not_before():
    c0 = [[2, -1, 0], [0, 0, 0], [0, 0, 1]]
    c1 = [[-1, 3, 0], [0, 0, 0], [0, 0, -3]]
    r = np.array([[c0, c1]], dtype=np.float32)  # pixel sum [[1,2,0],[0,0,0],[0,0,-2]]
    m = _mask((1, 3, 3), (0, 0, 1))
    mu, mu_w = inside_total_ratio(r, m)
    assert (mu[0], mu_w[0]) == pytest.approx((2 / 3, 2 / 3 * 9))
    # the other convention (clip each channel first) gives 3/6; make sure the flag really differs
    mu_b, mu_w_b = inside_total_ratio(r, m, positive_part="before_channel_sum")
    assert (mu_b[0], mu_w_b[0]) == pytest.approx((0.5, 4.5))
    with pytest.raises(ValueError, match="positive_part"):
        inside_total_ratio(r, m, positive_part="abs")


def test_empty_box_and_no_positive_relevance_are_nan():
    r = np.ones((3, 1, 4, 4))
    r[1] = -1.0  # all negative -> R_tot = 0 after clipping
    r[2] = 0.0  # all zero -> R_tot = 0
    m = np.ones((3, 4, 4), bool)
    m[0] = False  # S_in = 0
    mu, mu_w = inside_total_ratio(r, m)
    assert np.isnan(mu).all() and np.isnan(mu_w).all()


def test_full_image_box_gives_exactly_one():
    r = np.random.default_rng(0).normal(size=(5, 3, 7, 9))
    mu, mu_w = inside_total_ratio(r, np.ones((5, 7, 9), bool))
    assert (mu == 1.0).all() and (mu_w == 1.0).all()


def test_uniform_relevance_equals_analytic_baseline():
    rng = np.random.default_rng(1)
    m = rng.random((6, 10, 10)) < 0.3
    mu, mu_w = inside_total_ratio(np.full((6, 3, 10, 10), 0.7), m)
    b_mu, b_w = baseline_mu(m.mean(axis=(1, 2)))
    np.testing.assert_allclose(mu, b_mu, rtol=1e-12)
    np.testing.assert_allclose(mu_w, b_w, rtol=1e-12)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_relevance_fails_loudly(bad):
    r = np.ones((2, 3, 4, 4))
    r[1, 2, 0, 0] = bad
    with pytest.raises(ValueError, match=r"non-finite relevance in samples \[1\]"):
        inside_total_ratio(r, np.ones((2, 4, 4), bool))


def test_bad_mask_rejected():
    r = np.ones((2, 3, 4, 4))
    with pytest.raises(ValueError, match="bool"):
        inside_total_ratio(r, np.ones((2, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="shape"):
        inside_total_ratio(r, np.ones((2, 4, 5), bool))
    with pytest.raises(ValueError, match=r"\(N,C,H,W\) or \(N,H,W\)"):
        inside_total_ratio(np.ones((4, 4)), np.ones((4, 4), bool))


@pytest.mark.parametrize("shape", [(4, 3, 8, 8), (4, 8, 8)])
def test_torch_input_matches_numpy(shape):
    """The torch path (summed on the tensor's device: GPU attribution jobs score maps this way) gives the
    numpy path's float64 sums, up to summation order."""
    rng = np.random.default_rng(2)
    r = rng.normal(size=shape).astype(np.float32)
    m = rng.random((4, 8, 8)) < 0.4
    expect, got = relevance_sums(r, m), relevance_sums(torch.from_numpy(r), torch.from_numpy(m))
    for k in expect:
        assert got[k].dtype == np.float64
        np.testing.assert_allclose(got[k], expect[k], rtol=1e-12)
    for e, g in zip(inside_total_ratio(r, m), inside_total_ratio(torch.from_numpy(r), m)):
        np.testing.assert_allclose(g, e, rtol=1e-12)
    with pytest.raises(ValueError, match=r"non-finite relevance in samples \[1\]"):
        relevance_sums(torch.tensor([[[1.0]], [[float("-inf")]]]), torch.ones(2, 1, 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask must be bool"):
        relevance_sums(torch.from_numpy(r), torch.ones(m.shape))
    with pytest.raises(ValueError, match="mask shape"):
        relevance_sums(torch.from_numpy(r), torch.ones(4, 8, 9, dtype=torch.bool))


@pytest.mark.parametrize("form", ["numpy NCHW", "numpy NHW", "torch NCHW", "torch NHW"])
def test_sums_accumulate_in_float64(form):
    r = np.ones((1, 1, 100, 100), np.float32)
    r[0, 0, 0, 0] = 1e8  # float32 accumulation would lose the 9,999 ones (ulp of 1e8 is 8)
    if "NHW" in form:
        r = r[:, 0]  # a channel-summed float32 map, as the shards store and attribution jobs score
    m = _mask((1, 100, 100), (0, 0, 0))
    if "torch" in form:
        r, m = torch.from_numpy(r), torch.from_numpy(m)
    s = relevance_sums(r, m)
    assert s["r_tot"][0] == 1e8 + 9999 and s["r_in"][0] == 1e8
    assert s["r_tot"].dtype == np.float64
    assert s["s_in"][0] == 1 and s["s_tot"][0] == 10000


def test_sums_roundtrip_to_mu():
    rng = np.random.default_rng(3)
    r, m = rng.normal(size=(5, 3, 6, 6)), rng.random((5, 6, 6)) < 0.5
    for a, b in zip(mu_from_sums(**relevance_sums(r, m)), inside_total_ratio(r, m)):
        np.testing.assert_array_equal(a, b)


def test_agrees_with_quantus_unweighted_except_zero_relevance():
    quantus = pytest.importorskip("quantus")
    rng = np.random.default_rng(4)
    n, h, w = 12, 16, 16
    r = rng.normal(size=(n, 3, h, w))
    r[5] = -np.abs(r[5])  # R_tot = 0: Quantus says 0, we say NaN (protocol §1.2/§1.3)
    m = np.zeros((n, h, w), bool)
    for i in range(n):
        y0, x0 = rng.integers(0, 10, 2)
        m[i, y0:y0 + rng.integers(1, 7), x0:x0 + rng.integers(1, 7)] = True
    metric = quantus.AttributionLocalisation(abs=False, positive_attributions=True, normalise=False,
                                             weighted=False, aggregate_func=np.nanmean, disable_warnings=True)
    q = np.asarray(metric(model=None, x_batch=rng.normal(size=(n, 3, h, w)).astype(np.float32),
                          y_batch=np.zeros(n, int), a_batch=r.sum(1), s_batch=m[:, None].astype(np.float32),
                          channel_first=True), dtype=float)
    mu, mu_w = inside_total_ratio(r, m)
    ok = np.arange(n) != 5
    np.testing.assert_allclose(mu[ok], q[ok], rtol=1e-7)
    assert q[5] == 0.0 and np.isnan(mu[5])
    np.testing.assert_allclose(mu_w[ok], q[ok] / m[ok].mean(axis=(1, 2)), rtol=1e-7)  # weighting ourselves


# ---------------------------------------------------------------- baseline and summaries


def test_baseline_mu():
    mu, mu_w = baseline_mu([0.0, 0.25, 1.0])
    assert np.isnan(mu[0]) and np.isnan(mu_w[0])
    assert list(mu[1:]) == [0.25, 1.0] and list(mu_w[1:]) == [1.0, 1.0]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        baseline_mu([1.2])


def test_summarize_hand_case():
    mu = np.array([0.2, 0.4, np.nan, 0.9, 0.6])
    mu_w = np.array([2.0, 4.0 / 3, np.nan, 1.5, 0.8])
    f = np.array([0.1, 0.25, 0.0, 0.6, 0.5])  # 0.25 and 0.5 are inside their thresholds (≤)
    s = summarize(mu, mu_w, f, n_boot=200)
    assert s["mu"] == pytest.approx(np.nanmean(mu))
    assert s["mu_w"] == pytest.approx(np.nanmean(mu_w))
    assert s["mu_le_0.25"] == pytest.approx(0.3)
    assert s["mu_le_0.5"] == pytest.approx((0.2 + 0.4 + 0.6) / 3)
    assert (s["n_used"], s["n_nan"], s["n_le_0.25"], s["n_le_0.5"]) == (4, 1, 2, 3)
    assert (s["n_all_le_0.25"], s["n_all_le_0.5"]) == (2, 3)  # the empty box (f = 0) is in no bin
    # a NaN unit (no positive relevance) with a small box: not averaged, but counted in the run's bin sizes
    s = summarize(np.array([0.2, np.nan, 0.7]), np.array([2.0, np.nan, 1.0]), np.array([0.1, 0.2, 0.7]), n_boot=10)
    assert (s["n_le_0.25"], s["n_all_le_0.25"], s["n_le_0.5"], s["n_all_le_0.5"]) == (1, 2, 1, 2)
    for k in ("mu_w", "mu_le_0.25", "mu_le_0.5", "mu"):
        assert s[f"{k}_lo"] <= s[k] <= s[f"{k}_hi"]


def test_summarize_baseline_ci_is_degenerate_at_one():
    f = np.random.default_rng(5).random(300)
    s = summarize(*baseline_mu(f), f, n_boot=100)
    assert s["mu_w"] == s["mu_w_lo"] == s["mu_w_hi"] == 1.0


def test_summarize_empty_threshold_subset_is_nan():
    s = summarize(np.array([0.7, 0.8]), np.array([1.0, 1.1]), np.array([0.6, 0.9]), n_boot=50)
    assert np.isnan([s["mu_le_0.25"], s["mu_le_0.25_lo"], s["mu_le_0.25_hi"]]).all()
    assert s["n_le_0.25"] == 0 and s["mu"] == pytest.approx(0.75)


def _draw(n, seed):
    rng = np.random.default_rng(seed)
    f = rng.uniform(0.01, 1, n)
    mu = np.clip(f + rng.normal(0, 0.2, n), 0, 1)
    return mu, mu / f, f


def test_bootstrap_ci_contains_mean_narrows_with_n_and_matches_se():
    small, large = summarize(*_draw(100, 6)), summarize(*_draw(4000, 6))
    for s in (small, large):
        for k in ("mu_w", "mu_le_0.25", "mu_le_0.5", "mu"):
            assert s[f"{k}_lo"] < s[k] < s[f"{k}_hi"]
    for k in ("mu_w", "mu"):
        assert large[f"{k}_hi"] - large[f"{k}_lo"] < 0.5 * (small[f"{k}_hi"] - small[f"{k}_lo"])
    mu, _, _ = _draw(4000, 6)
    se_width = 2 * 1.96 * mu.std(ddof=1) / np.sqrt(mu.size)
    assert large["mu_hi"] - large["mu_lo"] == pytest.approx(se_width, rel=0.15)


def test_bootstrap_deterministic_and_chunked(monkeypatch):
    data = _draw(500, 7)
    a, b = summarize(*data, n_boot=300, seed=3), summarize(*data, n_boot=300, seed=3)
    assert a == b
    assert summarize(*data, n_boot=300, seed=4)["mu_lo"] != a["mu_lo"]
    monkeypatch.setattr(metrics, "_BOOT_CHUNK_ELEMENTS", 500 * 7)  # 7 resamples per chunk, ragged last
    c = summarize(*data, n_boot=300, seed=3)
    assert c["mu_lo"] < c["mu"] < c["mu_hi"]
    assert c["mu_hi"] - c["mu_lo"] == pytest.approx(a["mu_hi"] - a["mu_lo"], rel=0.3)


def test_summarize_rejects_bad_input():
    with pytest.raises(ValueError, match="same 1-D shape"):
        summarize(np.ones(3), np.ones(2), np.ones(3))
    with pytest.raises(ValueError, match="NaN for the same samples"):
        summarize(np.array([np.nan, 1]), np.array([1.0, 1]), np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match="no samples"):
        summarize(np.array([]), np.array([]), np.array([]))


# ---------------------------------------------------------------- size curves


def test_bin_index_edges():
    v = np.array([0.0, 0.009999, 0.01, 0.25, 0.29, 0.5, 0.999, 1.0])
    assert bin_index(v, 100).tolist() == [0, 0, 1, 25, 29, 50, 99, 99]
    assert bin_index(np.array([0.25, 1.0]), 4).tolist() == [1, 3]


def test_size_curve():
    mu = np.array([0.1, 0.3, np.nan, 0.9, 1.0, 0.5])
    f = np.array([0.25, 0.25, 0.3, 1.0, 0.999, 0.0])
    c = size_curve(mu, f)
    assert len(c) == 100 and list(c.columns) == ["bin", "bin_lo", "bin_hi", "mean_mu", "count"]
    assert c.loc[25, "mean_mu"] == pytest.approx(0.2) and c.loc[25, "count"] == 2
    assert c.loc[30, "count"] == 0 and np.isnan(c.loc[30, "mean_mu"])  # NaN μ excluded
    assert c.loc[99, "count"] == 2 and c.loc[99, "mean_mu"] == pytest.approx(0.95)  # last bin closed
    assert c.loc[0, "count"] == 1
    assert c["count"].sum() == 5
    assert c.loc[25, "bin_lo"] == 0.25 and c.loc[99, "bin_hi"] == 1.0
    with pytest.raises(ValueError, match="equal shape"):
        size_curve(mu, f[:3])
