"""The config check before any job runs: NaN/±Inf anywhere and numbers out of range are refused by key path."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from lrp.pipeline.config import ConfigError, check_schema, non_finite, validate

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "config" / "schema.yaml"


def _config(base: str = "ci.yaml") -> dict:
    return yaml.safe_load((ROOT / "config" / base).read_text())


def _problems(cfg: dict) -> list[str]:
    with pytest.raises(ConfigError) as e:
        check_schema(cfg, SCHEMA)
    lines = str(e.value).splitlines()
    assert lines[0] == "invalid config:"
    return [line.removeprefix("  - ") for line in lines[1:]]


@pytest.mark.parametrize("base", ["config.yaml", "demo.yaml", "ci.yaml"])
def test_shipped_configs_pass(base):
    check_schema(_config(base), SCHEMA)


@pytest.mark.parametrize("literal, shown", [(".nan", "nan"), (".inf", "inf"), ("-.inf", "-inf"), (".NaN", "nan")])
def test_yaml_non_finite_epsilon_names_the_key(literal, shown):
    """`epsilon: .nan` passes `minimum: 0` (NaN compares False); it must fail here, not in the attribution job."""
    text = (ROOT / "config" / "ci.yaml").read_text()
    assert text.count("  lrp_z: {}\n") == 1
    cfg = yaml.safe_load(text.replace("  lrp_z: {}\n", f"  lrp_epsilon: {{epsilon: {literal}}}\n"))
    assert _problems(cfg) == [f"analyzers.lrp_epsilon.epsilon: {shown} is not a finite number"]


@pytest.mark.parametrize("yaml_edit, key", [
    ("attribution: {batch_size: .inf}", "attribution.batch_size"),  # not reported as "not of type 'integer'"
    ("evaluation: {n_boot: .nan}", "evaluation.n_boot"),
    ("analyzers: {integrated_gradients: {steps: .inf}}", "analyzers.integrated_gradients.steps"),  # plugin option
    ("models: {demo_vgg: {min_accuracy: {mAP: .nan}}}", "models.demo_vgg.min_accuracy.mAP"),
    ("models: {demo_vgg: {train: {lr: .nan}}}", "models.demo_vgg.train.lr"),
    ("models: {demo_vgg: {train: {recipe: finetune_alexnet, init_weights: null, crop_scale: [0.1, -.inf]}}}",
     "models.demo_vgg.train.crop_scale.1"),
])
def test_non_finite_anywhere_names_the_key(yaml_edit, key):
    cfg = _merge(_config(), yaml.safe_load(yaml_edit))
    assert f"{key}: " in "\n".join(_problems(cfg))
    problems = [p for p in _problems(cfg) if p.startswith(f"{key}: ")]
    assert len(problems) == 1 and problems[0].endswith(" is not a finite number"), problems


@pytest.mark.parametrize("yaml_edit, message", [
    ("analyzers: {lrp_epsilon: {epsilon: -0.5}}", "analyzers.lrp_epsilon.epsilon: -0.5 is less than the minimum of 0"),
    ("analyzers: {lrp_cmp_alpha2_flat: {flat_layers: -1}}", "analyzers.lrp_cmp_alpha2_flat.flat_layers: -1 is less"),
    ("models: {demo_vgg: {min_accuracy: {mAP: 1.5}}}", "models.demo_vgg.min_accuracy.mAP: 1.5 is greater than the "
                                                        "maximum of 1"),
    ("models: {demo_vgg: {min_accuracy: {top5: -0.1}}}", "models.demo_vgg.min_accuracy.top5: -0.1 is less"),
    ("models: {demo_vgg: {train: {seed: -3}}}", "models.demo_vgg.train.seed: -3 is less than the minimum of 0"),
    ("models: {demo_vgg: {train: {seed: 18446744073709551616}}}", "models.demo_vgg.train.seed: 18446744073709551616 "
                                                                   "is greater than the maximum"),
    ("models: {demo_vgg: {train: {lr: 0}}}", "models.demo_vgg.train.lr: 0 is less than or equal to the minimum of 0"),
    ("datasets: {demo: {demo: {seed: -1}}}", "datasets.demo.demo.seed: -1 is less than the minimum of 0"),
    ("datasets: {demo: {n_shards: 0}}", "datasets.demo.n_shards: 0 is less than the minimum of 1"),
    ("evaluation: {seed: -7}", "evaluation.seed: -7 is less than the minimum of 0"),
    ("models: {demo_vgg: {mean: [104, 117, 256]}}", "models.demo_vgg.mean.2: 256 is greater than the maximum of 255"),
])
def test_out_of_range_names_the_key(yaml_edit, message):
    assert any(p.startswith(message) for p in _problems(_merge(_config(), yaml.safe_load(yaml_edit)))), message


def test_every_problem_is_reported_once():
    cfg = _merge(_config(), yaml.safe_load("{attribution: {batch_size: .nan, threads: 0}, evaluation: {seed: .inf}}"))
    assert _problems(cfg) == ["attribution.batch_size: nan is not a finite number",
                              "evaluation.seed: inf is not a finite number",
                              "attribution.threads: 0 is less than the minimum of 1"]


def test_non_finite_walks_lists_and_dicts_only_floats():
    value = {"a": [1, 2.5, float("nan")], "b": {"c": float("-inf"), "d": "nan", "e": True}, "f": 10**400}
    hits = non_finite(value)
    assert [(path, str(v)) for path, v in hits] == [(("a", 2), "nan"), (("b", "c"), "-inf")]


def _merge(cfg: dict, edit: dict) -> dict:
    """`cfg` with the nested `edit` written over it (dicts merged key by key, other values replaced)."""
    out = copy.deepcopy(cfg)
    for k, v in edit.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@pytest.mark.parametrize("yaml_edit, message", [
    ("datasets: {demo: {input_size: 64.0}}", "datasets.demo.input_size: 64.0 is not of type 'integer'"),
    ("datasets: {demo: {n_shards: true}}", "datasets.demo.n_shards: True is not of type 'integer'"),
    ("analyzers: {lrp_epsilon: {epsilon: yes}}", "analyzers.lrp_epsilon.epsilon: True is not of type 'number'"),
    (f"analyzers: {{lrp_epsilon: {{epsilon: {'9' * 400}}}}}",
     "analyzers.lrp_epsilon.epsilon: an integer of 400 digits is too large (at most 2**64)"),
    (f"evaluation: {{n_boot: {'1' * 25}}}", "evaluation.n_boot: an integer of 25 digits is too large"),
])
def test_numbers_must_be_what_the_jobs_take(yaml_edit, message):
    """A float where a count belongs (`64.0` reaches range() or a tensor shape), a boolean where a number
    belongs (YAML's `yes`), an integer no float can hold: refused by key, before any job."""
    problems = _problems(_merge(_config(), yaml.safe_load(yaml_edit)))
    assert any(p.startswith(message) for p in problems), problems


def test_validate_fills_every_default_once():
    """The schema is the one place a default lives: `validate` fills them (recipe branches included) and the
    rules read keys, never `.get(key, default)`."""
    cfg = yaml.safe_load("""
results: r
datasets:
  a: {format: voc, source: demo, splits: [test], input_size: 32, model: m, n_shards: 1}
  b: {format: voc, root: /data/VOC2007, splits: [test], input_size: 32, model: m, n_shards: 1}
  c: {format: imagenet, images: /i, boxes: /b, input_size: 224, model: f, n_shards: 1}
models:
  m: {arch: checkpoint, bias: innvestigate, train: {dataset: a}}
  r: {arch: checkpoint, bias: innvestigate, train: {dataset: a, recipe: demo_resnet}}
  f: {arch: checkpoint, bias: toolbox, train: {dataset: b, recipe: finetune_alexnet, init_weights: null}}
analyzers: {lrp_z: {}}
""")
    validate(cfg, SCHEMA)
    a, b, c = (cfg["datasets"][k] for k in "abc")
    assert (a["classes"], b["classes"], c["classes"]) == ("demo", "voc", "imagenet")
    assert (a["box_rounding"], b["box_rounding"], c["box_rounding"]) == ("nearest", "nearest", "outward")
    assert a["demo"] == {"n_train": 2000, "n_test": 600, "seed": 0, "max_objects": 4}  # inside a branch's default
    assert "demo" not in b and "demo" not in c
    assert a["limits"] == b["limits"] and a["limits"] is not b["limits"]  # copies: no dataset shares another's
    assert cfg["models"]["m"]["train"] == {"dataset": "a", "recipe": "demo_vgg", "epochs": 10, "batch_size": 64,
                                           "lr": 0.002, "seed": 0, "threads": 2}
    assert cfg["models"]["r"]["train"] == {"dataset": "a", "recipe": "demo_resnet", "epochs": 10, "batch_size": 64,
                                           "lr": 0.003, "seed": 0, "threads": 2}
    assert cfg["attribution"] == {"batch_size": 16, "device": "auto", "precision": "float32", "tf32": False,
                                  "fused": "auto", "deterministic": False, "threads": 2, "top_k": 1000}
    assert cfg["report"]["panel"] == {"n_images": 4, "flat_analyzer": "lrp_cmp_alpha1_flat"}
    assert cfg["plugins"] == [] and cfg["training_data"] == {}


def test_each_demo_recipe_takes_only_its_own_keys():
    """demo_resnet trains like demo_vgg (the same keys); a finetune_alexnet key on it is refused by key path."""
    cfg = _merge(_config("demo.yaml"), {"models": {"demo_resnet": {"train": {"init_weights": None}}}})
    problems = _problems(cfg)
    assert any(p.startswith("models.demo_resnet.train: 'init_weights' is not one of") for p in problems), problems
    cfg = _merge(_config("demo.yaml"), {"models": {"demo_resnet": {"train": {"recipe": "demo_vit"}}}})
    assert any(p.startswith("models.demo_resnet.train.recipe: 'demo_vit' is not one of") for p in _problems(cfg))


def test_schema_defaults_equal_the_library_defaults():
    """Where the library has a default of its own (its functions are called outside the pipeline too), the
    schema gives the same value: the finetune recipe's hyper-parameters and the bounds on untrusted data."""
    import inspect

    from lrp.datasets.extract import MAX_EXTRACT_BYTES, MAX_EXTRACT_MEMBERS
    from lrp.storage.images import MAX_IMAGE_PIXELS
    from lrp.training.finetune import RECIPE_KEYS, finetune_alexnet

    cfg = _config("ci.yaml")
    cfg["models"]["demo_vgg"]["train"] = {"dataset": "demo", "recipe": "finetune_alexnet", "init_weights": None}
    validate(cfg, SCHEMA)
    train = cfg["models"]["demo_vgg"]["train"]
    signature = inspect.signature(finetune_alexnet).parameters
    assert train["eval_split"] == "test"  # run_finetune's, not finetune_alexnet's
    for key in set(RECIPE_KEYS) - {"eval_split"}:
        default = signature[key].default
        assert train[key] == (list(default) if isinstance(default, tuple) else default), key
    limits = cfg["datasets"]["demo"]["limits"]
    assert (limits["archive_bytes"], limits["archive_members"], limits["image_pixels"]) == (
        MAX_EXTRACT_BYTES, MAX_EXTRACT_MEMBERS, MAX_IMAGE_PIXELS)
