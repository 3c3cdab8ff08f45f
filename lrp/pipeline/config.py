"""Checks of a study config that a JSON schema cannot express; every message names the config key.

The schema (config/schema.yaml, applied by `check_schema` before this) covers types, ranges and names, and
`check_schema` refuses NaN/±Inf anywhere; `check_config` covers references between sections and what each data
source needs.
"""

from __future__ import annotations

import math


class ConfigError(ValueError):
    pass


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def non_finite(value, path=()) -> list[tuple[tuple, float]]:
    """(key path, value) of every NaN or ±Inf float anywhere in `value` (nested dicts and lists).

    Why: JSON schema's `minimum`/`maximum` compare False with NaN, so `.nan` passes every range; YAML's
    `.inf`/`.nan` would reach the jobs and fail them there (or poison their numbers). No key allows them.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return [(path, value)]
    if isinstance(value, dict):
        return [hit for k, v in value.items() for hit in non_finite(v, (*path, k))]
    if isinstance(value, (list, tuple)):
        return [hit for i, v in enumerate(value) for hit in non_finite(v, (*path, i))]
    return []


def check_schema(config: dict, schema_path) -> None:
    """Validate against the JSON schema, reporting EVERY problem as `key.path: message` (no schema dump).

    Also refuses NaN/±Inf anywhere (`non_finite`). Raises ConfigError listing all problems.
    """
    import jsonschema
    import yaml

    with open(schema_path) as f:
        schema = yaml.safe_load(f)
    validator = jsonschema.Draft202012Validator(schema)
    hits = non_finite(config)
    problems = [f"{_key(path)}: {value} is not a finite number" for path, value in hits]
    hit_paths = {path for path, _ in hits}
    for err in sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path))):
        if tuple(err.absolute_path) in hit_paths:
            continue  # already reported as not finite (a schema message about `nan` would only confuse)
        key = _key(err.absolute_path)
        if err.validator == "propertyNames":
            bad = err.instance
            allowed = err.schema.get("enum") or err.schema.get("pattern")
            problems.append(f"{key}: {bad!r} is not allowed here (allowed: {allowed})")
        elif err.validator == "additionalProperties" and "were unexpected" in err.message:
            problems.append(f"{key}: unknown key(s) — {err.message}")
        else:
            problems.append(f"{key}: {err.message}")
    if problems:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(problems))


def check_config(config: dict) -> None:
    """Also imports the config's `plugins`, whose analyzers the `analyzers` section may then name."""
    from lrp import plugins
    from lrp.composites import check_options, get, names, option_names

    problems = []
    models, analyzers = config["models"], config["analyzers"]
    try:
        plugins.load(config.get("plugins") or [])
    except plugins.PluginError as e:
        problems.append(str(e))
    for a, opts in analyzers.items():
        if a not in names():
            problems.append(f"analyzers.{a}: unknown analyzer (known: {', '.join(names())}); if it is your own, "
                            f"list the file that registers it under `plugins`")
            continue
        known = option_names(get(a)) - {"patterns"}
        unknown = sorted(set(opts or {}) - known)
        for k in unknown:
            problems.append(f"analyzers.{a}.{k}: {a} takes no option {k!r} (it takes: "
                            f"{', '.join(sorted(known)) or 'none'})")
        if not unknown:
            try:
                check_options(a, opts)  # the values (flat_layers' bound needs the model: checked when it runs)
            except ValueError as e:
                problems.append(f"analyzers.{a}: {e}")
    flat = ((config.get("report") or {}).get("panel") or {}).get("flat_analyzer")
    if flat is not None and flat in names() and "flat_layers" not in option_names(get(flat)):
        problems.append(f"report.panel.flat_analyzer: {flat!r} takes no flat_layers option; name a ♭ analyzer "
                        f"(e.g. lrp_cmp_alpha1_flat)")
    for name, ds in config["datasets"].items():
        key = f"datasets.{name}"
        if ds["model"] not in models:
            problems.append(f"{key}.model: {ds['model']!r} is not a key of `models` ({', '.join(models)})")
        source = ds.get("source", "local")
        if ds["format"] == "voc" and source != "demo" and not ds.get("root"):
            problems.append(f"{key}.root: required for VOC data (an extracted VOCdevkit/VOC2007 folder, or the "
                            f"folder to download the tars to with source: download)")
        if ds["format"] == "voc" and not ds.get("splits"):
            problems.append(f"{key}.splits: required for VOC data (e.g. [trainval, test])")
        if ds["format"] == "imagenet":
            if source == "demo":
                problems.append(f"{key}.source: the demo data set is in VOC format (format: voc)")
            if source == "download":
                problems.append(f"{key}.source: ImageNet cannot be downloaded without a login; use source: "
                                f"local and set {key}.images and {key}.boxes")
            for k in ("images", "boxes"):
                if not ds.get(k):
                    problems.append(f"{key}.{k}: required for ImageNet data (folder, archive or URL)")
        for a in ds.get("analyzers") or []:
            if a not in analyzers:
                problems.append(f"{key}.analyzers: {a!r} is not configured under the top-level `analyzers`")
        selected = ds.get("analyzers") or list(analyzers)
        if "pattern_attribution" in selected:
            pat = ds.get("patterns") or {}
            if ds["format"] == "imagenet" and not pat.get("images"):
                problems.append(f"{key}.patterns.images: pattern_attribution needs training images to learn "
                                f"patterns from (a folder of ImageNet train JPEGs)")
            if ds["format"] == "voc" and not pat.get("split"):
                problems.append(f"{key}.patterns.split: pattern_attribution needs a training split "
                                f"(e.g. train) to learn patterns from")
    for name, m in models.items():
        key = f"models.{name}"
        if "train" in m:
            if m["train"]["dataset"] not in config["datasets"]:
                problems.append(f"{key}.train.dataset: {m['train']['dataset']!r} is not a key of `datasets`")
        elif not m.get("weights"):
            problems.append(f"{key}.weights: required (path to the weight file) unless the model is trained "
                            f"by the pipeline (`train:`)")
    if problems:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(problems))
