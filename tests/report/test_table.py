"""Table 1 assembly: ordering, the join with the paper's numbers, rank agreement and the three writers."""

import re

import numpy as np
import pandas as pd
import pytest

from lrp import composites
from lrp.report.table import (
    analyzer_names,
    build_table1,
    paper_table,
    rank_agreement,
    tex_escape,
    to_latex,
    write_table1,
)

N = 100


def _summary(mu_w, mu=0.5, n_nan=0, width=0.01):
    s = {"n_used": N - n_nan, "n_nan": n_nan, "n_le_0.25": 20, "n_le_0.5": 45, "n_all_le_0.25": 21,
         "n_all_le_0.5": 47}
    for k, v in {"mu_w": mu_w, "mu_le_0.25": mu / 2, "mu_le_0.5": mu * 0.8, "mu": mu}.items():
        s[k], s[f"{k}_lo"], s[f"{k}_hi"] = v, v - width, v + width
    return s


def _summaries():
    return {"baseline": _summary(1.0), "lrp_z": _summary(2.0, n_nan=3), "gradient": _summary(1.5),
            "lrp_alpha2": _summary(1.0 + 1e-3), "lrp_cmp_alpha2_flat": _summary(3.0)}


def test_package_data_is_consistent():
    names = analyzer_names()
    assert list(names.columns) == ["analyzer", "paper_name", "label"]
    assert names["analyzer"].is_unique
    assert names["analyzer"].tolist()[:13] == composites.TABLE1  # the built-ins; then any registered by tests
    for ds, n_rows in (("imagenet", 10), ("voc2007", 8)):
        paper = paper_table(ds)
        assert len(paper) == n_rows
        assert set(paper["analyzer_paper"]) <= set(names["paper_name"])  # every paper row is mappable
    assert names.set_index("analyzer").at["lrp_cmp_alpha2_flat", "label"] == "LRP_CMP:α2+♭"


def test_ordered_by_mu_w_descending_without_paper():
    t = build_table1(_summaries(), None, N)
    assert t["analyzer"].tolist() == ["lrp_cmp_alpha2_flat", "lrp_z", "gradient", "lrp_alpha2", "baseline"]
    assert "paper_mu_w" not in t and "rank" not in t
    assert t.loc[1, "n_nan"] == 3 and t.loc[1, "label"] == "LRP_z"
    with pytest.raises(ValueError, match="no paper columns"):
        rank_agreement(t)


def test_nan_mu_w_sorts_last():
    s = _summaries()
    s["lrp_cam"] = _summary(np.nan)
    assert build_table1(s, None, N)["analyzer"].iloc[-1] == "lrp_cam"


def test_paper_join_imagenet_and_voc():
    t = build_table1(_summaries(), "imagenet", N).set_index("analyzer")
    assert t.at["lrp_cmp_alpha2_flat", "paper_mu_w"] == 1.902
    assert t.at["lrp_cmp_alpha2_flat", "paper_mu"] == 0.714 and t.at["lrp_cmp_alpha2_flat", "paper_rank"] == 1
    assert t.at["lrp_z", "paper_mu_le_0.25"] == 0.236 and t.at["lrp_z", "paper_rank"] == 9
    assert t.at["baseline", "paper_rank"] == 10
    assert np.isnan(t.at["gradient", "paper_mu_w"]) and pd.isna(t.at["gradient", "paper_rank"])
    assert t["rank"].tolist() == [1, 2, 3, 4, 5]
    v = build_table1({"lrp_cmp_alpha1": _summary(2.0)}, "voc2007", N)
    assert v.loc[0, "paper_mu_w"] == 2.664 and v.loc[0, "paper_rank"] == 2


def test_rank_agreement_hand_case():
    # ours: cmp(3) > z(2) > alpha2(1.001); paper: cmp(1.902) > alpha2(1.702) > z(1.347)
    # pairs: (cmp,z) +, (cmp,alpha2) +, (z,alpha2) -  -> tau = (2 - 1) / 3; gradient has no paper row
    s = {k: v for k, v in _summaries().items() if k != "baseline"}
    assert rank_agreement(build_table1(s, "imagenet", N)) == {"kendall_tau": pytest.approx(1 / 3),
                                                                "n_common": 3}
    one = rank_agreement(build_table1({"lrp_z": _summary(2.0)}, "imagenet", N))
    assert one["n_common"] == 1 and np.isnan(one["kendall_tau"])


def test_build_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown analyzer"):
        build_table1({"lrp_foo": _summary(1.0)}, None, N)
    with pytest.raises(ValueError, match="n_samples = 99"):
        build_table1(_summaries(), None, 99)
    with pytest.raises(ValueError, match="paper_dataset"):
        build_table1(_summaries(), "coco", N)
    with pytest.raises(ValueError, match="lacks"):
        build_table1({"lrp_z": {"mu_w": 1.0}}, None, N)
    with pytest.raises(ValueError, match="no summaries"):
        build_table1({}, None, N)


def test_tex_escape():
    assert tex_escape("LRP_CMP:α2+♭ 95 %") == r"LRP\_CMP:$\alpha$2+$\flat$ 95 \%"
    assert tex_escape("μ_w & {x}") == r"$\mu_w$ \& \{x\}"


def _unescaped_outside_math(tex: str) -> list[str]:
    text = re.sub(r"\$[^$]*\$", "", tex.replace(r"\$", ""))
    return re.findall(r"(?<!\\)[_%&#]", text.replace(" & ", " "))


def test_latex_is_structurally_valid():
    t = build_table1(_summaries(), "imagenet", N)
    tex = to_latex(t, "ImageNet_val (VGG-16) & more")
    assert tex.count(r"\begin{tabular}") == tex.count(r"\end{tabular}") == 1
    assert tex.count(r"\begin{table}") == tex.count(r"\end{table}") == 1
    assert all(rule in tex for rule in (r"\toprule", r"\midrule", r"\bottomrule"))
    assert tex.count("{") - tex.count(r"\{") == tex.count("}") - tex.count(r"\}")
    assert tex.count("$") % 2 == 0
    n_cols = len(re.search(r"\\begin\{tabular\}\{([lrc]+)\}", tex).group(1))
    body = tex.split(r"\toprule")[1].split(r"\bottomrule")[0]
    rows = [r for r in body.splitlines() if r.strip().endswith(r"\\")]
    assert len(rows) == 1 + len(t)
    assert all(r.count(" & ") == n_cols - 1 for r in rows)
    assert _unescaped_outside_math(tex) == []
    assert r"LRP\_CMP:$\alpha$2+$\flat$" in tex and r"ImageNet\_val" in tex


def test_write_table1_outputs(tmp_path):
    s = _summaries()
    s["lrp_cmp_alpha2_flat"]["mu"] = 0.123456789012345678
    s["lrp_z"].update({"mu": 0.532, "mu_lo": 0.521, "mu_hi": 0.544})
    t = build_table1(s, "imagenet", N)
    paths = [tmp_path / "out" / f"table1.{ext}" for ext in ("csv", "md", "tex")]
    write_table1(t, *paths, title="ImageNet (VGG-16)")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["table1.csv", "table1.md", "table1.tex"]
    back = pd.read_csv(paths[0])
    assert back.loc[0, "mu"] == 0.123456789012345678  # full precision round trip
    assert back["analyzer"].tolist() == t["analyzer"].tolist()
    md = paths[1].read_text(encoding="utf-8")
    assert "| LRP_z | 2.000 [1.990, 2.010] | 1.347 |" in md
    assert "0.532 [0.521, 0.544] | 0.632 |" in md
    assert "N = 100 samples" in md and "LRP_z 3" in md and "Kendall τ" in md
    assert "box fraction ≤0.25: 21, ≤0.5: 47" in md  # over all units, not one analyzer's non-NaN ones
    assert sum(line.startswith("|") for line in md.splitlines()) == 2 + len(t)  # header, rule, rows
    tex = paths[2].read_text(encoding="utf-8")
    assert "0.532 [0.521, 0.544] & 0.632" in tex and r"N = 100 samples" in tex
    with pytest.raises(ValueError, match="empty"):
        write_table1(t.iloc[:0], *paths, title="x")


def test_a_registered_analyzer_gets_its_label_and_no_paper_values():
    """Your own analyzers (lrp.plugins) appear with their label; the paper has no row for them, so they stay
    out of the ranks' Kendall τ."""
    composites.register_function("my_method", lambda model, x, t: x, label="Mine")
    try:
        summaries = {**_summaries(), "my_method": _summary(2.5)}
        t = build_table1(summaries, "voc2007", N).set_index("analyzer")
        assert t.at["my_method", "label"] == "Mine" and pd.isna(t.at["my_method", "paper_mu_w"])
        assert rank_agreement(t.reset_index())["n_common"] == rank_agreement(
            build_table1(_summaries(), "voc2007", N))["n_common"]
    finally:
        composites.REGISTRY.pop("my_method")
    with pytest.raises(ValueError, match="unknown analyzer"):
        build_table1({**_summaries(), "my_method": _summary(2.5)}, None, N)


def test_paired_marks_and_rank_probability_reach_every_writer(tmp_path):
    per = pd.DataFrame({"analyzer": list(_summaries()), "tied_with_best": [False, True, False, False, True],
                        "p_holds_rank": [1.0, 0.6, 0.9, 0.8, 0.55]})
    per.attrs.update(n_units=97, alpha=0.05, left_out=[])
    t = build_table1(_summaries(), None, N, paired=per)
    assert t.set_index("analyzer")["tied_with_best"].to_dict()["lrp_z"]
    write_table1(t, tmp_path / "t.csv", tmp_path / "t.md", tmp_path / "t.tex", "T")
    md = (tmp_path / "t.md").read_text()
    assert "| LRP_z | 2.000 [1.990, 2.010] * |" in md and "| Gradient | 1.500 [1.490, 1.510] |" in md
    assert "P(rank)" in md and "0.60 |" in md and "on the 97 units every analyzer scores" in md
    back = pd.read_csv(tmp_path / "t.csv")  # the summary page reads the CSV: the marks survive it
    from lrp.report.table import _cells

    body = dict((row[0], row[1]) for row in _cells(back)[1])
    assert body["LRP_CMP:α2+♭"].endswith(" *") and not body["Baseline (uniform)"].endswith("*")


def test_table2_orders_by_the_pointing_game_and_marks_ties(tmp_path):
    from lrp.report.table2 import build_table2, write_table2
    from lrp.report.table2 import to_latex as to_latex2

    def per(values, tied):
        df = pd.DataFrame({"analyzer": ["gradient", "lrp_z", "baseline"], "value": values,
                           "lo": [v - 0.01 for v in values], "hi": [v + 0.01 for v in values], "tied_with_best": tied})
        df.attrs.update(n_units=50, alpha=0.05)
        return df

    t = build_table2({"pointing": per([0.7, 0.9, 0.6], [False, True, False]),
                      "rank_accuracy": per([0.4, 0.3, 0.2], [True, True, False])}, {"gradient": 0.71, "lrp_z": 0.88,
                                                                                    "baseline": 0.62}, 82, 15)
    assert t["analyzer"].tolist() == ["lrp_z", "gradient", "baseline"]
    write_table2(t, tmp_path / "t2.csv", tmp_path / "t2.md", tmp_path / "t2.tex", "Table 2 — demo")
    md = (tmp_path / "t2.md").read_text()
    assert "| LRP_z | 0.900 [0.890, 0.910] \\* | 0.300 [0.290, 0.310] \\* | 0.880 |" in md
    assert "k = 82 pixels. Pointing tolerance 15 px." in md
    assert to_latex2(t, "T").count(r"\\") >= 4
    with pytest.raises(ValueError, match="unknown or no measures"):
        build_table2({"recall": per([1, 1, 1], [True] * 3)}, {}, 1, 15)
