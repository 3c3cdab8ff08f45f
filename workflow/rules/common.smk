# Helpers shared by all rules: config validation, paths, input functions (no lambdas in rules).
import json
import os
from pathlib import Path

from snakemake.exceptions import WorkflowError

from lrp.pipeline.config import ConfigError, validate

# Validated once, here: every problem by key, then the schema's defaults filled in (config/schema.yaml is the
# one place a default lives; the rules and scripts below read keys, never `.get(key, default)`).
try:
    validate(config, Path(workflow.basedir) / "config" / "schema.yaml")
except ConfigError as e:
    raise WorkflowError(str(e))

# Every job's CPU convolutions take the kernels of this instruction set, whatever the CPU (jobs inherit the
# environment; a cluster job re-reads this file): docs/reproducibility.md.
os.environ.update(ONEDNN_MAX_CPU_ISA=config["reproducibility"]["onednn_max_cpu_isa"])

R = config["results"]


wildcard_constraints:
    dataset="[a-z][a-z0-9_]*",
    analyzer="[a-z][a-z0-9_]*",
    model="[A-Za-z0-9_.-]+",
    name="[A-Za-z0-9_.-]+",
    shard="[0-9]+",


ENV = "../../envs/lrp.yaml"


# Params. Snakemake re-runs a job whose params changed (repr() compared), so each rule gets what its
# output is computed from and no more: a study of 800,000 maps must not start over because a report
# setting, a thread count or the order of keys in the config file changed.


def canonical(value):
    """`value` with every dict's keys sorted (lists keep their order): the repr Snakemake compares then
    does not change when only the order of keys in the config file does."""
    if isinstance(value, dict):
        return {k: canonical(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


EVALUATION_KEYS = ("model", "paper", "analyzers", "panel_samples", "task", "seed_spread")
"""Dataset keys that say how a dataset is evaluated and reported, not what its images and labels are:
kept out of the params of the data rules (data, index, image shards), whose outputs everything else
depends on."""

RUN_SETTINGS = ("batch_size", "device", "threads", "fused")
"""Attribution/occlusion settings that say where and in what slices a job runs, not what it computes (a
batch size, a device or fused kernels change maps at float round-off only): kept out of params, so that a
run resumed on another machine, with a batch size that fits its GPU, computes only what is missing. They
reach the scripts as the jobs' threads and resources (run_resources), which Snakemake does
not compare for re-runs and which a profile can override per rule (`set-resources`, `set-threads`);
attribution shards record them (attributes `config` and `device`)."""


def run_resources(batch_size=None):
    """Resources of the jobs that run the model: the device, the batch size (the attribution's unless the
    stage has its own, e.g. occlusion's) and whether LRP steps run fused (a string: resources are ints or
    strings; the scripts read "auto", "true", "false"). gpu=1 lets a one-GPU profile run them one at a time."""
    att = config["attribution"]
    return dict(
        gpu=1,
        device=att["device"],
        batch_size=att["batch_size"] if batch_size is None else batch_size,
        fused=str(att["fused"]).lower(),
    )


def dataset(name):
    return config["datasets"][name]


def model_spec(name):
    """The model entry of a dataset as the stages load it: `weights` points at the trained file for trained
    models; `train` (how it was made: its file says) and `min_accuracy` (the model card's check) are left
    out, so that editing them does not re-run the occlusion check, the patterns and every attribution."""
    m = dataset(name)["model"]
    spec = {k: v for k, v in config["models"][m].items() if k not in ("train", "min_accuracy")}
    if "train" in config["models"][m]:
        spec["weights"] = f"{R}/models/{m}/model.pt"
    return canonical(spec)


def analyzers(name):
    """Analyzers evaluated on a dataset, in config order (the dataset may select a subset)."""
    subset = dataset(name).get("analyzers")
    return [a for a in config["analyzers"] if subset is None or a in subset]


def computed_analyzers(name):
    """Analyzers that need attribution maps (the uniform baseline is analytic)."""
    return [a for a in analyzers(name) if a != "baseline"]


def analyzer_options(name):
    """{analyzer: options} in config order (the order of the report's panel columns)."""
    return {a: canonical(dict(config["analyzers"][a] or {})) for a in computed_analyzers(name)}


def shards(name):
    return [str(i) for i in range(dataset(name)["n_shards"])]


def image_shards(wildcards):
    return expand(f"{R}/{{dataset}}/images/{{shard}}.h5", dataset=wildcards.dataset, shard=shards(wildcards.dataset))


def attribution_shards(wildcards):
    if wildcards.analyzer == "baseline":
        return []
    return expand(
        f"{R}/{{dataset}}/attributions/{{analyzer}}/{{shard}}.h5",
        dataset=wildcards.dataset,
        analyzer=wildcards.analyzer,
        shard=shards(wildcards.dataset),
    )


def shard_attributions(wildcards):
    """Every computed analyzer's attribution shard of one image shard (the perturbation stage reads them all)."""
    return expand(
        f"{R}/{{dataset}}/attributions/{{analyzer}}/{{shard}}.h5",
        dataset=wildcards.dataset,
        analyzer=computed_analyzers(wildcards.dataset),
        shard=wildcards.shard,
    )


def perturbation_shards(wildcards):
    return expand(
        f"{R}/{{dataset}}/perturbation/{{shard}}.h5", dataset=wildcards.dataset, shard=shards(wildcards.dataset)
    )


def faithfulness_settings(wildcards):
    """What the perturbation curves are computed from: the faithfulness section less its run setting (batch
    size) and the sanity check's keys."""
    skip = ("batch_size", "sanity_units")
    out = canonical({k: v for k, v in config["faithfulness"].items() if k not in skip})
    out["orders"] = sorted(out["orders"], key=["morf", "lerf"].index)  # their order changes nothing
    return out


def metric_files(wildcards):
    return {a: f"{R}/{wildcards.dataset}/metrics/{a}.csv" for a in analyzers(wildcards.dataset)}


def model_weights_of(name):
    """The weight file a dataset's model needs as input: a rule's output when trained, else none (the
    user's file is checked by the stage itself, with an error naming the config key)."""
    return model_spec(name)["weights"] if "train" in config["models"][dataset(name)["model"]] else []


def model_weights(wildcards):
    return model_weights_of(wildcards.dataset)


def patterns_of(name):
    return f"{R}/{name}/patterns.h5" if "pattern_attribution" in computed_analyzers(name) else []


def pattern_dataset_cfg(wildcards):
    """The dataset config restricted to the images the patterns are learned from (rules pattern_index and
    pattern_images): VOC format, the `patterns.split` image set; ImageNet format, the `patterns.images`
    folder of training JPEGs (`pattern_images`), not the evaluated val images."""
    d = dataset(wildcards.dataset)
    pat = d["patterns"]  # check_config: a dataset with pattern_attribution has its patterns section
    cfg = {k: v for k, v in d.items() if k not in EVALUATION_KEYS + ("n_shards", "patterns")}
    if cfg["format"] == "voc":
        cfg["splits"] = [pat["split"]]
    cfg["max_samples"] = pat["max_images"]
    cfg["pattern_images"] = pat.get("images")  # ImageNet format only
    return canonical(cfg)


def pattern_max_images(wildcards):
    return dataset(wildcards.dataset)["patterns"]["max_images"]


def train_data(wildcards):
    """The trained-for dataset's data.json (first: its root holds the eval split), plus the data.json of
    the `training_data` entry the recipe trains on, if any (finetune_alexnet's `data`)."""
    spec = train_cfg(wildcards.model)
    out = [f"{R}/{spec['dataset']}/data.json"]
    if spec.get("data"):
        out.append(f"{R}/training_data/{spec['data']}/data.json")
    return out


def train_cfg(model):
    """models.<model>.train with its recipe filled in; a `data` key must name a `training_data` entry."""
    spec = config["models"][model].get("train")
    if spec is None:
        raise WorkflowError(f"models.{model} has no `train` section: nothing to train")
    data = spec.get("data")
    if data is not None and data not in config["training_data"]:
        raise WorkflowError(
            f"models.{model}.train.data: {data!r} is not a key of `training_data` "
            f"({', '.join(config['training_data']) or 'none defined'})"
        )
    return spec


def train_threads(wildcards):
    return train_cfg(wildcards.model)["threads"]


def train_gpus(wildcards):
    """finetune_alexnet asks for a GPU unless its device is cpu; the demo VGG trains on the CPU."""
    spec = train_cfg(wildcards.model)
    return int(spec["recipe"] == "finetune_alexnet" and spec["device"] != "cpu")


def train_device(wildcards):
    """Where finetune_alexnet trains (a run setting: not a param); the demo VGG trains on the CPU."""
    spec = train_cfg(wildcards.model)
    return spec["device"] if spec["recipe"] == "finetune_alexnet" else "cpu"


def training_data_cfg(wildcards):
    return canonical(config["training_data"][wildcards.name])


def train_card(wildcards):
    m = dataset(wildcards.dataset)["model"]
    return f"{R}/models/{m}/training.json" if "train" in config["models"][m] else []


def lrp_sources(*specs, plugins=None):
    """Content hash of the lrp code a stage runs ("module:function" plus every lrp module it imports,
    lrp.pipeline.provenance.source_hash): editing that code re-runs the stage, editing other stages does not. For
    stages that use analyzers, the plugin files count too (`plugins`; default: all of the config's)."""
    from lrp.pipeline.source_cache import cached_source_hash

    plugins = config["plugins"] if plugins is None else plugins
    return cached_source_hash(*specs, plugins=plugins, cache=SOURCE_HASH_CACHE)


SOURCE_HASH_CACHE = Path(".snakemake") / "lrp_source_hash.json"
"""Snakemake's own folder in the working directory: a dry run or a cluster job then does not parse the lrp
package again to hash it (lrp.pipeline.source_cache)."""


def dataset_code(spec):
    """`params.code` of a per-dataset stage that uses analyzers: its lrp code plus the plugins of that
    dataset's analyzers, so that editing a plugin re-runs only the datasets that use it."""

    def code(wildcards):
        return lrp_sources(spec, plugins=plugins_of(wildcards.dataset))

    return code


def dataset_plugins(wildcards):
    """The plugins a dataset's analyzers come from (its provenance manifest lists them with their sha256)."""
    return plugins_of(wildcards.dataset)


def plugins_of(name):
    """The config's plugins that define an analyzer the dataset computes: editing one re-runs the dataset's
    attributions, editing another does not."""
    from lrp import composites, plugins

    used = {composites.get(a).source for a in computed_analyzers(name)}
    return [p for p in config["plugins"] if str(plugins.origin(p)) in used]


def outputs_of(name):
    """A dataset's results: its attribution shards (Snakemake does not re-create a deleted intermediate file
    whose consumers are up to date, so the shards are targets themselves: a deleted shard is recomputed, then
    the metrics, Table 1 and Fig. 3 that depend on it), tables, figures, checks and report pages."""
    out = expand(
        f"{R}/{name}/attributions/{{analyzer}}/{{shard}}.h5", analyzer=computed_analyzers(name), shard=shards(name)
    )
    out += expand(f"{R}/{name}/metrics/{{analyzer}}.csv", analyzer=analyzers(name))
    out += [
        f"{R}/{name}/{f}"
        for f in (
            "samples.csv",
            "baseline.csv",
            "model_card.json",
            "occlusion.csv",
            "table1.csv",
            "table1.md",
            "table1.tex",
            "paired_mu_w.csv",
            "table2.csv",
            "table2.md",
            "table2.tex",
            "paired_pointing.csv",
            "fig_pairwise_mu_w.png",
            "fig_pairwise_mu_w.pdf",
            "fig_pairwise_pointing.png",
            "fig_pairwise_pointing.pdf",
            "fig_pointing_per_class.png",
            "fig_pointing_per_class.pdf",
            "summary.html",
            "fig1_analyzers.png",
            "fig1_analyzers.pdf",
            "fig1_flat_layers.png",
            "fig1_flat_layers.pdf",
            "fig2_occlusion.png",
            "fig2_occlusion.pdf",
            "fig3_mu_by_box_size.png",
            "fig3_mu_by_box_size.pdf",
            "table3.csv",
            "table3.md",
            "table3.tex",
            "fig_perturbation_curves.png",
            "fig_perturbation_curves.pdf",
            "fig_faithfulness_vs_mu_w.png",
            "fig_faithfulness_vs_mu_w.pdf",
            "sanity.csv",
            "fig_sanity.png",
            "fig_sanity.pdf",
        )
    ]
    return out


def manifest_files(wildcards):
    """What the provenance manifest lists: a dataset's results plus the intermediate files they came from
    (image shards, logits, patterns, and the model and its training card when the pipeline trained it)."""
    name = wildcards.dataset
    out = outputs_of(name) + expand(f"{R}/{name}/images/{{shard}}.h5", shard=shards(name))
    out += [f"{R}/{name}/logits.h5"]
    out += expand(f"{R}/{name}/perturbation/{{shard}}.h5", shard=shards(name))
    out += [patterns_of(name)] if patterns_of(name) else []
    m = dataset(name)["model"]
    if "train" in config["models"][m]:
        out += [f"{R}/models/{m}/model.pt", f"{R}/models/{m}/training.json"]
    return out


def all_targets():
    """Every dataset's results and its provenance manifest (which lists them all with checksums), and every
    model comparison."""
    out = []
    for name in config["datasets"]:
        out += outputs_of(name) + [f"{R}/{name}/provenance.json"]
    for name in config["comparisons"]:
        out += [f"{R}/comparisons/{name}.{ext}" for ext in ("csv", "md", "tex", "png", "pdf")]
        out += [f"{R}/comparisons/{name}_{f}" for f in ("pairs.csv", "fig3.png", "fig3.pdf")]
    return out


def comparison_datasets(wildcards):
    return list(config["comparisons"][wildcards.name])


def comparison_models(wildcards):
    return {d: dataset(d)["model"] for d in comparison_datasets(wildcards)}


def comparison_analyzers(wildcards):
    """The analyzers every dataset of the comparison evaluates, but the uniform baseline (the same map on every
    model): their μ_w is compared between the models unit by unit."""
    names = [analyzers(d) for d in comparison_datasets(wildcards)]
    return [a for a in names[0] if a != "baseline" and all(a in n for n in names)]


def comparison_inputs(wildcards):
    """{<table>_<dataset>: path} of every dataset in the comparison (the index checks that the units agree), and
    {metrics_<dataset>_<i>: path} of the i-th of comparison_analyzers."""
    out = {}
    for d in comparison_datasets(wildcards):
        for i, a in enumerate(comparison_analyzers(wildcards)):
            out[f"metrics_{d}_{i}"] = f"{R}/{d}/metrics/{a}.csv"
        for key, f in (
            ("samples", "samples.csv"),
            ("table1", "table1.csv"),
            ("table2", "table2.csv"),
            ("table3", "table3.csv"),
        ):
            out[f"{key}_{d}"] = f"{R}/{d}/{f}"
    return out


def dataset_patterns(wildcards):
    return patterns_of(wildcards.dataset)


def dataset_analyzer_options(wildcards):
    return analyzer_options(wildcards.dataset)


def sorted_analyzer_options(wildcards):
    """analyzer_options with sorted keys: for stages whose results do not depend on the analyzers' order."""
    return canonical(analyzer_options(wildcards.dataset))


def panel_settings(wildcards):
    """Which samples the Fig. 1-style panels show and which analyzer's flat_layers row they draw."""
    p = config["report"]["panel"]
    return {
        "sample_ids": dataset(wildcards.dataset).get("panel_samples"),
        "n_images": p["n_images"],
        "flat_analyzer": p["flat_analyzer"],
    }


def seed_spread_of(wildcards):
    """The dataset's recorded seed-to-seed spread (datasets.<d>.seed_spread), shown on its summary page: a path
    relative to the working directory, else to the Snakefile's folder (the shipped demo's, from anywhere)."""
    path = dataset(wildcards.dataset).get("seed_spread")
    if not path or Path(path).is_absolute() or Path(path).exists():
        return path or []
    return str(Path(workflow.basedir) / path)


def paper_of(wildcards):
    paper = dataset(wildcards.dataset)["paper"]
    return None if paper == "none" else paper


def data_cfg(wildcards):
    """What data.json records: the dataset's source and location, and the demo's generation settings.
    Which units, classes and shards are evaluated is the index's and the image shards' business, and the
    patterns' training images are their own index's (pattern_dataset_cfg)."""
    d = dataset(wildcards.dataset)
    return canonical(
        {
            k: v
            for k, v in d.items()
            if k not in EVALUATION_KEYS + ("n_shards", "max_samples", "on_error", "splits", "classes", "patterns")
        }
    )


def index_cfg(wildcards):
    """What the index (samples.csv) and the image shards are computed from: the dataset less how it is
    evaluated and reported, and less the patterns (their own index and shard, pattern_dataset_cfg)."""
    d = dataset(wildcards.dataset)
    return canonical({k: v for k, v in d.items() if k not in EVALUATION_KEYS + ("patterns",)})


def model_cfg(wildcards):
    return model_spec(wildcards.dataset)


def network_cfg(wildcards):
    """The model spec less its α-β `bias` convention, which only the analyzers read: for the rules that run
    the network without explaining it (occlusion, model card, patterns)."""
    return {k: v for k, v in model_spec(wildcards.dataset).items() if k != "bias"}


def dataset_task(wildcards):
    return dataset(wildcards.dataset)["task"]


def attribution_settings(wildcards=None):
    """The attribution section less RUN_SETTINGS: precision, TF32 and determinism change the maps."""
    return canonical({k: v for k, v in config["attribution"].items() if k not in RUN_SETTINGS})


def evaluation_cfg(*leave_out):
    """What a table's bootstrap uses: the evaluation section less Fig. 3's min_bin_count (its own param) and
    the keys in `leave_out` (Table 1 does not use the pointing game's tolerance)."""
    skip = ("min_bin_count", *leave_out)
    return canonical({k: v for k, v in config["evaluation"].items() if k not in skip})


RUN_ONLY_TRAIN_KEYS = ("device",)
"""Train keys that say where a training runs, not what it computes: kept out of params (a params change
re-runs the job, and re-training gives a new model that shifts every attribution); it reaches the script as
the job's `resources: device`. Not `threads`: the CPU's reductions are split by thread, so another thread
count trains another model (docs/reproducibility.md); the stage uses exactly the configured count."""


def model_train_spec(wildcards):
    """The train section as the train_model stage gets it: plus the dataset's classes and input size, the
    model name, and the training data's data.json (an input of the rule) when it is a `training_data` entry."""
    spec = {k: v for k, v in train_cfg(wildcards.model).items() if k not in RUN_ONLY_TRAIN_KEYS}
    ds = dataset(spec["dataset"])
    out = {
        **spec,
        "name": wildcards.model,
        "classes": ds["classes"],
        "input_size": ds["input_size"],
        "onednn_max_cpu_isa": config["reproducibility"]["onednn_max_cpu_isa"],
    }
    if spec.get("data"):
        out["train_data_json"] = f"{R}/training_data/{spec['data']}/data.json"
    return canonical(out)


def model_thresholds(wildcards):
    return canonical(config["models"][dataset(wildcards.dataset)["model"]].get("min_accuracy") or {})
