"""Analyzers: which rule each layer gets, for every method of the paper's Table 1.

An analyzer is a start signal ("logit": one-hot × logit of the target class, as iNNvestigate and the LRP
Toolbox; "one": one-hot × 1, the gradient) plus a function that picks the rule of every Conv2d/Linear
layer. Weightless layers get their family's default (LRP: ReLU and LRN pass relevance; gradient family:
ReLU gates, LRN its gradient).

Your own methods: `register()` an `Analyzer` built from rules (lrp.rules, or your own `Rule` subclass), or
`register_function()` any function (model, inputs, targets, **options) -> relevance, e.g. Integrated
Gradients. The pipeline loads the files or modules listed under `plugins:` in the config before it reads
`analyzers:` (docs/plugins.md; example: examples/my_analyzers.py).
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .graph import Layer
from .rules import (AlphaBeta, AvgPoolGradient, AvgPoolZ, Epsilon, Flat, Gradient, GuidedReLU, LRNGradient,
                    Pass, ReLUGate, Reshape, Rule, WinnerTakesAll)

DEFAULTS = {"epsilon": 0.1, "bias": "innvestigate", "flat_layers": 1}
"""Options shared by all analyzers unless set per analyzer. ε = 0.1 on the dense layers of the LRP_CMP
presets and bias = "innvestigate" follow iNNvestigate (the paper's VGG-16 tool); the PVOC study uses
bias = "toolbox". `lrp_epsilon` alone defaults to ε = 1e-7, iNNvestigate's `lrp.epsilon` default, with
which the paper found LRP_ε identical to LRP_z."""


@dataclass(frozen=True)
class Analyzer:
    """`start`: "logit" | "one" | "uniform" | "function"; `family`: "lrp" | "gradient" | "guided" | "none" |
    "function". A "function" analyzer computes its map with `function(model, inputs, targets, **options)`
    and takes exactly the options named in `defaults`; the others share the engine's forward pass and take
    epsilon, bias, flat_layers (and their own `defaults`). `label` is the name in tables and figures;
    `source` is the file whose code registered it ('' for the built-ins; set by `register`)."""

    name: str
    start: str
    family: str
    kernel_rule: Callable[[Layer, int, dict], Rule] | None
    defaults: dict = field(default_factory=dict)
    doc: str = ""
    label: str = ""
    function: Callable | None = None
    source: str = ""


REGISTRY: dict[str, Analyzer] = {}
STARTS = ("logit", "one", "uniform")
FAMILIES = ("lrp", "gradient", "guided", "none")
BUILTIN: list[str] = []  # filled below: the names of the paper's methods
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
"""Analyzer names that can be config keys, {analyzer} wildcards and HDF5 dataset names."""


def register(analyzer: Analyzer, replace: bool = False) -> Analyzer:
    """Add an analyzer to the registry, recording the file whose code calls this as its `source`.

    A different analyzer of the same name is an error unless `replace`, or unless the same file registered
    the old one (a re-import or `importlib.reload` of a plugin). Why refuse: a plugin that silently
    redefined `lrp_cmp_alpha1` would change the paper's rows."""
    return _add(dataclasses.replace(analyzer, source=_caller_file()), replace)


def _add(analyzer: Analyzer, replace: bool = False) -> Analyzer:
    old = REGISTRY.get(analyzer.name)
    if old is not None and old != analyzer and not replace and not (old.source and old.source == analyzer.source):
        origin = (f"registered by {old.source}" if old.source else
                  "built in" if analyzer.name in BUILTIN else "registered earlier")
        raise ValueError(f"analyzer {analyzer.name!r} exists already ({origin}); pick another name (or pass "
                         f"replace=True to redefine it in your own process)")
    if analyzer.function is not None:
        if (analyzer.start, analyzer.family) != ("function", "function"):
            raise ValueError(f"analyzer {analyzer.name!r}: a function analyzer has start = family = 'function'")
    else:
        if analyzer.start not in STARTS or analyzer.family not in FAMILIES:
            raise ValueError(f"analyzer {analyzer.name!r}: start must be one of {STARTS} (got {analyzer.start!r}) "
                             f"and family one of {FAMILIES} (got {analyzer.family!r})")
        if analyzer.start != "uniform" and analyzer.kernel_rule is None:
            raise ValueError(f"analyzer {analyzer.name!r} needs a kernel_rule (or use register_function)")
        if analyzer.start != "uniform" and analyzer.family == "none":
            raise ValueError(f"analyzer {analyzer.name!r}: family 'none' is for the uniform baseline only")
    REGISTRY[analyzer.name] = analyzer
    return analyzer


def _caller_file() -> str:
    """The resolved path of the first file on the call stack outside this module ('' if none, e.g. a
    notebook cell): the plugin that registers an analyzer."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back
    name = frame.f_code.co_filename if frame is not None else ""
    if not name or name.startswith("<") or not Path(name).is_file():
        return ""
    return str(Path(name).resolve())


def register_function(name: str, function: Callable, defaults: dict | None = None, label: str = "",
                      doc: str = "") -> Analyzer:
    """Register `function(model, inputs, targets, **options) -> Tensor shaped like inputs` as an analyzer.

    `defaults` names every option it takes, with its default (checked against the function's signature);
    the config may override them. The function runs with autograd enabled and gets the model as loaded
    (eval mode, parameters frozen); it must not modify the model or the inputs."""
    if not callable(function):
        raise ValueError(f"analyzer {name!r}: function must be callable, got {type(function).__name__}")
    defaults = dict(defaults or {})
    try:
        inspect.signature(function).bind(None, None, None, **defaults)
    except TypeError as e:
        raise ValueError(f"analyzer {name!r}: {getattr(function, '__name__', 'the function')} cannot be called as "
                         f"(model, inputs, targets, **{defaults}): {e}") from None
    except ValueError:  # no signature available (a builtin): checked when it runs
        pass
    doc = doc or (function.__doc__ or "").strip()
    analyzer = Analyzer(name, "function", "function", None, defaults, doc, label=label, function=function)
    return _add(dataclasses.replace(analyzer, source=_caller_file()))


def get(name: str) -> Analyzer:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown analyzer {name!r}; known: {', '.join(REGISTRY)}") from None


def names() -> list[str]:
    return list(REGISTRY)


def label(name: str) -> str:
    """Display label of a registered analyzer (its name if it has none; the built-ins' paper labels are in
    lrp/data/analyzer_names.csv, see lrp.table.analyzer_names)."""
    a = get(name)
    return a.label or a.name


def option_names(analyzer: Analyzer) -> set[str]:
    """The options an analyzer takes."""
    if analyzer.function is not None:
        return set(analyzer.defaults)
    return set(DEFAULTS) | set(analyzer.defaults) | {"patterns"}


def resolve_options(analyzer: Analyzer, options: dict, shared: dict | None = None) -> dict:
    """The analyzer's defaults, then `shared` options (set for every analyzer: only those it takes apply),
    then its own `options` (an option it does not take is an error)."""
    known = option_names(analyzer)
    unknown = set(options) - known
    if unknown:
        raise ValueError(f"analyzer {analyzer.name!r}: unknown option(s) {sorted(unknown)}; "
                         f"known: {sorted(known) or 'none'}")
    shared = {k: v for k, v in (shared or {}).items() if k in known}
    if analyzer.function is not None:
        return {**analyzer.defaults, **shared, **options}
    opts = {**DEFAULTS, **analyzer.defaults, **shared, **options}
    if opts["epsilon"] < 0:
        raise ValueError(f"analyzer {analyzer.name!r}: epsilon must be ≥ 0, got {opts['epsilon']}")
    if int(opts["flat_layers"]) != opts["flat_layers"] or opts["flat_layers"] < 0:
        raise ValueError(f"analyzer {analyzer.name!r}: flat_layers must be an integer ≥ 0")
    return opts


def plan(analyzer: Analyzer, layers: list[Layer], options: dict) -> list[Rule]:
    """The rule of every layer (index-aligned with `layers`)."""
    n_conv = sum(layer.kind == "conv" for layer in layers)
    rules: list[Rule] = []
    for layer in layers:
        if layer.kind in ("conv", "linear"):
            rules.append(_checked(analyzer, layer, analyzer.kernel_rule(layer, n_conv, options)))
        elif layer.kind == "relu":
            rules.append({"lrp": Pass(), "gradient": ReLUGate(), "guided": GuidedReLU()}[analyzer.family])
        elif layer.kind == "maxpool":
            rules.append(WinnerTakesAll())
        elif layer.kind == "avgpool":
            rules.append(AvgPoolZ() if analyzer.family == "lrp" else AvgPoolGradient())
        elif layer.kind == "flatten":
            rules.append(Reshape())
        elif layer.kind == "lrn":  # LRP: identity (LRP Toolbox lrn_backward_type 0); others: true gradient
            rules.append(Pass() if analyzer.family == "lrp" else LRNGradient())
        else:
            rules.append(Pass())
    return rules


def _checked(analyzer: Analyzer, layer: Layer, rule) -> Rule:
    """A kernel rule must be a hashable `Rule`: analyzers share the backward steps on which their rules are
    equal, so rules are compared and hashed (declare them `@dataclass(frozen=True)`)."""
    if not isinstance(rule, Rule):
        raise ValueError(f"analyzer {analyzer.name!r} gives layer {layer.name!r} a {type(rule).__name__}, "
                         f"not an lrp.rules.Rule")
    try:
        hash(rule)
    except TypeError:
        raise ValueError(f"analyzer {analyzer.name!r}: rule {type(rule).__name__} is not hashable; declare it "
                         f"@dataclass(frozen=True)") from None
    return rule


def _uniform(rule_fn):
    return lambda layer, n_conv, o: rule_fn(o)


def _cmp(alpha: float, flat: bool):
    """LRP_CMP: ε on every Linear (incl. the output), αβ on every conv, optionally ♭ on the first convs."""

    def rule(layer, n_conv, o):
        if layer.kind == "linear":
            return Epsilon(o["epsilon"])
        if flat and layer.conv_index < o["flat_layers"]:
            return Flat()
        return AlphaBeta(alpha, alpha - 1.0, o["bias"])

    return rule


def _cam(layer, n_conv, o):
    return Epsilon(0.0) if layer.kind == "linear" else Flat()


for _name, _start, _family, _rule, _defaults, _doc in [
    ("lrp_z", "logit", "lrp", _uniform(lambda o: Epsilon(0.0)), {}, "LRP-z on every layer (= gradient × input)"),
    ("lrp_epsilon", "logit", "lrp", _uniform(lambda o: Epsilon(o["epsilon"])), {"epsilon": 1e-7},
     "LRP-ε on every layer"),
    ("lrp_alpha1", "logit", "lrp", _uniform(lambda o: AlphaBeta(1.0, 0.0, o["bias"])), {}, "LRP-α1β0 on every layer"),
    ("lrp_alpha2", "logit", "lrp", _uniform(lambda o: AlphaBeta(2.0, 1.0, o["bias"])), {}, "LRP-α2β1 on every layer"),
    ("lrp_cmp_alpha1", "logit", "lrp", _cmp(1.0, False), {}, "LRP_CMP:α1 (ε dense, α1β0 conv)"),
    ("lrp_cmp_alpha2", "logit", "lrp", _cmp(2.0, False), {}, "LRP_CMP:α2 (ε dense, α2β1 conv)"),
    ("lrp_cmp_alpha1_flat", "logit", "lrp", _cmp(1.0, True), {}, "LRP_CMP:α1+♭ (♭ on the first flat_layers convs)"),
    ("lrp_cmp_alpha2_flat", "logit", "lrp", _cmp(2.0, True), {}, "LRP_CMP:α2+♭ (♭ on the first flat_layers convs)"),
    ("lrp_cam", "logit", "lrp", _cam, {}, "LRP_CAM (z dense, ♭ on every conv)"),
    ("guided_backprop", "logit", "guided", _uniform(lambda o: Gradient()), {},
     "Guided Backprop, started at the logit as in iNNvestigate"),
    ("pattern_attribution", "logit", "gradient", _uniform(lambda o: Gradient(pattern=True)), {},
     "PatternAttribution (patterns of type 'relu', iNNvestigate 1.x)"),
    ("gradient", "one", "gradient", _uniform(lambda o: Gradient()), {}, "plain gradient of the target logit"),
    ("baseline", "uniform", "none", None, {}, "uniform attribution (every pixel equally relevant)"),
]:
    _add(Analyzer(_name, _start, _family, _rule, _defaults, _doc))  # built in: no source

TABLE1 = [n for n in REGISTRY]
"""Every built-in analyzer, in the order of the paper's method list."""
BUILTIN.extend(TABLE1)
