"""Analyzers: which rule each layer gets, for every method of the paper's Table 1.

An analyzer is a start signal ("logit": one-hot × logit of the target class, as iNNvestigate and the LRP
Toolbox; "one": one-hot × 1, the gradient) plus a function that picks the rule of every Conv2d/Linear
layer. Weightless layers get their family's default (LRP: ReLU and LRN pass relevance; gradient family:
ReLU gates, LRN its gradient). Register your own with `register()`; the pipeline picks it up by name
from the config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
    name: str
    start: str  # "logit" | "one" | "uniform"
    family: str  # "lrp" | "gradient" | "guided" | "none"
    kernel_rule: Callable[[Layer, int, dict], Rule] | None
    defaults: dict = field(default_factory=dict)
    doc: str = ""


REGISTRY: dict[str, Analyzer] = {}


def register(analyzer: Analyzer) -> Analyzer:
    REGISTRY[analyzer.name] = analyzer
    return analyzer


def get(name: str) -> Analyzer:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown analyzer {name!r}; known: {', '.join(REGISTRY)}") from None


def names() -> list[str]:
    return list(REGISTRY)


def resolve_options(analyzer: Analyzer, options: dict) -> dict:
    unknown = set(options) - set(DEFAULTS) - {"patterns"}
    if unknown:
        raise ValueError(f"analyzer {analyzer.name!r}: unknown option(s) {sorted(unknown)}; "
                         f"known: {sorted(DEFAULTS) + ['patterns']}")
    opts = {**DEFAULTS, **analyzer.defaults, **options}
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
            rules.append(analyzer.kernel_rule(layer, n_conv, options))
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
    register(Analyzer(_name, _start, _family, _rule, _defaults, _doc))

TABLE1 = [n for n in REGISTRY]
"""Every built-in analyzer, in the order of the paper's method list."""
