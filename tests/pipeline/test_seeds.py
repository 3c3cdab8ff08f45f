"""The seed study's pieces: one config per seed, and the spread across seeds computed by hand."""

from __future__ import annotations

import pandas as pd
import pytest

from lrp.pipeline.seeds import markdown, seed_config, spread


def test_seed_config_sets_every_trained_model_and_its_own_results():
    cfg = {"results": "results", "models": {"a": {"train": {"seed": 0, "epochs": 2}}, "b": {"weights": "w.pt"}}}
    out = seed_config(cfg, 3, "/tmp/s")
    assert out["results"] == "/tmp/s/seed3" and out["models"]["a"]["train"] == {"seed": 3, "epochs": 2}
    assert out["models"]["b"] == {"weights": "w.pt"} and cfg["models"]["a"]["train"]["seed"] == 0  # a copy
    with pytest.raises(ValueError, match="trains no model"):
        seed_config({"results": "r", "models": {"b": {"weights": "w.pt"}}}, 1, "/tmp/s")


def _table(mu_w, lo, hi):
    return pd.DataFrame({"analyzer": ["x"], "label": ["X"], "mu_w": [mu_w], "mu_w_lo": [lo], "mu_w_hi": [hi],
                         "mu": [0.5], "mu_lo": [0.4], "mu_hi": [0.6]})


def test_spread_by_hand():
    df = spread({0: _table(6.0, 5.0, 7.0), 1: _table(5.0, 4.5, 5.5), 2: _table(7.0, 6.0, 8.0)})
    r = df.iloc[0]
    assert (r["mu_w_seed0"], r["mu_w_seed1"], r["mu_w_seed2"]) == (6.0, 5.0, 7.0)
    assert r["mu_w_mean"] == pytest.approx(6.0) and r["mu_w_sd"] == pytest.approx(1.0)  # sample sd of 5, 6, 7
    assert (r["mu_w_min"], r["mu_w_max"]) == (5.0, 7.0)
    assert r["mu_w_ci_halfwidth"] == pytest.approx(1.0)  # median of 1.0, 0.5, 1.0
    assert r["mu_sd"] == 0.0
    row = "| X | 6.000 | 5.000 | 7.000 | 6.000 ± 1.000 | 5.000–7.000 | ±1.000 |"
    assert markdown(df, [0, 1, 2]).splitlines()[2] == row


def test_a_seed_without_a_value_makes_the_spread_nan_not_smaller():
    df = spread({0: _table(6.0, 5.0, 7.0), 1: _table(float("nan"), float("nan"), float("nan")),
                 2: _table(7.0, 6.0, 8.0)})
    assert df.iloc[0][["mu_w_mean", "mu_w_sd", "mu_w_min", "mu_w_max"]].isna().all()
