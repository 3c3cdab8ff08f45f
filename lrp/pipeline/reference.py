"""Does a finished run reproduce the published one? Compare its Tables 1, 2 and 3 and its model comparisons' paired
differences (to the printed digits) and the checksums of the files everything downstream depends on against a
reference file (config/reference/*.json).

    python -m lrp.pipeline.reference check  [--results results] config/reference/demo.json
    python -m lrp.pipeline.reference record [--results results] --config config/demo.yaml OUT.json

`check` prints "reproduced: …" and exits 0, or names every value that differs and by how much and exits 1.
Why printed digits: Table 1 is what a reader compares; a file's sha256 says *where* a run left the reference
(the trained model first: everything after it follows from it). docs/reproducibility.md says what to expect.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
from pathlib import Path

from lrp.io import sha256_file, write_json
from lrp.report.table import printed

#: Table 1's numeric columns as table1.md prints them (3 decimals), with their CIs.
COLUMNS = ("mu_w", "mu_le_0.25", "mu_le_0.5", "mu")
PRINTED = tuple(c + suffix for c in COLUMNS for suffix in ("", "_lo", "_hi"))
COUNTS = ("n_used", "n_nan")
DIGITS = 3  # lrp.report.table.printed's
#: Table 2's numeric columns as table2.md prints them (lrp.report.table2), with their CIs.
PRINTED2 = tuple(c + suffix for c in ("pointing", "rank_accuracy", "topk", "energy") for suffix in ("", "_lo", "_hi"))
PRINTED2 += ("pointing_pairs",)
#: Table 3's (lrp.report.faithfulness): AOPC MoRF, LeRF and their difference, with their CIs.
PRINTED3 = tuple(c + suffix for c in ("morf", "lerf", "diff") for suffix in ("", "_lo", "_hi"))
TABLES = {"Table 1": ("table1", PRINTED, COUNTS), "Table 2": ("table2", PRINTED2, ()),
          "Table 3": ("table3", PRINTED3, ())}
#: a model comparison's paired differences of μ_w (lrp.report.comparison: "Δμ_w" columns and their † marks)
PRINTED_PAIRS = ("mu_w_diff", "mu_w_diff_lo", "mu_w_diff_hi")


class ReferenceError(ValueError):
    """A reference or results file that cannot be compared (missing, or not what it should be)."""


def _table(path: Path, name: str = "Table 1") -> dict:
    import pandas as pd

    _, cols, counts = TABLES[name]
    if not path.is_file():
        raise ReferenceError(f"{path}: no {name} here (has the run finished?)")
    df = pd.read_csv(path)
    missing = [c for c in ("analyzer", *cols, *counts) if c not in df.columns]
    if missing:
        raise ReferenceError(f"{path}: not a {name} CSV (lacks {', '.join(missing)})")
    return {row["analyzer"]: {**{c: printed(float(row[c])) for c in cols}, **{c: int(row[c]) for c in counts}}
            for _, row in df.iterrows()}


def record(results, config_path, out_json, files=None) -> dict:
    """Write the reference of a finished run: every dataset's Table 1 as printed, and the sha256 of `files`
    (default: each trained model, each dataset's samples.csv)."""
    import yaml

    results = Path(results)
    config = yaml.safe_load(Path(config_path).read_text())
    if files is None:
        files = [f"models/{m}/model.pt" for m, spec in config["models"].items() if "train" in spec]
        files += [f"{d}/samples.csv" for d in config["datasets"]]
    import torch

    ref = {"config": str(config_path), "digits": DIGITS,
           "made_on": {"machine": platform.machine(), "torch": torch.__version__,
                       "cpu_capability": torch.backends.cpu.get_cpu_capability()},
           "files": {f: _sha256(results / f) for f in files},
           "table1": {d: _table(results / d / "table1.csv") for d in config["datasets"]},
           "table2": {d: _table(results / d / "table2.csv", "Table 2") for d in config["datasets"]},
           "table3": {d: _table(results / d / "table3.csv", "Table 3") for d in config["datasets"]},
           "comparisons": {c: _comparison(results / "comparisons" / f"{c}.csv")
                           for c in config.get("comparisons") or {}}}
    write_json(ref, out_json)
    return ref


def _comparison(path: Path) -> dict:
    """{"<analyzer> <dataset>": {Δμ_w, CI bounds as printed, "significant"}} of a comparison's non-first models."""
    import pandas as pd

    if not path.is_file():
        raise ReferenceError(f"{path}: no model comparison here (has the run finished?)")
    df = pd.read_csv(path)
    missing = [c for c in ("analyzer", "dataset", *PRINTED_PAIRS, "mu_w_diff_significant") if c not in df.columns]
    if missing:
        raise ReferenceError(f"{path}: not a model comparison CSV with paired differences (lacks {', '.join(missing)})")
    try:
        values = df[list(PRINTED_PAIRS)].astype(float)
    except ValueError as e:
        raise ReferenceError(f"{path}: a paired difference is not a number ({e})") from None
    rows = values["mu_w_diff"].notna()
    return {f"{df['analyzer'][i]} {df['dataset'][i]}": {**{c: printed(values[c][i]) for c in PRINTED_PAIRS},
                                                       "significant": str(df["mu_w_diff_significant"][i])}
            for i in df.index[rows]}


def _sha256(path: Path) -> str:
    if not path.is_file():
        raise ReferenceError(f"{path}: missing (has the run finished?)")
    return sha256_file(path)


def _relative(got: str, want: str) -> str:
    try:
        g, w = float(got), float(want)
    except ValueError:
        return ""
    if math.isnan(g) or math.isnan(w):
        return ""
    delta = g - w
    return f", Δ {delta:+.3f}" + (f" ({delta / abs(w) * 100:+.1f} %)" if w else "")


def check(results, reference_json) -> list[str]:
    """Every difference between the run in `results` and the reference, one line each ([] = reproduced).
    Raises ReferenceError if the reference or a Table 1 cannot be read."""
    results, path = Path(results), Path(reference_json)
    try:
        ref = json.loads(path.read_text())
        tables, files = ref["table1"], ref["files"]
        if not (isinstance(files, dict) and all(isinstance(v, str) for v in files.values())
                and isinstance(tables, dict) and all(isinstance(t, dict) for t in tables.values())
                and all(isinstance(row, dict) and set(PRINTED + COUNTS) <= set(row)
                        for t in tables.values() for row in t.values())):
            raise TypeError("files must map paths to sha256 strings, table1 datasets to rows of every column")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ReferenceError(f"{path}: not a reference file ({e})") from e
    problems = []
    for rel, want in files.items():
        f = results / rel
        got = sha256_file(f) if f.is_file() else None
        if got != want:
            problems.append(f"{rel}: sha256 {got[:12] + '…' if got else 'missing'} (reference {want[:12]}…)")
    for name, (key, printed_cols, counts) in TABLES.items():
        cols = (*printed_cols, *counts)
        for dataset, want_table in ref.get(key, {}).items():  # references recorded before Tables 2, 3 have none
            problems += _differences(f"{dataset} {name}", want_table,
                                     _table(results / dataset / f"{key}.csv", name), cols)
    for name, want_rows in ref.get("comparisons", {}).items():  # references recorded before them have none
        problems += _differences(f"comparison {name}", want_rows,
                                 _comparison(results / "comparisons" / f"{name}.csv"), (*PRINTED_PAIRS, "significant"))
    return problems


def _differences(where: str, want_rows: dict, got_rows: dict, cols) -> list[str]:
    """One line per row missing on either side and per printed value that differs, prefixed by `where`."""
    problems = []
    for key in sorted(set(want_rows) | set(got_rows)):
        if key not in got_rows or key not in want_rows:
            problems.append(f"{where}: {key} is missing from {'the run' if key not in got_rows else 'the reference'}")
            continue
        got, want = got_rows[key], want_rows[key]
        for col in cols:
            if str(got.get(col)) != str(want.get(col)):
                problems.append(f"{where} {key} {col}: {got.get(col)} (reference "
                                f"{want.get(col)}{_relative(str(got.get(col)), str(want.get(col)))})")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lrp.pipeline.reference", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="compare a finished run with a reference")
    c.add_argument("reference")
    c.add_argument("--results", default="results")
    r = sub.add_parser("record", help="write the reference of a finished run")
    r.add_argument("out")
    r.add_argument("--results", default="results")
    r.add_argument("--config", required=True)
    a = parser.parse_args(argv)
    try:
        if a.command == "record":
            ref = record(a.results, a.config, a.out)
            print(f"recorded {a.out}: {sum(map(len, ref['table1'].values()))} Table 1 rows, "
                  f"{sum(map(len, ref['table2'].values()))} Table 2 rows, "
                  f"{sum(map(len, ref['table3'].values()))} Table 3 rows, "
                  f"{sum(map(len, ref['comparisons'].values()))} paired model differences, {len(ref['files'])} files")
            return 0
        problems = check(a.results, a.reference)
    except ReferenceError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 2
    ref = json.loads(Path(a.reference).read_text())
    rows = sum(map(len, ref["table1"].values()))
    if not problems:
        t2 = sum(map(len, ref.get("table2", {}).values()))
        t3 = sum(map(len, ref.get("table3", {}).values()))
        pairs = sum(map(len, ref.get("comparisons", {}).values()))
        print(f"reproduced: {a.results} matches {a.reference} — Table 1 ({rows} rows, {len(PRINTED)} values each, "
              f"to the printed {DIGITS} decimals, and the counts)"
              + (f", Table 2 ({t2} rows, {len(PRINTED2)} values each)" if t2 else "")
              + (f", Table 3 ({t3} rows, {len(PRINTED3)} values each)" if t3 else "")
              + (f", the model comparison's {pairs} paired Δμ_w (with CIs and † marks)" if pairs else "")
              + f" and the sha256 of {', '.join(ref['files'])}")
        return 0
    print(f"NOT reproduced: {a.results} differs from {a.reference} in {len(problems)} value(s):")
    for p in problems:
        print(f"  - {p}")
    print("A different model (its sha256 above) changes every row: see docs/reproducibility.md for what this CPU "
          "or GPU may do differently, and the seed-to-seed spread to judge the size of the difference.")
    return 1


if __name__ == "__main__":
    sys.exit(main())
