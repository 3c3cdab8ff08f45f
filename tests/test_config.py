"""The config check before any job runs: NaN/±Inf anywhere and numbers out of range are refused by key path."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from lrp.pipeline.config import ConfigError, check_schema, non_finite

ROOT = Path(__file__).resolve().parents[1]
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
