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
import math
import numbers
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from lrp.graph import Layer
from lrp.rules import (
    BIAS_MODES,
    AffineGradient,
    AffineZ,
    AlphaBeta,
    AvgPoolGradient,
    AvgPoolZ,
    Epsilon,
    Flat,
    Gradient,
    GuidedReLU,
    LRNGradient,
    Pass,
    ReLUGate,
    Reshape,
    Rule,
    SplitConcat,
    SumGradient,
    SumZ,
    WinnerTakesAll,
)

DEFAULTS = {"epsilon": 0.1, "bias": "innvestigate", "flat_layers": 1}
"""Defaults of the engine options, for the analyzers that take them (`option_names`). ε = 0.1 on the dense
layers of the LRP_CMP presets and bias = "innvestigate" follow iNNvestigate (the paper's VGG-16 tool); the PVOC
study uses bias = "toolbox". `lrp_epsilon` alone defaults to ε = 1e-7, iNNvestigate's `lrp.epsilon` default,
with which the paper found LRP_ε identical to LRP_z."""

ENGINE_OPTIONS = ("epsilon", "bias", "flat_layers", "patterns")
"""Options a rule-based analyzer may take; each built-in names its own (`Analyzer.options`)."""
MODEL_OPTIONS = ("bias",)
"""Conventions of the model rather than of the method: every rule-based analyzer takes them, so that one setting
(the config's `models.<m>.bias`, a benchmark's bias="toolbox") serves all of a model's analyzers; only the αβ
rules read the bias."""


@dataclass(frozen=True)
class Analyzer:
    """`start`: "logit" | "one" | "uniform" | "function"; `family`: "lrp" | "gradient" | "guided" | "none" |
    "function". A "function" analyzer computes its map with `function(model, inputs, targets, **options)`
    and takes exactly the options named in `defaults`; the others share the engine's forward pass and take
    bias, their own `defaults` and the ENGINE_OPTIONS named in `options` (None: all of them, as a plugin's
    kernel_rule may read any). `label` is the name in tables and figures; `source` is the file whose code
    registered it ('' for the built-ins; set by `register`)."""

    name: str
    start: str
    family: str
    kernel_rule: Callable[[Layer, int, dict], Rule] | None
    defaults: dict = field(default_factory=dict)
    doc: str = ""
    label: str = ""
    function: Callable | None = None
    source: str = ""
    options: tuple[str, ...] | None = None
    paper_name: str = ""


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
    _check_declared_options(analyzer)
    REGISTRY[analyzer.name] = analyzer
    return analyzer


def _check_declared_options(analyzer: Analyzer) -> None:
    """`options` names engine options of a rule-based analyzer (its own go in `defaults`); raises ValueError."""
    if analyzer.options is None:
        return
    if analyzer.function is not None:
        raise ValueError(f"analyzer {analyzer.name!r}: a function analyzer takes the options its defaults name; "
                         f"leave `options` unset")
    if isinstance(analyzer.options, str) or not set(analyzer.options) <= set(ENGINE_OPTIONS):
        raise ValueError(f"analyzer {analyzer.name!r}: options must be a tuple of engine options, of "
                         f"{', '.join(ENGINE_OPTIONS)} (got {analyzer.options!r}); declare your own in defaults")


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
    """Display label of a registered analyzer (its name if it has none)."""
    a = get(name)
    return a.label or a.name


def analyzers() -> dict[str, str]:
    """{name: label} of every registered analyzer, the built-ins first in the paper's order, then plugins'."""
    return {name: a.label or name for name, a in REGISTRY.items()}


def option_names(analyzer: Analyzer) -> set[str]:
    """The options an analyzer takes: a function analyzer those its `defaults` name; a rule-based one the
    model's conventions (bias), its `options` (all ENGINE_OPTIONS where None) and its `defaults`."""
    if analyzer.function is not None:
        return set(analyzer.defaults)
    own = ENGINE_OPTIONS if analyzer.options is None else analyzer.options
    return set(MODEL_OPTIONS) | set(own) | set(analyzer.defaults)


def check_options(name: str, options: Mapping | None = None) -> None:
    """Refuse, before any model is loaded, what analyzer `name` cannot take: an unknown analyzer or option, or
    a value no model accepts (epsilon < 0, a bias convention that does not exist, a fractional flat_layers).
    For the config check. flat_layers' upper bound, the model's number of convolutions, is checked when the
    model runs (`check_against_model`). Raises ValueError naming the analyzer, the option and what it takes."""
    if options is not None and not isinstance(options, Mapping):
        raise ValueError(f"analyzer {name!r}: options must be a mapping of option names to values, got "
                         f"{type(options).__name__} {options!r}")
    resolve_options(get(name), dict(options or {}))


def resolve_options(analyzer: Analyzer, options: dict, shared: dict | None = None) -> dict:
    """The analyzer's defaults, then `shared` options (set for every analyzer: only those it takes apply),
    then its own `options`. Raises ValueError for an option it does not take, or a bad value."""
    known = option_names(analyzer)
    unknown = set(options) - known
    if unknown:
        raise ValueError(f"analyzer {analyzer.name!r}: unknown option(s) {sorted(unknown)}; it takes: "
                         f"{', '.join(sorted(known)) or 'none'}")
    shared = {k: v for k, v in (shared or {}).items() if k in known}
    if analyzer.function is not None:  # its function checks its own values
        return {**analyzer.defaults, **shared, **options}
    opts = {**DEFAULTS, **analyzer.defaults, **shared, **options}
    for key, check in _VALUE_CHECKS.items():
        if key in opts:
            check(analyzer.name, opts[key])
    return opts


def check_against_model(name: str, given: Mapping, layers: list[Layer]) -> None:
    """Options that only the model can judge, for those the caller set (`given`): ♭ on more convolutions than
    the model has means nothing. The default flat_layers (1) is not checked: on a model without convolutions
    it is simply unused. Raises ValueError."""
    n_conv = sum(layer.kind == "conv" for layer in layers)
    n = given.get("flat_layers")
    if n is not None and n > n_conv:
        raise ValueError(f"analyzer {name!r}: flat_layers = {n!r}, but the model has {n_conv} convolution(s); "
                         f"give 0 ≤ flat_layers ≤ {n_conv} (♭ on that many of the first convolutions)")


def _check_epsilon(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"analyzer {name!r}: epsilon must be a finite number ≥ 0, got {value!r}")


def _check_bias(name: str, value) -> None:
    if not isinstance(value, str) or value not in BIAS_MODES:
        raise ValueError(f"analyzer {name!r}: bias must be one of {', '.join(BIAS_MODES)}, got {value!r}")


def _check_flat_layers(name: str, value) -> None:
    whole = isinstance(value, numbers.Integral) or (isinstance(value, numbers.Real) and math.isfinite(value)
                                                    and int(value) == value)
    if isinstance(value, bool) or not whole or value < 0:
        raise ValueError(f"analyzer {name!r}: flat_layers must be a whole number ≥ 0 (♭ on that many of the "
                         f"first convolutions; 0: none), got {value!r}")


def _check_patterns(name: str, value) -> None:
    if value is not None and not isinstance(value, Mapping):
        raise ValueError(f"analyzer {name!r}: patterns must be a {{layer name: tensor}} mapping "
                         f"(lrp.patterns.load or lrp.patterns.compute), got {type(value).__name__}")


_VALUE_CHECKS = {"epsilon": _check_epsilon, "bias": _check_bias, "flat_layers": _check_flat_layers,
                 "patterns": _check_patterns}


def plan(analyzer: Analyzer, layers: list[Layer], options: dict) -> list[Rule]:
    """The rule of every layer (index-aligned with `layers`)."""
    n_conv = sum(layer.kind == "conv" for layer in layers)
    rules: list[Rule] = []
    for layer in layers:
        if layer.kind in ("conv", "linear"):
            rules.append(_checked(analyzer, layer, analyzer.kernel_rule(layer, n_conv, options)))
        elif layer.kind in ("relu", "relu6"):  # LRP: ReLU6 passes relevance as ReLU does
            upper = 6.0 if layer.kind == "relu6" else None
            rules.append({"lrp": Pass(), "gradient": ReLUGate(upper), "guided": GuidedReLU(upper)}[analyzer.family])
        elif layer.kind == "maxpool":
            rules.append(WinnerTakesAll())
        elif layer.kind == "avgpool":
            rules.append(AvgPoolZ() if analyzer.family == "lrp" else AvgPoolGradient())
        elif layer.kind in ("flatten", "reshape"):
            rules.append(Reshape())
        elif layer.kind == "add":
            rules.append(SumZ() if analyzer.family == "lrp" else SumGradient())
        elif layer.kind == "cat":
            rules.append(SplitConcat())
        elif layer.kind == "batchnorm":  # one that no conv/linear layer absorbed (lrp.canonizers)
            rules.append(AffineZ() if analyzer.family == "lrp" else AffineGradient())
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


_LABELS = {  # name -> (label in tables and figures, the paper's name for it: the key of its Table 1 row)
    "lrp_z": ("LRP_z", "LRP_z"),
    "lrp_epsilon": ("LRP_ε", ""),
    "lrp_alpha1": ("LRP_α1", "LRP_a1"),
    "lrp_alpha2": ("LRP_α2", "LRP_a2"),
    "lrp_cmp_alpha1": ("LRP_CMP:α1", "LRP_CMP:a1"),
    "lrp_cmp_alpha2": ("LRP_CMP:α2", "LRP_CMP:a2"),
    "lrp_cmp_alpha1_flat": ("LRP_CMP:α1+♭", "LRP_CMP:a1+b"),
    "lrp_cmp_alpha2_flat": ("LRP_CMP:α2+♭", "LRP_CMP:a2+b"),
    "lrp_cam": ("LRP_CAM", ""),
    "guided_backprop": ("GB", "GB"),
    "pattern_attribution": ("PA", "PA"),
    "gradient": ("Gradient", ""),
    "baseline": ("Baseline (uniform)", "Baseline"),
}
_EPS, _EPS_FLAT = ("epsilon",), ("epsilon", "flat_layers")  # the options each built-in takes, besides bias
for _name, _start, _family, _rule, _defaults, _options, _doc in [
    ("lrp_z", "logit", "lrp", _uniform(lambda o: Epsilon(0.0)), {}, (), "LRP-z on every layer (= gradient × input)"),
    ("lrp_epsilon", "logit", "lrp", _uniform(lambda o: Epsilon(o["epsilon"])), {"epsilon": 1e-7}, _EPS,
     "LRP-ε on every layer"),
    ("lrp_alpha1", "logit", "lrp", _uniform(lambda o: AlphaBeta(1.0, 0.0, o["bias"])), {}, (),
     "LRP-α1β0 on every layer"),
    ("lrp_alpha2", "logit", "lrp", _uniform(lambda o: AlphaBeta(2.0, 1.0, o["bias"])), {}, (),
     "LRP-α2β1 on every layer"),
    ("lrp_cmp_alpha1", "logit", "lrp", _cmp(1.0, False), {}, _EPS, "LRP_CMP:α1 (ε dense, α1β0 conv)"),
    ("lrp_cmp_alpha2", "logit", "lrp", _cmp(2.0, False), {}, _EPS, "LRP_CMP:α2 (ε dense, α2β1 conv)"),
    ("lrp_cmp_alpha1_flat", "logit", "lrp", _cmp(1.0, True), {}, _EPS_FLAT,
     "LRP_CMP:α1+♭ (♭ on the first flat_layers convs)"),
    ("lrp_cmp_alpha2_flat", "logit", "lrp", _cmp(2.0, True), {}, _EPS_FLAT,
     "LRP_CMP:α2+♭ (♭ on the first flat_layers convs)"),
    ("lrp_cam", "logit", "lrp", _cam, {}, (), "LRP_CAM (z dense, ♭ on every conv)"),
    ("guided_backprop", "logit", "guided", _uniform(lambda o: Gradient()), {}, (),
     "Guided Backprop, started at the logit as in iNNvestigate"),
    ("pattern_attribution", "logit", "gradient", _uniform(lambda o: Gradient(pattern=True)), {}, ("patterns",),
     "PatternAttribution (patterns of type 'relu', iNNvestigate 1.x)"),
    ("gradient", "one", "gradient", _uniform(lambda o: Gradient()), {}, (), "plain gradient of the target logit"),
    ("baseline", "uniform", "none", None, {}, (), "uniform attribution (every pixel equally relevant)"),
]:
    _label, _paper = _LABELS[_name]
    _add(Analyzer(_name, _start, _family, _rule, _defaults, _doc, label=_label, function=None, options=_options,
                  paper_name=_paper))  # built in: no source

TABLE1 = [n for n in REGISTRY]
"""Every built-in analyzer, in the order of the paper's method list."""
BUILTIN.extend(TABLE1)
