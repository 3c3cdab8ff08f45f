"""The reproduction check: Table 1 compared to the printed digits, checksums by file, every difference named."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from lrp.pipeline import reference
from lrp.pipeline.reference import ReferenceError, check, record

ROOT = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, mu_w=(6.4548, 2.2301), pointing=(0.8123, 0.7)) -> Path:
    res = tmp_path / "results"
    (res / "demo").mkdir(parents=True)
    (res / "models" / "m").mkdir(parents=True)
    (res / "models" / "m" / "model.pt").write_bytes(b"weights")
    (res / "demo" / "samples.csv").write_text("sample_id\na\n")
    cols = {c: [0.5, 0.25] for c in reference.PRINTED}
    df = pd.DataFrame({"analyzer": ["lrp_cmp_alpha1", "gradient"], "label": ["LRP_CMP:α1", "Gradient"], **cols,
                       "n_used": [10, 10], "n_nan": [0, 0]})
    df["mu_w"] = list(mu_w)
    df.to_csv(res / "demo" / "table1.csv", index=False)
    t2 = pd.DataFrame({"analyzer": ["lrp_cmp_alpha1", "gradient"], **{c: [0.5, 0.25] for c in reference.PRINTED2}})
    t2["pointing"] = list(pointing)
    t2.to_csv(res / "demo" / "table2.csv", index=False)
    t3 = pd.DataFrame({"analyzer": ["lrp_cmp_alpha1", "random"], **{c: [0.31, 0.02] for c in reference.PRINTED3}})
    t3.to_csv(res / "demo" / "table3.csv", index=False)
    (tmp_path / "cfg.yaml").write_text("datasets: {demo: {}}\nmodels: {m: {train: {dataset: demo}}}\n")
    return res


def test_record_then_check_reproduces(tmp_path):
    res = _run(tmp_path)
    ref = record(res, tmp_path / "cfg.yaml", tmp_path / "ref.json")
    assert set(ref["files"]) == {"models/m/model.pt", "demo/samples.csv"}
    assert ref["table1"]["demo"]["lrp_cmp_alpha1"]["mu_w"] == "6.455"  # as Table 1 prints it
    assert ref["table2"]["demo"]["lrp_cmp_alpha1"]["pointing"] == "0.812"  # as Table 2 prints it
    assert ref["table3"]["demo"]["random"]["diff_hi"] == "0.020"  # as Table 3 prints it
    assert check(res, tmp_path / "ref.json") == []
    t3 = pd.read_csv(res / "demo" / "table3.csv")
    t3.loc[0, "morf"] = 0.25
    t3.to_csv(res / "demo" / "table3.csv", index=False)
    assert check(res, tmp_path / "ref.json") == [
        "demo Table 3 lrp_cmp_alpha1 morf: 0.250 (reference 0.310, Δ -0.060 (-19.4 %))"]
    old = json.loads((tmp_path / "ref.json").read_text())
    del old["table2"]  # a reference recorded before Table 2 existed checks Table 1 and the files only
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert check(_run(tmp_path / "c", pointing=(0.1, 0.2)), tmp_path / "old.json") == []
    assert check(_run(tmp_path / "d", pointing=(0.1, 0.2)), tmp_path / "ref.json") == [
        "demo Table 2 gradient pointing: 0.200 (reference 0.700, Δ -0.500 (-71.4 %))",
        "demo Table 2 lrp_cmp_alpha1 pointing: 0.100 (reference 0.812, Δ -0.712 (-87.7 %))"]


def test_model_comparisons_paired_differences_are_checked(tmp_path):
    """The demo's "which method, on which model": each analyzer's Δμ_w between the models, its CI and its † mark."""
    res = _run(tmp_path)
    (res / "comparisons").mkdir()
    rows = pd.DataFrame({"analyzer": ["lrp_z", "lrp_z", "gradient", "gradient"], "dataset": ["demo", "res"] * 2,
                         "mu_w_diff": [None, 0.4321, None, -0.01], "mu_w_diff_lo": [None, 0.2, None, -0.05],
                         "mu_w_diff_hi": [None, 0.6, None, 0.03], "mu_w_diff_significant": [None, True, None, False]})
    rows.to_csv(res / "comparisons" / "models.csv", index=False)
    (tmp_path / "cfg.yaml").write_text("datasets: {demo: {}}\nmodels: {m: {train: {dataset: demo}}}\n"
                                       "comparisons: {models: [demo, res]}\n")
    ref = record(res, tmp_path / "cfg.yaml", tmp_path / "ref.json")
    assert ref["comparisons"]["models"]["lrp_z res"] == {"mu_w_diff": "0.432", "mu_w_diff_lo": "0.200",
                                                         "mu_w_diff_hi": "0.600", "significant": "True"}
    assert check(res, tmp_path / "ref.json") == []
    rows.loc[1, "mu_w_diff_significant"] = False
    rows.to_csv(res / "comparisons" / "models.csv", index=False)
    assert check(res, tmp_path / "ref.json") == ["comparison models lrp_z res significant: False (reference True)"]
    rows.drop(columns="mu_w_diff_lo").to_csv(res / "comparisons" / "models.csv", index=False)
    with pytest.raises(ReferenceError, match=r"models\.csv: not a model comparison CSV .*lacks mu_w_diff_lo"):
        check(res, tmp_path / "ref.json")


def test_a_change_below_the_printed_digits_still_reproduces(tmp_path):
    record(_run(tmp_path), tmp_path / "cfg.yaml", tmp_path / "ref.json")
    other = _run(tmp_path / "b", mu_w=(6.45479, 2.23012))
    (other / "models" / "m" / "model.pt").write_bytes(b"weights")
    assert check(other, tmp_path / "ref.json") == []


def test_every_difference_is_named_with_its_size(tmp_path):
    record(_run(tmp_path), tmp_path / "cfg.yaml", tmp_path / "ref.json")
    other = _run(tmp_path / "b", mu_w=(6.2114, 2.2301))
    (other / "models" / "m" / "model.pt").write_bytes(b"other weights")
    problems = check(other, tmp_path / "ref.json")
    assert problems[0].startswith("models/m/model.pt: sha256 ")
    assert problems[1] == "demo Table 1 lrp_cmp_alpha1 mu_w: 6.211 (reference 6.455, Δ -0.244 (-3.8 %))"
    assert len(problems) == 2


def test_cli_says_reproduced_or_not(tmp_path, capsys):
    res = _run(tmp_path)
    assert reference.main(["record", str(tmp_path / "ref.json"), "--results", str(res),
                           "--config", str(tmp_path / "cfg.yaml")]) == 0
    assert reference.main(["check", str(tmp_path / "ref.json"), "--results", str(res)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("reproduced: ")
    (res / "demo" / "samples.csv").write_text("sample_id\nb\n")
    assert reference.main(["check", str(tmp_path / "ref.json"), "--results", str(res)]) == 1
    assert "NOT reproduced" in capsys.readouterr().out


def test_unreadable_inputs_name_the_file(tmp_path):
    (tmp_path / "ref.json").write_text("{}")
    with pytest.raises(ReferenceError, match=r"ref\.json: not a reference file"):
        check(tmp_path, tmp_path / "ref.json")
    (tmp_path / "ref.json").write_text(json.dumps({"files": {}, "table1": {"demo": {}}}))
    with pytest.raises(ReferenceError, match=r"table1\.csv: no Table 1 here"):
        check(tmp_path, tmp_path / "ref.json")


@pytest.mark.parametrize("name", ["demo.json", "ci.json"])
def test_shipped_references_are_complete(name):
    ref = json.loads((ROOT / "config" / "reference" / name).read_text())
    assert ref["files"] and all(len(v) == 64 for v in ref["files"].values())
    assert all(len(rows) > 3 for rows in ref["table1"].values())


def _readme_rows(text: str, header: str) -> list[list[str]]:
    """The cells of the README table whose header line starts with `header` (marks `*` / `\\*` dropped)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("| "):
            break
        rows.append([c.strip().removesuffix("\\*").removesuffix("*").strip() for c in line.strip("|").split("|")])
    return rows


def test_readme_table1_is_the_reference():
    """Every number of the README's demo Tables 1, 2 and 3 is the recorded reference's (which `make demo` checks)."""
    ref = json.loads((ROOT / "config" / "reference" / "demo.json").read_text())
    labels = {row["label"]: row for row in _labels()}
    text = (ROOT / "README.md").read_text()
    rows = _readme_rows(text, "| Analyzer | μ_w |")
    assert len(rows) == len(ref["table1"]["demo"]), rows
    for cells in rows:
        want = ref["table1"]["demo"][labels[cells[0]]["analyzer"]]
        for cell, col in zip(cells[1:], reference.COLUMNS):
            assert cell == f"{want[col]} [{want[col + '_lo']}, {want[col + '_hi']}]", (cells[0], col)
    rows = _readme_rows(text, "| Analyzer | pointing game |")
    assert len(rows) == len(ref["table2"]["demo"]), rows
    for cells in rows:
        want = ref["table2"]["demo"][labels[cells[0]]["analyzer"]]
        for cell, col in zip(cells[1:5], ("pointing", "rank_accuracy", "topk", "energy")):
            assert cell == f"{want[col]} [{want[col + '_lo']}, {want[col + '_hi']}]", (cells[0], col)
        assert cells[5] == want["pointing_pairs"]
    rows = _readme_rows(text, "| Analyzer | AOPC MoRF |")
    assert len(rows) == len(ref["table3"]["demo"]), rows
    labels["Random map"] = {"analyzer": "random"}
    for cells in rows:
        want = ref["table3"]["demo"][labels[cells[0]]["analyzer"]]
        for cell, col in zip(cells[1:4], ("morf", "lerf", "diff")):
            assert cell == f"{want[col]} [{want[col + '_lo']}, {want[col + '_hi']}]", (cells[0], col)


def test_readme_model_comparison_is_the_reference():
    """The README's demo comparison: each model's μ_w is its Table 1's, each Δμ_w with its CI and † the recorded
    paired difference (which `make demo` checks)."""
    ref = json.loads((ROOT / "config" / "reference" / "demo.json").read_text())
    labels = {row["label"]: row["analyzer"] for row in _labels()}
    rows = _readme_rows((ROOT / "README.md").read_text(), "| Analyzer | μ_w · demo_vgg | μ_w · demo_resnet |")
    rows = [r for r in rows if r[0] != "Random map"]
    assert len(rows) == len(ref["table1"]["demo_resnet"]), rows
    for cells in rows:
        analyzer = labels[cells[0]]
        for cell, dataset in zip(cells[1:3], ("demo", "demo_resnet")):
            want = ref["table1"][dataset][analyzer]
            assert cell.startswith(f"{want['mu_w']} [{want['mu_w_lo']}, {want['mu_w_hi']}] ("), (cells[0], dataset)
        pair = ref["comparisons"]["demo_models"].get(f"{analyzer} demo_resnet")
        if pair is None:
            assert cells[-1] == "—", cells
            continue
        mark = " †" if pair["significant"] == "True" else ""
        shown = [float(v) for v in re.findall(r"[+-]?\d+\.\d+", cells[-1])]  # Δ, lo, hi
        assert shown == [float(pair[c]) for c in reference.PRINTED_PAIRS], cells
        assert cells[-1].endswith(mark) and (mark or "†" not in cells[-1]), cells


def _labels():
    from lrp.composites import analyzers

    out = [{"analyzer": name, "label": label} for name, label in analyzers().items()]
    return out + [{"analyzer": "baseline", "label": "Baseline (uniform)"}]


def test_record_of_an_unfinished_run_names_the_missing_file(tmp_path):
    res = _run(tmp_path)
    (res / "models" / "m" / "model.pt").unlink()
    with pytest.raises(ReferenceError, match=r"model\.pt: missing \(has the run finished\?\)"):
        record(res, tmp_path / "cfg.yaml", tmp_path / "ref.json")
    (tmp_path / "bad.json").write_text(json.dumps({"files": {"a": 1}, "table1": {}}))
    with pytest.raises(ReferenceError, match="not a reference file"):
        check(res, tmp_path / "bad.json")
