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
                             alpha: float = 0.05) -> pd.DataFrame:
    """One row per analyzer and pair of datasets (a, b), a before b in `values`' order: `diff` = mean of b − mean
    of a over their common units, its percentile CI, p, and p_holm over all rows (NaN rows left out).

    `values` {dataset: {analyzer: per-unit values indexed by unit id}}. Analyzers missing from a dataset are
    skipped; a pair with fewer than half its units valid on either side gets NaN (too biased a remainder, as in
    Table 1's paired marks). Raises ValueError for fewer than two datasets or units that differ between them.
    """
    datasets = list(values)
    if len(datasets) < 2:
        raise ValueError(f"a model comparison needs at least two datasets, got {datasets}")
    rows = []
    for i, a in enumerate(datasets):
        for b in datasets[i + 1:]:
            for analyzer in [n for n in values[a] if n in values[b]]:
                x, y = values[a][analyzer], values[b][analyzer]
                if set(x.index) != set(y.index) or len(x) != len(y):
                    raise ValueError(f"{analyzer}: {a} and {b} score different units; a paired difference needs the "
                                     f"same ones")
                y = y.reindex(x.index)
                row = {"analyzer": analyzer, "a": a, "b": b, "diff": np.nan, "diff_lo": np.nan, "diff_hi": np.nan,
                       "p": np.nan, "n_units": 0}
                try:  # b first: the pairwise row is then b − a
                    _, pw = paired_bootstrap({b: y.to_numpy(), a: x.to_numpy()}, n_boot=n_boot, seed=seed)
                except ValueError:  # mostly NaN on one model (e.g. LRP_α1 on a model with many negative logits)
                    rows.append(row)
                    continue
                r = pw.iloc[0]
                row.update(diff=float(r["diff"]), diff_lo=float(r["diff_lo"]), diff_hi=float(r["diff_hi"]),
                           p=float(r["p"]), n_units=int(pw.attrs["n_units"]))
                rows.append(row)
    out = pd.DataFrame(rows, columns=COLUMNS[:-2])
    valid = out["p"].notna()
    out["p_holm"] = np.nan
    if valid.any():
        out.loc[valid, "p_holm"] = holm(out.loc[valid, "p"].to_numpy())
    out["significant"] = out["p_holm"] < alpha
    return out
