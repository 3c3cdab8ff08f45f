"""A study config checked once, before any job: every problem named by its key, then the schema's defaults
filled in (config/schema.yaml is the one place a default lives), then what a schema cannot express.

`validate` is what the Snakefile calls; `check_schema` (types, ranges, names; NaN/±Inf and floats posing as
integers refused) and `check_config` (references between sections, what each data source needs) are its parts.
"""

from __future__ import annotations

import copy
import math


class ConfigError(ValueError):
    pass


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


#: Largest magnitude an integer in a config may have: above every real count, seed (torch takes < 2**64) or
#: byte budget, and far below what overflows a float (a 400-digit `epsilon` would reach a job as OverflowError).
MAX_CONFIG_INT = 2**64


def _values_where(test, value, path=()) -> list[tuple[tuple, object]]:
    """(key path, value) of every leaf of `value` (nested dicts and lists) for which `test` holds."""
    if isinstance(value, dict):
        return [hit for k, v in value.items() for hit in _values_where(test, v, (*path, k))]
    if isinstance(value, (list, tuple)):
        return [hit for i, v in enumerate(value) for hit in _values_where(test, v, (*path, i))]
    return [(path, value)] if test(value) else []


def non_finite(value, path=()) -> list[tuple[tuple, float]]:
    """(key path, value) of every NaN or ±Inf float anywhere in `value` (nested dicts and lists).

    Why: JSON schema's `minimum`/`maximum` compare False with NaN, so `.nan` passes every range; YAML's
    `.inf`/`.nan` would reach the jobs and fail them there (or poison their numbers). No key allows them.
    """
    return _values_where(lambda v: isinstance(v, float) and not math.isfinite(v), value, path)


def too_large(value, path=()) -> list[tuple[tuple, int]]:
    """(key path, value) of every integer beyond ±MAX_CONFIG_INT anywhere in `value`.

    Why: YAML reads any run of digits as an int; `maximum`-less keys would pass a 400-digit number on to a
    job, to fail there as OverflowError (a float option) or MemoryError (a count)."""
    return _values_where(lambda v: isinstance(v, int) and not isinstance(v, bool) and abs(v) > MAX_CONFIG_INT,
                         value, path)


def _describe(value) -> str:
    if isinstance(value, int):
        return f"an integer of {len(str(abs(value)))} digits is too large (at most 2**64)"
    return f"{value} is not a finite number"


def _validator_class():
    """Draft 2020-12 with Python's types: `integer` means an int (YAML's `64.0` is a float and would reach
    range() or a tensor shape as one), `number` excludes booleans (YAML's `yes`)."""
    import jsonschema

    base = jsonschema.Draft202012Validator
    checker = base.TYPE_CHECKER.redefine_many({
        "integer": lambda _, v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda _, v: isinstance(v, (int, float)) and not isinstance(v, bool),
    })
    return jsonschema.validators.extend(base, type_checker=checker)


def _load_schema(schema_path) -> dict:
    import yaml

    with open(schema_path) as f:
        return yaml.safe_load(f)


def check_schema(config: dict, schema_path) -> None:
    """Validate against the JSON schema, reporting EVERY problem as `key.path: message` (no schema dump).

    Also refuses NaN/±Inf and integers beyond ±2**64 anywhere (`non_finite`, `too_large`). Raises ConfigError listing
    all problems.
    """
    validator = _validator_class()(_load_schema(schema_path))
    hits = non_finite(config) + too_large(config)
    problems = [f"{_key(path)}: {_describe(value)}" for path, value in hits]
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


def fill_defaults(config: dict, schema_path) -> dict:
    """Set every default the schema gives for an absent key, in place (also inside `if`/`then` branches, such
    as a training recipe's own defaults); returns `config`. Call after `check_schema` passed.

    Why here and not in code: a default written once, in the schema, is the value every rule, script and
    stage sees; `.get(key, default)` scattered through the pipeline drifts. Defaults are deep-copied (a shared
    `{}` filled twice would leak one dataset's settings into another's).
    """
    import jsonschema

    cls = _validator_class()
    properties = cls.VALIDATORS["properties"]

    def set_defaults(validator, props, instance, schema):
        if isinstance(instance, dict):
            for name, sub in props.items():
                if isinstance(sub, dict) and "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from properties(validator, props, instance, schema)

    filler = jsonschema.validators.extend(cls, {"properties": set_defaults})(_load_schema(schema_path))
    for _ in range(8):  # a default set by a later keyword (allOf/then) may hold defaults of its own: repeat
        before = copy.deepcopy(config)
        for _error in filler.iter_errors(config):
            pass
        if config == before:
            return config
    raise RuntimeError(f"{schema_path}: defaults did not settle after 8 passes")  # a schema bug, not the user's


def validate(config: dict, schema_path) -> dict:
    """The one check of a study config, before any job runs: the schema (every problem by key), its defaults
    filled in, then `check_config`. Raises ConfigError listing every problem; returns `config` (filled)."""
    check_schema(config, schema_path)
    fill_defaults(config, schema_path)
    check_config(config)
    return config


def check_config(config: dict) -> None:
    """For a config whose defaults are filled in (`fill_defaults`). Also imports the config's `plugins`, whose
    analyzers the `analyzers` section may then name."""
    from lrp import plugins
    from lrp.composites import check_options, get, names, option_names

    problems = []
    models, analyzers = config["models"], config["analyzers"]
    try:
        plugins.load(config["plugins"])
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
    flat = config["report"]["panel"]["flat_analyzer"]
    if flat is not None and flat in names() and "flat_layers" not in option_names(get(flat)):
        problems.append(f"report.panel.flat_analyzer: {flat!r} takes no flat_layers option; name a ♭ analyzer "
                        f"(e.g. lrp_cmp_alpha1_flat)")
    for name, ds in config["datasets"].items():
        key = f"datasets.{name}"
        if ds["model"] not in models:
            problems.append(f"{key}.model: {ds['model']!r} is not a key of `models` ({', '.join(models)})")
        source = ds["source"]
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
        faith = config.get("faithfulness")
        if faith and isinstance(ds.get("input_size"), int):
            side = -(-ds["input_size"] // max(1, round(faith["region"] * ds["input_size"] / 224)))
            if faith["steps"] > side * side:
                problems.append(f"faithfulness.steps: {faith['steps']} regions to remove, but a "
                                f"{ds['input_size']}-pixel input of {key} has only {side * side} regions of the "
                                f"scaled faithfulness.region {faith['region']}")
        selected = ds.get("analyzers") or list(analyzers)
        if "pattern_attribution" in selected:
            pat = ds.get("patterns") or {}
            if ds["format"] == "imagenet" and not pat.get("images"):
                problems.append(f"{key}.patterns.images: pattern_attribution needs training images to learn "
                                f"patterns from (a folder of ImageNet train JPEGs)")
            if ds["format"] == "voc" and not pat.get("split"):
                problems.append(f"{key}.patterns.split: pattern_attribution needs a training split "
                                f"(e.g. train) to learn patterns from")
    for name, members in config.get("comparisons", {}).items():
        key = f"comparisons.{name}"
        missing = [d for d in members if d not in config["datasets"]]
        if missing:
            problems.append(f"{key}: {missing} not keys of `datasets` ({', '.join(config['datasets'])})")
            continue
        used = [config["datasets"][d]["model"] for d in members]
        if len(set(used)) != len(used):
            problems.append(f"{key}: the datasets must use different models (got {used})")
        # the same units: every key but how a dataset is evaluated and reported, its sharding and its patterns
        own = ("model", "paper", "analyzers", "panel_samples", "seed_spread", "n_shards", "patterns")
        data = [{k: v for k, v in config["datasets"][d].items() if k not in own} for d in members]
        differ = sorted({k for d in data for k in d if any(e.get(k) != d.get(k) for e in data)})
        if differ:
            problems.append(f"{key}: the datasets must hold the same data and units; {members} differ in {differ}")
    if "comparisons" in config["datasets"]:
        problems.append("datasets.comparisons: the name is taken by results/comparisons/ (model comparisons)")
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
