"""Which differences between models are real: per analyzer, a paired bootstrap of its per-unit μ_w on two models
scored on the same units, Holm-corrected over every (analyzer, model pair).

Why paired across models: a comparison's datasets hold the same (image, class) units, so an analyzer's μ_w on the
VGG and on the ResNet vary together with the unit (its box size above all). Comparing the two Table 1 CIs would
leave that shared variation in and call real gaps "overlapping"; resampling the units once for both models
(lrp.evaluation.paired.paired_bootstrap) takes it out. Units where either model's value is NaN are left out of
that analyzer's difference (counted in `n_units`), so the difference is on common units and may differ slightly
from the difference of the two Table 1 values.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lrp.evaluation.paired import holm, paired_bootstrap

COLUMNS = ["analyzer", "a", "b", "diff", "diff_lo", "diff_hi", "p", "n_units", "p_holm", "significant"]


def paired_model_differences(values: dict[str, dict[str, pd.Series]], n_boot: int = 1000, seed: int = 0,
                             alpha: float = 0.05, min_valid: float = 0.5) -> pd.DataFrame:
    """One row per analyzer and pair of datasets (a, b), a before b in `values`' order: `diff` = mean of b − mean
    of a over their common units, its percentile CI, p, and p_holm over all tested rows.

    `values` {dataset: {analyzer: per-unit values indexed by unit id}}. Analyzers missing from a dataset are
    skipped for its pairs; a pair with fewer than `min_valid` of its units valid on either side gets NaN (too
    biased a remainder, as in Table 1's paired marks), and so does p with fewer than two resamples (no spread to
    test against); untested rows have `significant` NA. Raises ValueError for fewer than two datasets, n_boot < 1,
    non-numeric values, or units that differ between two datasets (naming both).
    """
    datasets = list(values)
    if len(datasets) < 2:
        raise ValueError(f"a model comparison needs at least two datasets, got {datasets}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    rows = []
    for i, a in enumerate(datasets):
        for b in datasets[i + 1:]:
            for analyzer in [n for n in values[a] if n in values[b]]:
                x, y = values[a][analyzer], values[b][analyzer]
                if len(x) != len(y) or set(x.index) != set(y.index):
                    raise ValueError(f"{analyzer}: {a} and {b} score different units ({len(x)} and {len(y)}, "
                                     f"{len(set(x.index) ^ set(y.index))} not in both); a paired difference needs "
                                     f"the same ones")
                xv = np.asarray(x, dtype=np.float64)  # raises ValueError for non-numeric values
                yv = np.asarray(y.reindex(x.index), dtype=np.float64)
                row = {"analyzer": analyzer, "a": a, "b": b, "diff": np.nan, "diff_lo": np.nan, "diff_hi": np.nan,
                       "p": np.nan, "n_units": 0}
                if min(np.isfinite(xv).mean(), np.isfinite(yv).mean()) < min_valid or \
                        not (np.isfinite(xv) & np.isfinite(yv)).any():
                    rows.append(row)  # mostly NaN on one model (e.g. LRP_α1 where most logits are negative)
                    continue
                _, pw = paired_bootstrap({b: yv, a: xv}, n_boot=n_boot, seed=seed, min_valid=0.0)  # b − a
                r = pw.iloc[0]
                row.update(diff=float(r["diff"]), diff_lo=float(r["diff_lo"]), diff_hi=float(r["diff_hi"]),
                           p=float(r["p"]) if n_boot >= 2 else np.nan, n_units=int(pw.attrs["n_units"]))
                rows.append(row)
    out = pd.DataFrame(rows, columns=COLUMNS[:-2])
    tested = out["p"].notna()
    out["p_holm"] = np.nan
    if tested.any():
        out.loc[tested, "p_holm"] = holm(out.loc[tested, "p"].to_numpy())
    out["significant"] = pd.array([pd.NA] * len(out), dtype="boolean")
    out.loc[tested, "significant"] = out.loc[tested, "p_holm"] < alpha
    return out
