"""The Snakemake workflow as a user runs it: lint, config errors, the paper DAG, a smoke run of ci.yaml."""

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def snakemake(*args, cwd, check=True):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), *map(str, args)]
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def dry_run_jobs(cwd, *args) -> dict:
    """{rule: count} of what a dry run would execute (empty when the DAG is up to date)."""
    p = snakemake("-n", "--quiet", "rules", *args, cwd=cwd)
    jobs = {}
    for line in (p.stdout + p.stderr).splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] not in ("job", "total"):
            jobs[parts[0]] = int(parts[1])
    return jobs


def write_config(tmp_path, base: str, edit) -> Path:
    cfg = yaml.safe_load((ROOT / "config" / base).read_text())
    edit(cfg)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_lint_is_clean(tmp_path):
    p = snakemake("--lint", "--configfile", ROOT / "config" / "demo.yaml", cwd=tmp_path)
    assert "Lints for" not in p.stdout + p.stderr


def test_paper_dag_builds_without_data(tmp_path):
    """The full paper study's DAG (both datasets, every shard) builds before any data exists."""
    jobs = dry_run_jobs(tmp_path, "--configfile", ROOT / "config" / "config.yaml")
    assert jobs["attribute_imagenet"] == 100 and jobs["attribute_voc2007"] == 30
    assert jobs["table1"] == 2 and jobs["fig2"] == 2 and jobs["fig3"] == 2 and jobs["patterns"] == 1


def test_missing_imagenet_data_is_a_clear_error(tmp_path):
    p = snakemake("results/imagenet/data.json", "--cores", "1", "--configfile", ROOT / "config" / "config.yaml",
                  cwd=tmp_path, check=False)
    out = p.stdout + p.stderr
    assert p.returncode != 0
    assert "ERROR in rule data" in out and "datasets.imagenet.images" in out
    assert not (tmp_path / "results" / "imagenet" / "data.json").exists()


@pytest.mark.parametrize("edit, key", [
    (lambda c: c["analyzers"].update({"lrp_zz": {}}), "analyzers.lrp_zz"),
    (lambda c: c["attribution"].update({"batch_size": -4}), "attribution.batch_size"),
    (lambda c: c["datasets"]["demo"].update({"model": "nope"}), "datasets.demo.model"),
    (lambda c: c["datasets"]["demo"].update({"format": "imagenet", "source": "local"}), "datasets.demo.images"),
    (lambda c: c["analyzers"].update({"lrp_z": {"epsilon": -1}}), "analyzers.lrp_z.epsilon"),
])
def test_broken_config_fails_before_any_job(tmp_path, edit, key):
    cfg = write_config(tmp_path, "ci.yaml", edit)
    p = snakemake("--cores", "1", "--configfile", cfg, cwd=tmp_path, check=False)
    assert p.returncode != 0
    assert key in p.stdout + p.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_smoke_run_ci_config(tmp_path):
    """The whole study on the CI subset of the demo, submitted through the cluster-generic profile with a
    stand-in for sbatch: outputs, an up-to-date DAG on re-run, and minimal re-runs after a deletion."""
    snakemake("--profile", ROOT / "profiles" / "cluster-generic", "--cluster-generic-submit-cmd",
              ROOT / "tests" / "fake_submit.sh", "--jobs", "2", "--latency-wait", "5",
              "--configfile", ROOT / "config" / "ci.yaml", cwd=tmp_path)
    res = tmp_path / "results" / "demo"
    for name in ["table1.csv", "table1.md", "table1.tex", "fig3_mu_by_box_size.png", "fig3_mu_by_box_size.pdf",
                 "fig2_occlusion.png", "fig2_occlusion.pdf", "baseline.csv", "model_card.json", "samples.csv"]:
        assert (res / name).stat().st_size > 0, name
    cfg = yaml.safe_load((ROOT / "config" / "ci.yaml").read_text())
    table = pd.read_csv(res / "table1.csv")
    assert set(table["analyzer"]) == set(cfg["analyzers"])
    base = table.set_index("analyzer").loc["baseline"]
    assert base["mu_w"] == pytest.approx(1.0)
    # A second run has nothing to do.
    assert dry_run_jobs(tmp_path, "--configfile", ROOT / "config" / "ci.yaml") == {}
    # Deleting one attribution shard recomputes that shard and what depends on it, nothing upstream.
    (res / "attributions" / "lrp_z" / "1.h5").unlink()
    assert not (res / "attributions" / "lrp_z" / "1.h5").exists()
    out = snakemake("-n", "--configfile", ROOT / "config" / "ci.yaml", cwd=tmp_path)
    jobs = dry_run_jobs(tmp_path, "--configfile", ROOT / "config" / "ci.yaml")
    assert jobs.get("attribute_demo") == 1, out.stdout[-3000:] + out.stderr[-3000:]
    assert {"table1", "fig3"} <= set(jobs)
    assert not {"data", "index", "image_shard", "train_model", "occlusion", "patterns", "model_card"} & set(jobs)
