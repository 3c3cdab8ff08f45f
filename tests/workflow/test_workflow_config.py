"""The Snakemake workflow before and around a study: lint, the paper's DAG without data, config errors before
any job, submission through a batch-system profile."""

import json

import pytest

from configs import dataset_entry
from snakemake_run import ROOT, dry_run_jobs, snakemake, write_config


def test_lint_is_clean(tmp_path):
    p = snakemake("--lint", "--configfile", ROOT / "config" / "demo.yaml", cwd=tmp_path)
    assert "Lints for" not in p.stdout + p.stderr


def test_paper_dag_builds_without_data(tmp_path):
    """The full paper study's DAG (both datasets, every shard) builds before any data exists."""
    jobs = dry_run_jobs(tmp_path, "--configfile", ROOT / "config" / "config.yaml")
    assert jobs["attribute_imagenet"] == 100 and jobs["attribute_voc2007"] == 30
    assert jobs["table1"] == 2 and jobs["fig2"] == 2 and jobs["fig3"] == 2 and jobs["patterns"] == 1


def test_model_comparison_dag_builds_without_data(tmp_path):
    """VGG-16 and ResNet-50 on the same ImageNet units, side by side (config/imagenet_models.yaml)."""
    jobs = dry_run_jobs(tmp_path, "--configfile", ROOT / "config" / "imagenet_models.yaml")
    assert jobs["attribute_imagenet_vgg16"] == 100 and jobs["attribute_imagenet_resnet50"] == 100
    assert jobs["comparison"] == 1 and jobs["table1"] == 2 and jobs["faithfulness"] == 2


def test_the_demo_compares_two_architectures(tmp_path):
    """`make demo` trains the demo VGG and the demo ResNet on the same data, explains both and compares them."""
    jobs = dry_run_jobs(tmp_path, "--configfile", ROOT / "config" / "demo.yaml")
    assert jobs["train_model"] == 2 and jobs["attribute_demo"] == 4 and jobs["attribute_demo_resnet"] == 4
    assert jobs["comparison"] == 1 and jobs["table1"] == 2 and jobs["faithfulness"] == 2


def test_missing_imagenet_data_is_a_clear_error(tmp_path):
    p = snakemake("results/imagenet/data.json", "--cores", "1", "--configfile", ROOT / "config" / "config.yaml",
                  cwd=tmp_path, check=False)
    out = p.stdout + p.stderr
    assert p.returncode != 0
    assert "ERROR in rule data" in out and "datasets.imagenet.boxes" in out  # (the images: rule `images`)
    assert not (tmp_path / "results" / "imagenet" / "data.json").exists()


@pytest.mark.parametrize("edit, key", [
    (lambda c: c["analyzers"].update({"lrp_zz": {}}), "analyzers.lrp_zz"),
    (lambda c: c["attribution"].update({"batch_size": -4}), "attribution.batch_size"),
    (lambda c: c["attribution"].update({"fused": "yes"}), "attribution.fused"),
    (lambda c: c["datasets"]["demo"].update({"model": "nope"}), "datasets.demo.model"),
    (lambda c: c["datasets"]["demo"].update({"format": "imagenet", "source": "local"}), "datasets.demo.images"),
    (lambda c: c["analyzers"].update({"lrp_z": {"epsilon": -1}}), "analyzers.lrp_z.epsilon"),
    (lambda c: c["analyzers"].update({"lrp_epsilon": {"epsilon": float("nan")}}),
     "analyzers.lrp_epsilon.epsilon: nan is not a finite number"),
    (lambda c: c["analyzers"].update({"gradient": {"epsilon": 5}}), "analyzers.gradient.epsilon: gradient takes no"),
    (lambda c: c["analyzers"]["integrated_gradients"].update({"step": 4}), "analyzers.integrated_gradients.step"),
    (lambda c: c.update({"plugins": ["my_methods.py"]}), "plugins[0]: plugin file 'my_methods.py' does not exist"),
    (lambda c: c.update({"comparisons": {"m": ["demo", "nope"]}}), "comparisons.m: ['nope'] not keys of `datasets`"),
    (lambda c: c.update({"comparisons": {"m": ["demo", "demo"]}}), "comparisons.m: ['demo', 'demo'] has non-unique"),
    (lambda c: (c["datasets"].update(demo2=dict(c["datasets"]["demo"])),
                c.update(comparisons={"m": ["demo", "demo2"]})),
     "comparisons.m: the datasets must use different models"),
    (lambda c: (c["datasets"].update(demo2=dict(c["datasets"]["demo"], input_size=32, model="m2")),
                c["models"].update(m2=dict(c["models"]["demo_vgg"])), c.update(comparisons={"m": ["demo", "demo2"]})),
     "comparisons.m: the datasets must hold the same data and units; ['demo', 'demo2'] differ in ['input_size']"),
    (lambda c: c["datasets"].update(comparisons=dict(c["datasets"]["demo"])), "datasets.comparisons: the name is"),
    (lambda c: c.update(comparisons={"a b": ["demo"]}), "comparisons: 'a b' does not match"),
])
def test_broken_config_is_refused_by_key(tmp_path, edit, key):
    """The one validation the Snakefile runs (lrp.pipeline.config.validate), in this process: every problem
    named by its key. That Snakemake runs it before any job is the next test's."""
    import yaml

    from lrp.pipeline.config import ConfigError, validate

    cfg = yaml.safe_load(write_config(tmp_path, "ci.yaml", edit).read_text())
    with pytest.raises(ConfigError) as e:
        validate(cfg, ROOT / "config" / "schema.yaml")
    assert key in str(e.value)


@pytest.mark.parametrize("edit, key", [
    (lambda c: c["attribution"].update({"batch_size": -4}), ["attribution.batch_size"]),  # the schema's check
    (lambda c: (c["faithfulness"].update({"steps": 10_000}), c.update({"plugins": ["my_methods.py"]})),
     ["faithfulness.steps: 10000 regions to remove", "plugins[0]: plugin file 'my_methods.py' does not exist"]),
], ids=["schema", "check_config"])
def test_broken_config_fails_before_any_job(tmp_path, edit, key):
    cfg = write_config(tmp_path, "ci.yaml", edit)
    p = snakemake("--cores", "1", "--configfile", cfg, cwd=tmp_path, check=False)
    assert p.returncode != 0
    for k in key:
        assert k in p.stdout + p.stderr, k
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_cluster_generic_profile_submits_every_job(tmp_path):
    """The cluster-generic profile as users run it, with a stand-in for sbatch: every job of the data stages
    is a batch job (its own Snakemake process), and the outputs arrive."""
    p = snakemake("results/demo/samples.csv", "--profile",
                  ROOT / "profiles" / "cluster-generic",
                  "--cluster-generic-submit-cmd", ROOT / "tests" / "fake_submit.sh",
                  "--jobs", "2", "--latency-wait", "5", "--seconds-between-status-checks", "1",
                  "--configfile", ROOT / "config" / "ci.yaml", cwd=tmp_path)
    out = p.stdout + p.stderr
    submitted = {line.split("external jobid")[0] for line in out.splitlines() if "with external jobid 'fake-" in line}
    assert len(submitted) == 2, out[-3000:]  # data, then index on its output
    assert (tmp_path / "results" / "demo" / "samples.csv").stat().st_size > 0


def test_missing_pattern_folder_names_the_key(tmp_path):
    from lrp.pipeline.data import index

    data = tmp_path / "data.json"
    data.write_text(json.dumps({"images": str(tmp_path), "annotations": str(tmp_path)}))
    cfg = {**dataset_entry(format="imagenet", input_size=64, model="m", n_shards=1),
           "pattern_images": str(tmp_path / "nope"), "max_samples": 4}
    with pytest.raises(FileNotFoundError, match=r"datasets\.imagenet\.patterns\.images: .*nope.* not a folder"):
        index(data, cfg, tmp_path / "s.csv", tmp_path / "r.json", key="datasets.imagenet")
    assert not (tmp_path / "s.csv").exists()


def test_comparison_rule_runs_on_finished_tables(tmp_path):
    """The comparison job as Snakemake runs it (rule, script, stage), on two datasets' finished tables."""
    import pandas as pd

    from lrp.datasets.index import INDEX_COLUMNS

    def edit(c):
        c["datasets"]["demo_b"] = dict(c["datasets"]["demo"], model="demo_vgg_b")
        c["models"]["demo_vgg_b"] = dict(c["models"]["demo_vgg"])
        c["comparisons"] = {"two_models": ["demo", "demo_b"]}

    cfg = write_config(tmp_path, "ci.yaml", edit)
    row = {c: "" for c in INDEX_COLUMNS} | {"class_index": 0, "width": 8, "height": 8, "n_boxes": 1,
                                             "box_fraction": 0.5}
    for d, mu in (("demo", (3.0, 2.0)), ("demo_b", (2.0, 2.5))):
        res = tmp_path / "results" / d
        res.mkdir(parents=True)
        pd.DataFrame([{**row, "sample_id": s} for s in ("u0", "u1")], columns=INDEX_COLUMNS).to_csv(
            res / "samples.csv", index=False)
        pd.DataFrame({"analyzer": ["lrp_z", "gradient"], "label": ["LRP_z", "Gradient"], "mu_w": mu,
                      "mu_w_lo": 0.0, "mu_w_hi": 4.0}).to_csv(res / "table1.csv", index=False)
        pd.DataFrame({"analyzer": ["lrp_z", "gradient"], "pointing": [0.8, 0.7], "pointing_lo": 0.5,
                      "pointing_hi": 0.9}).to_csv(res / "table2.csv", index=False)
        pd.DataFrame({"analyzer": ["lrp_z", "gradient", "random"], "diff": [1.5, 0.1, 0.0], "diff_lo": -1.0,
                      "diff_hi": 2.0}).to_csv(res / "table3.csv", index=False)
        (res / "metrics").mkdir()
        for a in ("lrp_cmp_alpha2_flat", "lrp_z", "pattern_attribution", "gradient", "lrp_cmp_gamma_flat",
                  "integrated_gradients"):  # ci.yaml's analyzers but the baseline: compared unit by unit
            pd.DataFrame({"sample_id": ["u0", "u1"], "mu": 0.5, "mu_w": [mu[0] + 0.5 * (a == "lrp_z")] * 2,
                          "box_fraction": [0.2, 0.6]}).to_csv(res / "metrics" / f"{a}.csv", index=False)
    snakemake("results/comparisons/two_models.md", "--allowed-rules", "comparison", "--cores", "1",
              "--configfile", cfg, cwd=tmp_path)
    md = (tmp_path / "results" / "comparisons" / "two_models.md").read_text()
    assert "μ_w · demo_vgg_b" in md and "3.000 [0.000, 4.000] (1)" in md and "τ = n/a over 2 analyzers" in md
    assert "Δμ_w demo_vgg_b − demo_vgg" in md and "-1.000 [-1.000, -1.000] †" in md  # every unit: 2.5 vs 3.5
    pairs = pd.read_csv(tmp_path / "results" / "comparisons" / "two_models_pairs.csv")
    assert len(pairs) == 6 and "baseline" not in set(pairs["analyzer"])
    assert (tmp_path / "results" / "comparisons" / "two_models_fig3.png").stat().st_size > 1000
    assert (tmp_path / "results" / "comparisons" / "two_models.png").stat().st_size > 1000
