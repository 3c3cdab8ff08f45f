"""The Snakemake workflow as a user runs it: lint, config errors, the paper DAG, a smoke run of ci.yaml."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml

from lrp.allocator import glibc

ROOT = Path(__file__).resolve().parents[1]


def snakemake(*args, cwd, check=True, env=None):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), *map(str, args)]
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900,
                       env={**os.environ, **env} if env else None)
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
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))  # key order is part of Snakemake's params check
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
    (lambda c: c["attribution"].update({"fused": "yes"}), "attribution.fused"),
    (lambda c: c["datasets"]["demo"].update({"model": "nope"}), "datasets.demo.model"),
    (lambda c: c["datasets"]["demo"].update({"format": "imagenet", "source": "local"}), "datasets.demo.images"),
    (lambda c: c["analyzers"].update({"lrp_z": {"epsilon": -1}}), "analyzers.lrp_z.epsilon"),
    (lambda c: c["analyzers"]["integrated_gradients"].update({"step": 4}), "analyzers.integrated_gradients.step"),
    (lambda c: c.update({"plugins": ["my_methods.py"]}), "plugins[0]: plugin file 'my_methods.py' does not exist"),
])
def test_broken_config_fails_before_any_job(tmp_path, edit, key):
    cfg = write_config(tmp_path, "ci.yaml", edit)
    p = snakemake("--cores", "1", "--configfile", cfg, cwd=tmp_path, check=False)
    assert p.returncode != 0
    assert key in p.stdout + p.stderr
    assert not (tmp_path / "results").exists()


CI_OUTPUTS = ["table1.csv", "table1.md", "table1.tex", "fig3_mu_by_box_size.png", "fig3_mu_by_box_size.pdf",
              "fig2_occlusion.png", "fig2_occlusion.pdf", "fig1_analyzers.png", "fig1_analyzers.pdf",
              "fig1_flat_layers.png", "fig1_flat_layers.pdf", "baseline.csv", "model_card.json", "samples.csv",
              "summary.html", "provenance.json"]


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory):
    """The whole study on the CI subset of the demo, submitted through the cluster-generic profile with a
    stand-in for sbatch (the run every slow test below inspects; tests that change it restore it)."""
    cwd = tmp_path_factory.mktemp("ci_run")
    snakemake("--profile", ROOT / "profiles" / "cluster-generic", "--cluster-generic-submit-cmd",
              ROOT / "tests" / "fake_submit.sh", "--jobs", "2", "--latency-wait", "5",
              "--seconds-between-status-checks", "1", "--configfile", ROOT / "config" / "ci.yaml", cwd=cwd)
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
    assert set(dry_run_jobs(tmp_path, "--configfile", moved)) <= {"summary", "provenance", "all"}  # they record the config
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
                 "Provenance", "bootstrap"):
        assert text in summary, text
    figures = {item["item"] for item in seen["Figures"]}
    assert figures == {"Fig. 1 (analyzers) demo", "Fig. 1 (flat layers) demo", "Fig. 2 demo", "Fig. 3 demo"}
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
                    if name not in fb or not np.array_equal(fa[name][()], fb[name][()]):
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
    """A second CPU run of the CI config, whose attribution job for shard 1 is SIGKILLed mid-shard, leaves
    no complete-looking file; re-running recomputes only that shard, and every output then equals the
    uninterrupted run's bit for bit (CPU runs are bit-identical on re-run)."""
    env = {"LRP_TEST_KILL": "1:1"}
    p = snakemake("--cores", "2", "--keep-going", "--configfile", ROOT / "config" / "ci.yaml", cwd=tmp_path,
                  check=False, env=env)
    assert p.returncode != 0
    att = tmp_path / "results" / "demo" / "attributions"
    cfg = yaml.safe_load((ROOT / "config" / "ci.yaml").read_text())
    computed = [a for a in cfg["analyzers"] if a != "baseline"]
    for a in computed:
        assert (att / a / "0.h5").exists(), a
        assert not (att / a / "1.h5").exists(), a
        assert list((att / a).glob(".1.h5.tmp-*")), a  # the killed writer's partial file, under a temp name
    jobs = dry_run_jobs(tmp_path, "--configfile", ROOT / "config" / "ci.yaml")
    assert jobs.get("attribute_demo") == 1 and not {"train_model", "patterns", "occlusion"} & set(jobs)
    snakemake("--cores", "2", "--configfile", ROOT / "config" / "ci.yaml", cwd=tmp_path)
    assert not list(att.rglob(".*.tmp-*"))
    ref, new = ci_run / "results", tmp_path / "results"
    skip = ("logs", "benchmarks")
    files = sorted(f.relative_to(ref) for f in ref.rglob("*") if f.is_file() and f.parts[len(ref.parts)] not in skip)
    mine = sorted(f.relative_to(new) for f in new.rglob("*") if f.is_file() and f.parts[len(new.parts)] not in skip)
    assert files == mine
    differ = {str(f): why for f in files if (why := _same_file(ref / f, new / f))}
    assert not differ, differ


def imagenet_study(tmp_path: Path) -> Path:
    """A tiny ImageNet-format study laid out as users set up the paper's VGG-16 run: the real val JPEGs of
    tests/data/imagenet in a folder, their boxes in Kaggle's LOC_val_solution.csv, a train/<wnid>/ folder the
    PatternAttribution patterns are learned from, and torchvision AlexNet weights (seeded random: the real
    file cannot be downloaded here) at 64² so that it runs on a CPU in seconds."""
    import torch
    import torchvision

    data = tmp_path / "data" / "imagenet"
    shutil.copytree(ROOT / "tests" / "data" / "imagenet" / "val", data / "val")
    ids = sorted(p.stem for p in (data / "val").glob("*.JPEG"))
    rows = [line for line in (ROOT / "tests" / "data" / "imagenet" / "metadata" / "LOC_val_solution.excerpt.csv")
            .read_text().splitlines()[1:] if line.split(",")[0] in ids]
    assert len(rows) == len(ids)
    (data / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "\n".join(rows) + "\n")
    for i, src in enumerate(sorted((data / "val").glob("*.JPEG")) * 2):  # 6 training images of 2 classes
        wnid = ("n01440764", "n01443537")[i % 2]
        (data / "train" / wnid).mkdir(parents=True, exist_ok=True)
        shutil.copy(src, data / "train" / wnid / f"{wnid}_{i}.JPEG")
    torch.manual_seed(0)
    raw = tmp_path / "data" / "models" / "alexnet_random.pth"
    raw.parent.mkdir(parents=True)
    torch.save(torchvision.models.alexnet().state_dict(), raw)
    weights = raw.with_name(f"alexnet_random-{hashlib.sha256(raw.read_bytes()).hexdigest()[:8]}.pth")  # torch.hub
    raw.rename(weights)  # names carry their sha256 prefix, which the zoo checks
    cfg = {
        "results": "results",
        "datasets": {"imagenet": {
            "format": "imagenet", "source": "local", "images": "data/imagenet/val",
            "boxes": "data/imagenet/LOC_val_solution.csv", "classes": "imagenet", "input_size": 64,
            "model": "alexnet", "n_shards": 2, "paper": "imagenet", "task": "single_label",
            "patterns": {"images": "data/imagenet/train", "max_images": 4}, "panel_samples": ids[:2]}},
        "models": {"alexnet": {"arch": "torchvision_alexnet", "weights": str(weights), "bias": "innvestigate"}},
        "analyzers": {"lrp_cmp_alpha1_flat": {}, "lrp_z": {}, "pattern_attribution": {}, "gradient": {},
                      "baseline": {}},
        "attribution": {"batch_size": 2, "device": "cpu", "precision": "float32", "threads": 1},
        "evaluation": {"n_boot": 20, "seed": 0},
        "preprocess": {"workers": 1},
        "report": {"panel": {"n_images": 2}},
    }
    path = tmp_path / "imagenet.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.mark.slow
def test_imagenet_study_end_to_end(tmp_path):
    """The paper's ImageNet path through every rule: local val folder + LOC csv boxes, patterns learned from
    a train/<wnid>/ folder (not from the val images), single-label units, Table 1 beside the paper's block."""
    cfg = imagenet_study(tmp_path)
    snakemake("--cores", "2", "--configfile", cfg, cwd=tmp_path)
    res = tmp_path / "results" / "imagenet"
    samples = pd.read_csv(res / "samples.csv")
    assert len(samples) == 3 and (samples["n_boxes"] == 1).all()
    with h5py.File(res / "pattern_images.h5") as h:  # the 4 training images (reading them from val/ failed)
        ids = [s.decode() if isinstance(s, bytes) else s for s in h["sample_id"][:]]
    assert len(ids) == 4 and not any(i.startswith("ILSVRC2012_val") for i in ids), ids
    table = pd.read_csv(res / "table1.csv").set_index("analyzer")
    assert set(table.index) == {"lrp_cmp_alpha1_flat", "lrp_z", "pattern_attribution", "gradient", "baseline"}
    assert table.loc["baseline", "mu_w"] == pytest.approx(1.0)
    assert table["paper_mu"].notna().any()  # compared with the paper's ImageNet block
    maps = []
    for shard in (0, 1):
        with h5py.File(res / "attributions" / "pattern_attribution" / f"{shard}.h5") as h:
            maps.append(h["relevance"][:])
    assert [len(m) for m in maps] == [2, 1] and all(np.isfinite(m).all() for m in maps)
    assert max(np.abs(m).max() for m in maps) > 0  # (4 training images leave some output patterns at 0)
    assert dry_run_jobs(tmp_path, "--configfile", cfg) == {}


def _reverse(d: dict) -> dict:
    return dict(reversed(list(d.items())))


REPORT_ONLY = {"summary", "provenance", "all"}  # they record the whole config


@pytest.mark.slow
@pytest.mark.parametrize("edit, allowed, required", [
    # key order and where-it-runs settings: nothing is recomputed
    (lambda c: (c.update(analyzers=_reverse(c["analyzers"]), attribution=_reverse(c["attribution"])),
                c["datasets"].update(demo=_reverse(c["datasets"]["demo"]))), {"panel"}, set()),
    (lambda c: (c["attribution"].update(batch_size=7, threads=2, device="auto", fused=True), c["occlusion"].update(batch_size=5),
                c["preprocess"].update(workers=2), c["models"]["demo_vgg"]["train"].update(threads=1)), set(), set()),
    # report settings re-run their own outputs
    (lambda c: c["datasets"]["demo"].update(panel_samples=["000301_disc"], paper="voc2007"),
     {"panel", "table1"}, {"panel", "table1"}),
    (lambda c: c["models"]["demo_vgg"].update(min_accuracy={"mAP": 0.01}), {"model_card"}, {"model_card"}),
    # what changes the maps re-runs them (and only what follows)
    (lambda c: c["attribution"].update(precision="float16"), {"attribute_demo", "metrics", "table1", "fig3"},
     {"attribute_demo"}),
    (lambda c: c["datasets"]["demo"]["patterns"].update(max_images=50),
     {"pattern_index", "pattern_images", "patterns", "attribute_demo", "metrics", "table1", "fig3", "panel"},
     {"patterns", "attribute_demo"}),
    (lambda c: c["analyzers"].update(lrp_cmp_alpha2_flat={"flat_layers": 2}),
     {"attribute_demo", "metrics", "table1", "fig3", "panel"}, {"attribute_demo"}),
    (lambda c: c["models"]["demo_vgg"].update(bias="toolbox"),  # the analyzers' convention, not the network
     {"attribute_demo", "metrics", "table1", "fig3", "panel"}, {"attribute_demo", "panel"}),
    # what changes the data re-runs the data rules, the patterns' own index included
    (lambda c: c["datasets"]["demo"].update(on_error="skip"), None, {"index", "pattern_index"}),
], ids=["key-order", "run-settings", "report-settings", "model-card", "precision", "patterns", "analyzer-option",
        "bias", "on-error"])
def test_config_edits_rerun_only_what_they_change(ci_run, edit, allowed, required):
    """Snakemake re-runs a job whose params changed: each rule's params hold only what its outputs are computed
    from, with sorted keys, so that a report setting or a batch size does not recompute a study."""
    (ci_run / "edited").mkdir(exist_ok=True)
    edited = write_config(ci_run / "edited", "ci.yaml", edit)
    jobs = set(dry_run_jobs(ci_run, "--configfile", edited))
    if allowed is not None:
        assert jobs <= allowed | REPORT_ONLY, jobs - allowed - REPORT_ONLY
    assert required <= jobs, required - jobs


def test_missing_pattern_folder_names_the_key(tmp_path):
    from lrp.stages import index

    data = tmp_path / "data.json"
    data.write_text(json.dumps({"images": str(tmp_path), "annotations": str(tmp_path)}))
    cfg = {"format": "imagenet", "input_size": 64, "pattern_images": str(tmp_path / "nope"), "max_samples": 4}
    with pytest.raises(FileNotFoundError, match=r"datasets\.imagenet\.patterns\.images: .*nope.* not a folder"):
        index(data, cfg, tmp_path / "s.csv", tmp_path / "r.json", key="datasets.imagenet")
    assert not (tmp_path / "s.csv").exists()
