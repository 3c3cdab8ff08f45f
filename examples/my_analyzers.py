"""Two analyzers added the way a user adds their own: a new LRP rule, and a method that is a function.

List this file (or its module name, `examples.my_analyzers`) under `plugins:` in the config, then use the
names under `analyzers:`. The CI config does (config/ci.yaml); tests/engine/test_plugins.py checks LRP-γ against
zennit's and Integrated Gradients against its completeness property. Guide: docs/plugins.md.
"""

from dataclasses import dataclass

import torch

import lrp
from lrp.composites import Analyzer
from lrp.rules import Epsilon, Flat, expand_bias, linear_forward, linear_transpose


@dataclass(frozen=True)  # frozen: rules compare by value, so analyzers that agree share work
class Gamma(lrp.Rule):
    """LRP-γ (Montavon et al. 2019): w → w + γw⁺ and b → b + γb⁺ favour the positive contributions.

    z_j = Σ_i a_i (w_ij + γw⁺_ij) + b_j + γb⁺_j, R_i = a_i Σ_j (w_ij + γw⁺_ij) R_j / (z_j + ε·sign(z_j)).
    Montavon's rule is for non-negative inputs (after a ReLU); the image layer needs another rule.
    """

    gamma: float = 0.25
    epsilon: float = 1e-6

    def backward(self, layer, trace, R, ctx):
        i, x = layer.index, trace.inputs[layer.index]
        if not trace.nonnegative_input(i):
            raise ValueError(f"LRP-γ needs a non-negative input, but layer {layer.name!r} gets negative values "
                             f"(the image?): give that layer another rule, e.g. flat_layers ≥ 1")
        w, b = layer.module.weight, layer.module.bias
        wg = trace.cached(("gamma_w", i, self.gamma), lambda: w + self.gamma * w.clamp(min=0))
        z = linear_forward(layer, x, wg)
        if b is not None:
            z = z + expand_bias(layer, b + self.gamma * b.clamp(min=0))
        s = R / (z + self.epsilon * torch.where(z >= 0, 1.0, -1.0))
        return x * linear_transpose(layer, x.shape, wg, s)


def lrp_cmp_gamma_flat(layer, n_conv, options):
    """The rule of each Conv2d / Linear layer: ε on dense layers, ♭ on the first convs, γ on the others."""
    if layer.kind == "linear":
        return Epsilon(options["epsilon"])
    if layer.conv_index < options["flat_layers"]:
        return Flat()
    return Gamma(options["gamma"])


lrp.register(Analyzer("lrp_cmp_gamma_flat", start="logit", family="lrp", kernel_rule=lrp_cmp_gamma_flat,
                      defaults={"gamma": 0.25}, label="LRP_CMP:γ+♭",
                      doc="ε (0.1) on dense layers, LRP-γ on convs, ♭ on the first flat_layers convs (default 1)"))


def integrated_gradients(model, inputs, targets, steps=32):
    """Integrated Gradients (Sundararajan et al. 2017) from the all-zero model input (after preprocessing:
    the mean image): x times the mean gradient of the target logit along the straight path from 0 to x,
    by the midpoint rule with `steps` points."""
    if int(steps) != steps or steps < 1:
        raise ValueError(f"integrated_gradients: steps must be an integer ≥ 1, got {steps!r}")
    total = torch.zeros_like(inputs)
    for k in range(int(steps)):
        point = ((k + 0.5) / steps * inputs).requires_grad_(True)
        logit = model(point).gather(1, targets[:, None]).sum()
        total += torch.autograd.grad(logit, point)[0]
    return inputs * total / steps


lrp.register_function("integrated_gradients", integrated_gradients, defaults={"steps": 32}, label="IG")
