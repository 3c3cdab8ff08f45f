"""The study as a user runs it, on the CI subset of the demo (ci.yaml): outputs, the report, re-run triggers,
a killed job resumed. One run is shared by the module's tests (fixture `ci_run`)."""

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml

from lrp.allocator import glibc

from snakemake_run import ROOT, dry_run_jobs, snakemake, write_config

CI_OUTPUTS = ["table1.csv", "table1.md", "table1.tex", "fig3_mu_by_box_size.png", "fig3_mu_by_box_size.pdf",
              "fig2_occlusion.png", "fig2_occlusion.pdf", "fig1_analyzers.png", "fig1_analyzers.pdf",
              "fig1_flat_layers.png", "fig1_flat_layers.pdf", "baseline.csv", "model_card.json", "samples.csv",
              "table2.csv", "table2.md", "table2.tex", "paired_mu_w.csv", "paired_pointing.csv",
              "fig_pairwise_mu_w.png", "fig_pairwise_pointing.png", "fig_pointing_per_class.png",
              "table3.csv", "table3.md", "table3.tex", "fig_perturbation_curves.png", "fig_faithfulness_vs_mu_w.png",
              "sanity.csv", "fig_sanity.png", "summary.html", "provenance.json"]


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory):
    """The whole study on the CI subset of the demo, run once for the module: every slow test below inspects
    it (tests that change it restore it). Submission through a batch system has its own, shorter test."""
    cwd = tmp_path_factory.mktemp("ci_run")
    snakemake("--cores", "2", "--configfile", ROOT / "config" / "ci.yaml", cwd=cwd)
    return cwd


@pytest.mark.slow
def test_smoke_run_ci_config(ci_run):
    """Outputs, an up-to-date DAG on re-run, and minimal re-runs after a deletion."""
    tmp_path = ci_run
    res = tmp_path / "results" / "demo"
    for name in CI_OUTPUTS:
        assert (res / name).stat().st_size > 0, name
    cfg = yaml.safe_load((ROOT / "config" / "ci.yaml").read_text())
    table = pd.read_csv(res / "table1.csv")
    assert set(table["analyzer"]) == set(cfg["analyzers"])
    base = table.set_index("analyzer").loc["baseline"]
    assert base["mu_w"] == pytest.approx(1.0)
    # every output of the dataset is in the provenance manifest, with its checksum
    manifest = json.loads((res / "provenance.json").read_text())
    assert manifest["config"]["analyzers"] == cfg["analyzers"]
    for name in CI_OUTPUTS[:-1]:
        assert manifest["files"][f"demo/{name}"]["sha256"] == hashlib.sha256((res / name).read_bytes()).hexdigest()
    with h5py.File(res / "attributions" / "lrp_z" / "0.h5") as h:  # the maps record what made them
        assert json.loads(h.attrs["config"])["attribution"]["batch_size"] == cfg["attribution"]["batch_size"]
        assert json.loads(h.attrs["versions"])["torch"]
        assert json.loads(h.attrs["options"])["bias"] == cfg["models"]["demo_vgg"]["bias"]
        assert h.attrs["fused"] == 0  # attribution.fused: auto (the default) on a CPU job: eager steps
    # Table 3: every computed analyzer and the random map, on the configured units; the sanity check's stage 0
    computed = [a for a in cfg["analyzers"] if a != "baseline"]
    t3 = pd.read_csv(res / "table3.csv")
    assert set(t3["analyzer"]) == {*computed, "random"} and (t3["n_units"] == cfg["faithfulness"]["max_units"]).all()
    assert (t3["steps"] == cfg["faithfulness"]["steps"]).all() and t3["morf"].notna().all()
    sanity = pd.read_csv(res / "sanity.csv")
    assert set(sanity["analyzer"]) == set(computed)
    assert sanity["sample_id"].nunique() == cfg["faithfulness"]["sanity_units"]
    assert (sanity.loc[sanity["stage"] == 0, "spearman"].dropna() == 1.0).all()
    # The plugin's analyzers (examples/my_analyzers.py) ran like the built-ins, and their maps name the file.
    plugin = ROOT / "examples" / "my_analyzers.py"
    digest = hashlib.sha256(plugin.read_bytes()).hexdigest()
    assert manifest["plugins"]["examples.my_analyzers"] == {"path": str(plugin), "sha256": digest}
    labels = dict(zip(table["analyzer"], table["label"]))
    assert labels["lrp_cmp_gamma_flat"] == "LRP_CMP:γ+♭" and labels["integrated_gradients"] == "IG"
    with h5py.File(res / "attributions" / "integrated_gradients" / "1.h5") as h:
        assert h.attrs["analyzer_source_sha256"] == digest and json.loads(h.attrs["options"]) == {"steps": 8}
        assert np.isfinite(h["relevance"][:]).all() and np.abs(h["relevance"][:]).max() > 0
    # Editing the plugin re-runs what uses its analyzers, not the data, training or patterns.
    copy = tmp_path / "plugin_copy" / "my_analyzers.py"
    copy.parent.mkdir(exist_ok=True)
    copy.write_bytes(plugin.read_bytes())
    moved = write_config(tmp_path / "plugin_copy", "ci.yaml", lambda c: c.update({"plugins": [str(copy)]}))
    # they record the config
    assert set(dry_run_jobs(tmp_path, "--configfile", moved)) <= {"summary", "provenance", "all"}
    copy.write_text(copy.read_text() + "\n# an edit\n")
    rerun = dry_run_jobs(tmp_path, "--configfile", moved)
    assert rerun["attribute_demo"] == 2 and {"table1", "fig3", "panel"} <= set(rerun)
    assert not {"train_model", "patterns", "image_shard", "occlusion", "data"} & set(rerun), rerun
    # Every job is its own process and keeps freed memory for reuse (lrp.allocator), which it logs first.
    log = (tmp_path / "results" / "logs" / "attribute" / "demo_0.log").read_text()
    assert log.startswith("[lrp] "), log[:300]
    if glibc() is not None and "LRP_RETAIN_FREED_MEMORY" not in os.environ and "LD_PRELOAD" not in os.environ:
        assert log.startswith("[lrp] glibc malloc keeps freed memory for reuse"), log[:300]
    # A second run has nothing to do.
    assert dry_run_jobs(tmp_path, "--configfile", ROOT / "config" / "ci.yaml") == {}
    # Deleting one attribution shard recomputes that shard and what depends on it, nothing upstream.
    shard = res / "attributions" / "lrp_z" / "1.h5"
    keep = tmp_path / "kept_1.h5"
    shutil.copy2(shard, keep)
    shard.unlink()
    out = snakemake("-n", "--configfile", ROOT / "config" / "ci.yaml", cwd=tmp_path)
    jobs = dry_run_jobs(tmp_path, "--configfile", ROOT / "config" / "ci.yaml")
    assert jobs.get("attribute_demo") == 1, out.stdout[-3000:] + out.stderr[-3000:]
    assert {"table1", "fig3"} <= set(jobs)
    assert not {"data", "index", "image_shard", "train_model", "occlusion", "patterns", "model_card"} & set(jobs)
    shutil.copy2(keep, shard)  # restore (mtime kept): the run is whole again for the other tests
    assert dry_run_jobs(tmp_path, "--configfile", ROOT / "config" / "ci.yaml") == {}


@pytest.mark.slow
def test_ci_run_reproduces_the_reference(ci_run):
    """This machine's CI-sized run reproduces the recorded one: the trained model and the index to the bit,
    Table 1 to the printed digits (config/reference/ci.json, recorded on another CPU; docs/reproducibility.md)."""
    from lrp.pipeline.reference import check

    assert check(ci_run / "results", ROOT / "config" / "reference" / "ci.json") == []


@pytest.mark.slow
def test_report_renders_every_item(ci_run, tmp_path):
    """`snakemake --report` builds; where playwright and a Chromium exist, the report opens in headless
    Chromium and every item shows (screenshots in the test's tmp folder)."""
    snakemake("--report", tmp_path / "report.html", "--configfile", ROOT / "config" / "ci.yaml", cwd=ci_run)
    assert (tmp_path / "report.html").stat().st_size > 100_000
    sys.path.insert(0, str(ROOT / "tests"))
    from report_browser import capture, chromium_path

    required = os.environ.get("LRP_REQUIRE_BROWSER") == "1"  # set by .ci/run, which installs Chromium
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        if required:
            raise
        pytest.skip("playwright is not installed (envs/requirements-test.txt)")
    if chromium_path() is None:
        if required:
            pytest.fail("LRP_REQUIRE_BROWSER=1 but no chromium on PATH (Debian: apt-get install chromium)")
        pytest.skip("no chromium on this machine (Debian: apt-get install chromium)")
    seen = capture(tmp_path / "report.html", tmp_path / "shots")
    summary = seen["Summary"][0]["text"]
    for text in ("Model card", "passed the accuracy check", "Baseline check", "Table 1", "LRP_CMP:α2+♭",
                 "Provenance", "bootstrap", "Table 2", "pointing game, image centre", "Holm", "Table 3",
                 "AOPC MoRF", "Random map", "Sanity check: cascading randomisation"):
        assert text in summary, text
    figures = {item["item"] for item in seen["Figures"]}
    assert figures == {"Fig. 1 (analyzers) demo", "Fig. 1 (flat layers) demo", "Fig. 2 demo", "Fig. 3 demo",
                       "pairwise mu_w demo", "pairwise pointing demo", "pointing per class demo",
                       "perturbation curves demo", "faithfulness vs mu_w demo", "sanity check demo"}
    assert all(item["images"] >= 2 for item in seen["Figures"])  # the figure itself, besides the logo
    assert len(seen["Provenance"]) == 1


def _same_file(a: Path, b: Path) -> str | None:
    """None if two outputs hold the same results, else what differs. Wall-clock timings are not results."""
    if a.suffix == ".h5":
        with h5py.File(a) as fa, h5py.File(b) as fb:
            if set(fa.attrs) != set(fb.attrs):
                return "attribute names"
            for k in fa.attrs:
                if not np.array_equal(np.asarray(fa.attrs[k]), np.asarray(fb.attrs[k])):
                    return f"attribute {k}"
            names = []
            fa.visit(names.append)
            for name in names:
                if isinstance(fa[name], h5py.Dataset):
                    a_, b_ = (f[name][()] if name in f else None for f in (fa, fb))
                    if b_ is None or not np.array_equal(a_, b_, equal_nan=np.asarray(a_).dtype.kind == "f"):
                        return f"dataset {name}"
        return None
    if a.suffix == ".json":
        def strip(o):
            if isinstance(o, dict):
                return {k: strip(v) for k, v in o.items() if "seconds" not in k}
            if isinstance(o, list):
                return [strip(v) for v in o]
            return o
        ja, jb = strip(json.loads(a.read_text())), strip(json.loads(b.read_text()))
        if a.name == "provenance.json":  # files whose bytes hold timings are compared above instead
            for d in (ja, jb):
                d["files"] = {k: v for k, v in d["files"].items() if not k.endswith(".json")}
        return None if ja == jb else "json content"
    return None if a.read_bytes() == b.read_bytes() else "bytes"


@pytest.mark.slow
def test_killed_attribution_job_resumes_to_identical_outputs(ci_run, tmp_path):
    """A copy of the shared run (its Snakemake metadata and file times included) loses shard 1's maps; the
    attribution job that recomputes them is SIGKILLed mid-shard and leaves no complete-looking file; re-running
    recomputes only that shard and what follows, and every output then equals the uninterrupted run's bit for
    bit (CPU runs are bit-identical on re-run). Why a copy: a second run from scratch cost this test 160 s of
    CI's 15 minutes; training's own kill-and-resume bits are tests/training/test_finetune.py's."""
    work = tmp_path / "run"
    shutil.copytree(ci_run, work, symlinks=True)  # copy2: file times kept, so nothing else looks outdated
    att = work / "results" / "demo" / "attributions"
    cfg = yaml.safe_load((ROOT / "config" / "ci.yaml").read_text())
    computed = [a for a in cfg["analyzers"] if a != "baseline"]
    for a in computed:
        (att / a / "1.h5").unlink()
    p = snakemake("--cores", "2", "--keep-going", "--configfile", ROOT / "config" / "ci.yaml", cwd=work,
                  check=False, env={"LRP_TEST_KILL": "1:1"})
    assert p.returncode != 0
    for a in computed:
        assert (att / a / "0.h5").exists(), a
        assert not (att / a / "1.h5").exists(), a
        assert list((att / a).glob(".1.h5.tmp-*")), a  # the killed writer's partial file, under a temp name
    jobs = dry_run_jobs(work, "--configfile", ROOT / "config" / "ci.yaml")
    assert jobs.get("attribute_demo") == 1 and not {"train_model", "patterns", "occlusion"} & set(jobs)
    snakemake("--cores", "2", "--configfile", ROOT / "config" / "ci.yaml", cwd=work)
    assert not list(att.rglob(".*.tmp-*"))
    ref, new = ci_run / "results", work / "results"
    skip = ("logs", "benchmarks")
    files = sorted(f.relative_to(ref) for f in ref.rglob("*") if f.is_file() and f.parts[len(ref.parts)] not in skip)
    mine = sorted(f.relative_to(new) for f in new.rglob("*") if f.is_file() and f.parts[len(new.parts)] not in skip)
    assert files == mine
    differ = {str(f): why for f in files if (why := _same_file(ref / f, new / f))}
    assert not differ, differ
    assert any((att / a / "1.h5").stat().st_mtime > (ref / "demo" / "attributions" / a / "1.h5").stat().st_mtime
               for a in computed)  # shard 1 really was recomputed, not copied


def _reverse(d: dict) -> dict:
    return dict(reversed(list(d.items())))


REPORT_ONLY = {"summary", "provenance", "all"}  # they record the whole config
METRICS_ON = {"metrics", "table1", "table2", "fig3", "perturbation", "faithfulness"}  # what follows the maps


@pytest.mark.slow
@pytest.mark.parametrize("edit, allowed, required", [
    # key order and where-it-runs settings: nothing is recomputed
    (lambda c: (c.update(analyzers=_reverse(c["analyzers"]), attribution=_reverse(c["attribution"])),
                c["datasets"].update(demo=_reverse(c["datasets"]["demo"]))), {"panel"}, set()),
    (lambda c: (c["attribution"].update(batch_size=7, threads=2, device="auto", fused=True),
                c["occlusion"].update(batch_size=5), c["preprocess"].update(workers=2),
                c["faithfulness"].update(batch_size=3)), set(), set()),
    # a training's thread count and oneDNN's ISA cap decide the model's bits: they re-train it
    (lambda c: c["models"]["demo_vgg"]["train"].update(threads=1), None, {"train_model", "attribute_demo"}),
    (lambda c: c.update(reproducibility={"onednn_max_cpu_isa": "ALL"}), None, {"train_model"}),
    # report settings re-run their own outputs
    (lambda c: c["datasets"]["demo"].update(panel_samples=["000301_disc"], paper="voc2007"),
     {"panel", "table1", "faithfulness"}, {"panel", "table1"}),
    (lambda c: c["models"]["demo_vgg"].update(min_accuracy={"mAP": 0.01}), {"model_card"}, {"model_card"}),
    # what changes the maps re-runs them (and only what follows)
    (lambda c: c["attribution"].update(precision="float16"), {"attribute_demo", *METRICS_ON}, {"attribute_demo"}),
    (lambda c: c["datasets"]["demo"]["patterns"].update(max_images=50),
     {"pattern_index", "pattern_images", "patterns", "attribute_demo", *METRICS_ON, "panel", "sanity"},
     {"patterns", "attribute_demo"}),
    (lambda c: c["analyzers"].update(lrp_cmp_alpha2_flat={"flat_layers": 2}),
     {"attribute_demo", *METRICS_ON, "panel", "sanity"}, {"attribute_demo", "sanity"}),
    (lambda c: c["models"]["demo_vgg"].update(bias="toolbox"),  # the analyzers' convention, not the network
     {"attribute_demo", *METRICS_ON, "panel", "sanity"}, {"attribute_demo", "panel", "sanity"}),
    # top-k is scored from the float32 maps: the attribution jobs; the pointing tolerance only in the metrics
    (lambda c: c["attribution"].update(top_k=500), {"attribute_demo", *METRICS_ON}, {"attribute_demo"}),
    (lambda c: c["evaluation"].update(pointing_tolerance=5),
     {"baseline", "metrics", "table1", "table2", "fig3", "faithfulness"},
     {"baseline", "metrics", "table2"}),
    # the perturbation settings re-run the curves and Table 3; the sanity check's units only the check
    (lambda c: c["faithfulness"].update(steps=5, fill="uniform"), {"perturbation", "faithfulness"},
     {"perturbation", "faithfulness"}),
    (lambda c: c["faithfulness"].update(sanity_units=3), {"sanity"}, {"sanity"}),
    # what changes the data re-runs the data rules, the patterns' own index included
    (lambda c: c["datasets"]["demo"].update(on_error="skip"), None, {"index", "pattern_index"}),
    (lambda c: c["datasets"]["demo"].update(box_rounding="outward"), None, {"index", "image_shard"}),
], ids=["key-order", "run-settings", "train-threads", "cpu-isa", "report-settings", "model-card", "precision",
        "patterns", "analyzer-option", "bias", "top-k", "pointing-tolerance", "faithfulness", "sanity-units",
        "on-error", "box-rounding"])
def test_config_edits_rerun_only_what_they_change(ci_run, edit, allowed, required):
    """Snakemake re-runs a job whose params changed: each rule's params hold only what its outputs are computed
    from, with sorted keys, so that a report setting or a batch size does not recompute a study."""
    (ci_run / "edited").mkdir(exist_ok=True)
    edited = write_config(ci_run / "edited", "ci.yaml", edit)
    jobs = set(dry_run_jobs(ci_run, "--configfile", edited))
    if allowed is not None:
        assert jobs <= allowed | REPORT_ONLY, jobs - allowed - REPORT_ONLY
    assert required <= jobs, required - jobs


