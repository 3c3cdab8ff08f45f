"""Localisation measures beside μ: the map scores an attribution job stores (`lrp.evaluation.map_scores`), the
rates made of them (`lrp.evaluation.localisation`) and the pointing game (`lrp.evaluation.pointing`).

Each is checked on a hand-computed case and against an independent implementation: Quantus 0.6.0 where it has
the measure (its deviations named in each test), TorchRay's raster hit test, PIL's bilinear resize."""

import numpy as np
import pytest
import torch
from PIL import Image

from lrp.evaluation.localisation import baseline_localisation, energy_pointing, rank_accuracy, topk_intersection
from lrp.evaluation.map_scores import map_scores, top_k_pixels
from lrp.evaluation.pointing import centre_points, point_hits, pointing_game

quantus = pytest.importorskip("quantus")


def _scores(maps, masks, k, regions=None):
    maps = torch.as_tensor(np.asarray(maps, np.float32))
    n, h, w = maps.shape
    regions = np.tile([[0, 0, w, h]], (n, 1)) if regions is None else regions
    return map_scores(maps, torch.as_tensor(np.asarray(masks, bool)), regions, k)


def test_map_scores_hand_computed():
    L = np.array([[[5, 1, 0, 0],
                   [4, 3, 0, -2],
                   [0, 0, 2, 0],
                   [0, 0, 0, -1]]], np.float32)
    mask = np.zeros((1, 4, 4), bool)
    mask[0, :2, :2] = True  # holds 5, 1, 4, 3
    s = _scores(L, mask, k=3)
    # top-4 (|mask|) values 5, 4, 3, 2: three of them inside -> 3
    assert s["rank_in"][0] == 3 and rank_accuracy(s["rank_in"], [4])[0] == 0.75
    # top-3: 5, 4, 3, all inside
    assert s["topk_in"][0] == 3 and topk_intersection(s["topk_in"], 3, [4])[0] == 1.0
    # energy: L - min = L + 2; inside 7 + 3 + 6 + 5 = 21; total ΣL + 2·16 = 12 + 32 = 44
    assert (s["e_in"][0], s["e_tot"][0]) == (21, 44) and energy_pointing(s["e_in"], s["e_tot"])[0] == 21 / 44
    assert (s["point_x"][0], s["point_y"][0]) == (0, 0)


def test_ties_at_the_kth_value_share_the_places_in_proportion():
    L = np.zeros((2, 4, 4), np.float32)
    L[0, 0, 0] = 1  # one top pixel inside; the next 3 places go to 15 tied zeros, 3 of which are inside
    mask = np.zeros((2, 4, 4), bool)
    mask[:, 0, :] = True
    s = _scores(L, mask, k=4)
    assert s["rank_in"][0] == pytest.approx(1 + 3 * 3 / 15)
    # an all-equal map scores the mask's share, as the uniform Baseline row does
    assert s["rank_in"][1] == pytest.approx(4 * 4 / 16) and s["topk_in"][1] == pytest.approx(4 * 4 / 16)
    assert np.isnan(energy_pointing(s["e_in"], s["e_tot"])[1])  # constant map: no energy to share
    base = baseline_localisation([4, 0], [16, 16])
    assert base["rank_accuracy"][0] == 0.25 and np.isnan(base["topk"][1])


def test_empty_masks_are_nan_not_zero():
    s = _scores(np.random.default_rng(0).normal(size=(1, 5, 5)), np.zeros((1, 5, 5), bool), k=3)
    assert np.isnan(rank_accuracy(s["rank_in"], [0])[0]) and np.isnan(topk_intersection(s["topk_in"], 3, [0])[0])


def test_top_k_scales_with_the_area():
    assert top_k_pixels(224) == 1000 and top_k_pixels(64) == round(1000 * 64 * 64 / 224 ** 2) == 82
    assert top_k_pixels(4, top_k=10 ** 6) == 16  # never more than the map
    with pytest.raises(ValueError, match="positive"):
        top_k_pixels(0)


def _random_case(seed, n=12, size=20):
    rng = np.random.default_rng(seed)
    maps = rng.normal(size=(n, size, size)).astype(np.float32)  # continuous: no ties
    masks = np.zeros((n, size, size), bool)
    for i in range(n):
        x0, y0 = rng.integers(0, size - 2, 2)
        masks[i, y0:y0 + rng.integers(1, size - y0), x0:x0 + rng.integers(1, size - x0)] = True
    return maps, masks


def _quantus(metric, maps, masks):
    x = np.zeros((len(maps), 3, *maps.shape[1:]), np.float32)
    return np.asarray(metric(model=None, x_batch=x, y_batch=np.zeros(len(maps), int), a_batch=maps[:, None],
                             s_batch=masks[:, None].astype(np.float32), channel_first=True), dtype=np.float64)


def test_rank_accuracy_and_top_k_equal_quantus_on_maps_without_ties():
    """Quantus ranks by np.argsort, so on tied values it takes memory order where we share fairly; on
    continuous maps (no ties) the two are the same. abs=False, normalise=False: Quantus' defaults would rank
    |R| of a max-normalised map."""
    maps, masks = _random_case(1)
    s = _scores(maps, masks, k=25)
    ours_rank = rank_accuracy(s["rank_in"], masks.sum((1, 2)))
    theirs = _quantus(quantus.RelevanceRankAccuracy(abs=False, normalise=False, disable_warnings=True), maps, masks)
    np.testing.assert_allclose(ours_rank, theirs, rtol=0, atol=1e-12)
    ours_topk = topk_intersection(s["topk_in"], 25, masks.sum((1, 2)))
    theirs = _quantus(quantus.TopKIntersection(k=25, abs=False, normalise=False, disable_warnings=True), maps, masks)
    np.testing.assert_allclose(ours_topk, theirs, rtol=0, atol=1e-12)


def test_pointing_with_tolerance_one_equals_quantus_pointing_game():
    """Quantus' PointingGame has no tolerance: a hit is the maximum inside the mask. Ours with tolerance 1
    accepts only the point's own pixel (distance 0 < 1), which is the same test. Quantus counts an empty mask
    as a hit (its bool result array turns the NaN it assigns into True); ours never hits one."""
    maps, masks = _random_case(2)
    s = _scores(maps, masks, k=1)
    boxes = []
    for m in masks:
        ys, xs = np.nonzero(m)
        boxes.append(np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], float))
    ours = point_hits(np.stack([s["point_x"], s["point_y"]], 1), boxes, tolerance=1)
    theirs = _quantus(quantus.PointingGame(abs=False, normalise=False, disable_warnings=True), maps, masks)
    np.testing.assert_array_equal(ours, theirs.astype(bool))
    assert 0 < ours.sum() < len(ours)  # both outcomes occur
    empty = _quantus(quantus.PointingGame(abs=False, normalise=False, disable_warnings=True), maps[:1],
                     np.zeros_like(masks[:1]))
    assert empty[0] == 1.0 and not point_hits([[3.0, 3.0]], [np.zeros((0, 4))])[0]


def test_the_maximum_is_taken_at_the_original_resolution():
    """The map is resized bilinearly (align_corners=False) to where it lies in the original image; PIL's
    BILINEAR upscaling of a float image is the same filter, computed independently."""
    rng = np.random.default_rng(3)
    maps = rng.normal(size=(3, 8, 8)).astype(np.float32)
    regions = np.array([[0, 0, 8, 8], [5, 2, 21, 13], [5, 2, 21, 13]])  # (left, top, width, height)
    s = _scores(maps, np.ones((3, 8, 8), bool), k=1, regions=regions)
    for i, (left, top, w, h) in enumerate(regions):
        big = np.asarray(Image.fromarray(maps[i]).resize((w, h), Image.BILINEAR), np.float64)
        x, y = int(s["point_x"][i]) - left, int(s["point_y"][i]) - top
        assert 0 <= x < w and 0 <= y < h
        assert big[y, x] == pytest.approx(big.max(), rel=1e-5), i
    assert (s["point_x"][0], s["point_y"][0]) == np.unravel_index(maps[0].argmax(), (8, 8))[::-1]


def test_map_scores_refuse_bad_input():
    m = torch.zeros(2, 4, 4)
    with pytest.raises(ValueError, match="bool of the maps' shape"):
        map_scores(m, torch.zeros(2, 4, 4), [[0, 0, 4, 4]] * 2, 2)
    with pytest.raises(ValueError, match="regions must be"):
        map_scores(m, torch.zeros(2, 4, 4, dtype=torch.bool), [[0, 0, 4, 4]], 2)
    m[1, 0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"non-finite relevance in samples \[1\]"):
        map_scores(m, torch.zeros(2, 4, 4, dtype=torch.bool), [[0, 0, 4, 4]] * 2, 2)


def _torchray_hit(mask, point, tolerance=15):
    """TorchRay's PointingGame.evaluate, verbatim in numpy: an acceptance disc around the point."""
    v, u = np.meshgrid((np.arange(mask.shape[0], dtype=np.float32) - point[1]) ** 2,
                       (np.arange(mask.shape[1], dtype=np.float32) - point[0]) ** 2, indexing="ij")
    return bool((mask & ((v + u) < tolerance ** 2)).any())


def test_point_hits_equal_torchrays_raster_test():
    rng = np.random.default_rng(4)
    n_hit = 0
    for _ in range(300):
        w, h = rng.integers(20, 120, 2)
        k = rng.integers(1, 4)
        x0, y0 = rng.integers(0, w - 1, k), rng.integers(0, h - 1, k)
        boxes = np.stack([x0, y0, [rng.integers(a + 1, w + 1) for a in x0],
                          [rng.integers(b + 1, h + 1) for b in y0]], 1).astype(float)
        mask = np.zeros((h, w), bool)
        for a, b, c, d in boxes.astype(int):
            mask[b:d, a:c] = True
        point = rng.uniform(0, [w, h]) if rng.random() < 0.5 else rng.integers(0, [w, h]).astype(float)
        ours = point_hits([point], [boxes])[0]
        assert ours == _torchray_hit(mask, point), (boxes, point)
        n_hit += ours
    assert 50 < n_hit < 250  # both outcomes are exercised


def test_pointing_game_is_the_mean_of_per_class_rates():
    hits = [1, 0, 1, 1, 0, 1]
    cls = [0, 0, 0, 1, 1, 2]
    skip = [False, False, False, False, False, True]  # class 2's only pair: all boxes difficult
    pg = pointing_game(hits, cls, skip)
    assert pg["per_class"] == {0: (2, 3), 1: (1, 2)}
    assert pg["pointing"] == pytest.approx((2 / 3 + 1 / 2) / 2) and pg["pointing_pairs"] == pytest.approx(3 / 5)
    assert (pg["n_pairs"], pg["n_skipped"]) == (5, 1)
    np.testing.assert_array_equal(centre_points([10, 7], [4, 5]), [[5, 2], [3.5, 2.5]])
    with pytest.raises(ValueError, match="2 points for 1 units"):
        point_hits([[0, 0], [1, 1]], [np.zeros((1, 4))])


# ---------------------------------------------------------------- paired statistics
from lrp.evaluation.paired import holm, paired_bootstrap  # noqa: E402


def test_holm_hand_computed():
    # p sorted 0.01, 0.02, 0.04 with m = 3: 0.03, 0.04, 0.04 (monotone), back in input order
    np.testing.assert_allclose(holm([0.04, 0.01, 0.02]), [0.04, 0.03, 0.04])
    assert holm([0.6, 0.5])[0] == 1.0


def test_paired_bootstrap_sees_a_small_shared_gap_that_separate_cis_miss():
    """b = a + 0.01 on every unit, with large unit-to-unit spread: the separate CIs overlap, the paired
    difference is certain; c equals a up to noise far below the spread and is not distinguishable."""
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, 500)
    per, pw = paired_bootstrap({"a": a, "b": a + 0.01, "c": a + rng.normal(0, 1e-3, 500)}, n_boot=400, seed=1)
    per = per.set_index("analyzer")
    assert per.loc["a", "hi"] > per.loc["b", "lo"]  # the separate CIs overlap
    ab = pw[(pw.a == "a") & (pw.b == "b")].iloc[0]
    assert ab["diff"] == pytest.approx(-0.01) and ab["significant"] and ab["diff_hi"] < 0
    ac = pw[(pw.a == "a") & (pw.b == "c")].iloc[0]
    assert not ac["significant"] and ab["p"] < 1e-12  # a constant gap has no bootstrap spread at all
    # the p-value is the normal tail of diff / bootstrap se: check it against the resampled differences
    d = a + 0.02 * rng.normal(size=500)
    per2, pw2 = paired_bootstrap({"a": a, "d": d}, n_boot=2000, seed=2)
    row = pw2.iloc[0]
    se = (row["diff_hi"] - row["diff_lo"]) / (2 * 1.959964)  # percentile CI ≈ ± 1.96 se for a normal statistic
    from math import erfc, sqrt

    assert row["p"] == pytest.approx(erfc(abs(row["diff"]) / se / sqrt(2)), rel=0.15, abs=0.02)
    assert per["tied_with_best"].to_dict() == {"a": False, "b": True, "c": False}
    assert per.loc["b", "rank"] == 1 and per.loc["b", "p_best"] == 1.0 and per.loc["b", "p_holds_rank"] == 1.0
    assert 0 < per.loc["a", "p_holds_rank"] < 1  # a and c swap ranks from resample to resample


def test_paired_bootstrap_with_groups_is_the_mean_of_group_means():
    hits = {"x": np.array([1, 1, 0, 1.0]), "y": np.array([0, 1, 1, 1.0])}
    per, _ = paired_bootstrap(hits, n_boot=10, groups=np.array([0, 0, 0, 1]))
    assert per.set_index("analyzer")["value"].to_dict() == pytest.approx({"x": (2 / 3 + 1) / 2, "y": (2 / 3 + 1) / 2})
    per, _ = paired_bootstrap({"x": np.array([1, np.nan, 0.0]), "y": np.array([1, 1, 1.0])}, n_boot=10)
    assert per.attrs["n_units"] == 2 and per.attrs["n_dropped"] == 1
    with pytest.raises(ValueError, match="at least two"):
        paired_bootstrap({"x": np.ones(3)})
    with pytest.raises(ValueError, match="same units"):
        paired_bootstrap({"x": np.ones(3), "y": np.ones(4)})


def test_an_analyzer_mostly_nan_is_left_out_not_shrinking_the_common_units():
    rng = np.random.default_rng(5)
    x = rng.uniform(size=100)
    mostly_nan = np.where(np.arange(100) < 70, np.nan, x)
    per, pw = paired_bootstrap({"x": x, "y": x + 0.1, "z": mostly_nan}, n_boot=50)
    assert per.attrs["left_out"] == ["z"] and per.attrs["n_units"] == 100
    z = per.set_index("analyzer").loc["z"]
    assert np.isnan(z["value"]) and not z["tied_with_best"] and set(pw["a"]) | set(pw["b"]) == {"x", "y"}
    with pytest.raises(ValueError, match="left out: \\['z'\\]"):
        paired_bootstrap({"x": x, "z": mostly_nan}, n_boot=5)


def test_clear_gaps_stay_significant_among_thirteen_analyzers():
    """78 pairs under Holm: a p-value floor of 2/(n_boot + 1) would make no gap significant; the standard-error
    p-value keeps clear gaps significant and only the close pair tied."""
    rng = np.random.default_rng(6)
    base = rng.uniform(size=2000)
    values = {f"a{i}": base + 0.05 * i + rng.normal(0, 0.05, 2000) for i in range(12)}
    values["a11_twin"] = values["a11"] + rng.normal(0, 0.05, 2000)
    per, pw = paired_bootstrap(values, n_boot=1000)
    tied = set(per.loc[per["tied_with_best"], "analyzer"])
    assert tied == {"a11", "a11_twin"}
    assert pw["significant"].sum() >= 70


def test_hostile_index_columns_are_refused_naming_file_and_row(tmp_path):
    """samples.csv may be edited by hand: bad box or flag JSON stops the baseline stage with file and row."""
    import pandas as pd

    from lrp.datasets.index import INDEX_COLUMNS
    from lrp.pipeline.data import baseline

    row = {"sample_id": "a", "image_id": "a", "split": "test", "image_file": "a.jpg", "class_index": 0,
           "class_name": "c", "width": 10, "height": 10, "n_boxes": 1, "box_fraction": 0.5,
           "boxes": "[[0, 0, 5, 10]]", "source_boxes": "[[0, 0, 5, 10]]", "difficult": "[0]"}
    cases = [("source_boxes", "[[0, 0, 5]]", "row 2: source_boxes"), ("source_boxes", "[[0, 0, NaN, 1]]", "finite"),
             ("difficult", "[0, 1]", "2 flags for 1 boxes"), ("difficult", '"yes"', "list of 0/1"),
             ("difficult", "{", "row 2: difficult")]
    for column, value, message in cases:
        df = pd.DataFrame([row, {**row, "sample_id": "b", column: value}], columns=INDEX_COLUMNS)
        df.to_csv(tmp_path / "samples.csv", index=False)
        with pytest.raises(ValueError, match=rf"samples\.csv: .*{message}"):
            baseline(tmp_path / "samples.csv", tmp_path / "baseline.csv")
    assert not (tmp_path / "baseline.csv").exists()
