"""Backward rules: how one layer maps the relevance (or gradient) at its output to its input.

A rule is a small frozen dataclass, so rules compare and hash by value: analyzers whose rules agree from
the output down to some layer share that part of the backward pass (see `lrp.attribution`). Rules read
the recorded forward pass (`lrp.graph.Trace`) and never run autograd.

Conventions (see docs/lrp_rules.md): z_ij = a_i w_ij, z_j = Σ_i z_ij + b_j. Exact zeros in denominators
are replaced by 1e-7 (iNNvestigate's `safe_divide`), so no rule produces NaN or Inf. ε-stabilisation uses
ε·sign(z) with sign(0) = +1.

LocalResponseNorm (CaffeNet's norm1/norm2): LRP passes relevance through unchanged (`Pass`, the LRP Toolbox's
lrn_backward_type 0); the gradient family uses LRN's true gradient (`LRNGradient`). The Toolbox's demonstrator
used its Taylor-type type 1 instead, so CaffeNet maps can differ from the Toolbox's at the LRN layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lrp.graph import Layer, Trace
from lrp.kernels import (  # noqa: F401 (SAFE_EPS: the convention's constant, for your own rules)
    SAFE_EPS,
    safe,
)

BIAS_MODES = ("innvestigate", "toolbox", "ignore")


class BiasConventionWarning(UserWarning):
    """α-β with iNNvestigate's bias convention on a conv/linear layer that has a BatchNorm merged into it: the
    merged bias (often large and negative) sits whole in D⁺ = z⁺ + b (docs/lrp_rules.md, "On BatchNorm nets")."""

# αβ with β ≠ 0 on a post-ReLU convolution needs T(w⁺, α s⁺) − T(w⁻, β s⁻). On these device types it is one
# transposed convolution of the stacked [α s⁺, −β s⁻] against [w⁺; w⁻] (fewer passes; a little faster on CPU),
# elsewhere two calls: on an H100 the stacked call made `lrp_cmp_alpha2` 2.20× a gradient pass against 2.07×
# (cuDNN's default algorithm for the doubled channel count; benchmarks/README.md, "CUDA: H100 with the fused
# kernels"). Same sums up to float round-off.
STACKED_PAIR_DEVICES = {"cpu"}


def safe_divide(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a / safe(b)


def linear_forward(layer: Layer, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The layer's linear map without bias, with a replaced weight (a building block for your own rules)."""
    m = layer.module
    if layer.kind == "conv":
        return F.conv2d(x, weight, None, m.stride, m.padding, m.dilation, m.groups)
    return F.linear(x, weight)


def linear_transpose(layer: Layer, in_shape, weight: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Gradient of `linear_forward` w.r.t. its input: the transposed linear map applied to `grad`."""
    m = layer.module
    if layer.kind == "conv":
        return torch.nn.grad.conv2d_input(in_shape, weight, grad, m.stride, m.padding, m.dilation, m.groups)
    return grad @ weight


def expand_bias(layer: Layer, b: torch.Tensor) -> torch.Tensor:
    """A bias (C,) shaped to broadcast against the layer's output."""
    return b.view(1, -1, 1, 1) if layer.kind == "conv" else b.view(1, -1)


class Rule:
    """Base class. `backward(layer, trace, R, ctx)` returns the relevance at the layer's input."""

    family = "lrp"  # "lrp": relevance; "gradient": a (modified) gradient signal

    def backward(self, layer: Layer, trace: Trace, R: torch.Tensor, ctx: dict) -> torch.Tensor:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------------
# Rules for weightless layers


@dataclass(frozen=True)
class Pass(Rule):
    """Relevance passes unchanged (ReLU and LRN under LRP, Dropout in eval mode)."""

    def backward(self, layer, trace, R, ctx):
        return R


@dataclass(frozen=True)
class Reshape(Rule):
    """Flatten (explicit or torchvision's implicit one): undo the re-indexing."""

    def backward(self, layer, trace, R, ctx):
        return R.reshape(trace.inputs[layer.index].shape)


@dataclass(frozen=True)
class ReLUGate(Rule):
    """The ReLU's own gradient: pass where the input was positive (and, for ReLU6, `upper` = 6, below it)."""

    upper: float | None = None
    family = "gradient"

    def backward(self, layer, trace, R, ctx):
        return R * _open_gate(trace.inputs[layer.index], self.upper)


@dataclass(frozen=True)
class GuidedReLU(Rule):
    """Guided Backprop: ReLU gradient (ReLU6's with `upper` = 6), and only positive signals pass
    (Springenberg et al.)."""

    upper: float | None = None
    family = "gradient"

    def backward(self, layer, trace, R, ctx):
        return R.clamp(min=0) * _open_gate(trace.inputs[layer.index], self.upper)


def _open_gate(x: torch.Tensor, upper: float | None) -> torch.Tensor:
    """Where the (clipped) ReLU's derivative is 1: 0 < x (< upper). At the kinks it is 0, as autograd has it."""
    gate = x > 0
    return gate if upper is None else gate & (x < upper)


@dataclass(frozen=True)
class WinnerTakesAll(Rule):
    """Max-pool: everything goes to the (first) argmax of each window, as in iNNvestigate, zennit, Caffe."""

    def backward(self, layer, trace, R, ctx):
        m = layer.module
        x = trace.inputs[layer.index]
        return torch.ops.aten.max_pool2d_with_indices_backward(
            R, x, _pair(m.kernel_size), _pair(m.stride) if m.stride else _pair(m.kernel_size),
            _pair(m.padding), _pair(m.dilation), m.ceil_mode, trace.indices[layer.index],
        )


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


@dataclass(frozen=True)
class AvgPoolGradient(Rule):
    """Average pooling, gradient family: its plain gradient (identity when the pool keeps the size)."""

    family = "gradient"

    def backward(self, layer, trace, R, ctx):
        x = trace.inputs[layer.index]
        return R if x.shape == R.shape else _pool_gradient(layer, x, R)


@dataclass(frozen=True)
class AvgPoolZ(Rule):
    """Average pooling under LRP: the z-rule (zennit's `Norm`); the identity when the pool keeps the size.

    Why the identity case matters: VGG's AdaptiveAvgPool2d(7) at 224² is the identity, and a z-rule there
    would drop relevance that a flat rule above placed on zero activations.
    """

    def backward(self, layer, trace, R, ctx):
        x = trace.inputs[layer.index]
        if x.shape == R.shape:
            return R
        return x * _pool_gradient(layer, x, safe_divide(R, trace.outputs[layer.index]))


@dataclass(frozen=True)
class LRNGradient(Rule):
    """Local response normalisation, gradient family: its true (Jacobian-transposed) gradient.

    Why not the identity here: gradient and Guided Backprop are defined by the network's own derivative;
    only LRP simplifies LRN (to `Pass`).
    """

    family = "gradient"

    def backward(self, layer, trace, R, ctx):
        return _pool_gradient(layer, trace.inputs[layer.index], R)


def _pool_gradient(layer: Layer, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """The module's transposed Jacobian applied to `grad` (autograd of the module: no extra rule code);
    used for average pools and LRN."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(layer.module(xg), xg, grad)
    return g


# ---------------------------------------------------------------------------------------------------
# Rules for Conv2d / Linear layers


@dataclass(frozen=True)
class Gradient(Rule):
    """The transposed linear map: plain gradient, or PatternAttribution when `pattern=True`.

    With `pattern=True` the weight is replaced by w ⊙ a, a = the layer's learned pattern (ctx['patterns']).
    """

    pattern: bool = False
    family = "gradient"

    def backward(self, layer, trace, R, ctx):
        w = layer.module.weight
        if self.pattern:
            w = trace.cached(("pattern_weight", layer.index), lambda: w * _pattern_for(layer, ctx, w))
        return linear_transpose(layer, trace.inputs[layer.index].shape, w, R)


def _pattern_for(layer: Layer, ctx: dict, w: torch.Tensor) -> torch.Tensor:
    patterns = ctx.get("patterns")
    if patterns is None:
        raise ValueError("pattern_attribution needs patterns: pass patterns=lrp.patterns.load(path) "
                         "(or compute them with lrp.patterns.compute)")
    if layer.name not in patterns:
        raise ValueError(f"the patterns have no entry for layer '{layer.name}' (have: {sorted(patterns)[:5]}...)")
    a = patterns[layer.name]
    if tuple(a.shape) != tuple(w.shape):
        raise ValueError(f"pattern of layer '{layer.name}' has shape {tuple(a.shape)}, weight {tuple(w.shape)}")
    return a.to(device=w.device, dtype=w.dtype)


@dataclass(frozen=True)
class Epsilon(Rule):
    """LRP-ε (ε = 0 gives LRP-z): R_i = a_i Σ_j w_ij R_j / (z_j + ε·sign(z_j)); the bias absorbs relevance."""

    epsilon: float = 0.0

    def backward(self, layer, trace, R, ctx):
        x, z = trace.inputs[layer.index], trace.outputs[layer.index]
        s = trace.kernels.eps_ratio(R, z, self.epsilon)
        return x * linear_transpose(layer, x.shape, layer.module.weight, s)


@dataclass(frozen=True)
class AlphaBeta(Rule):
    """LRP-αβ: separate decompositions of the positive and negative contributions (α − β = 1).

    `bias` selects the denominators (the one convention on which the paper's two tools differ):
    - "innvestigate": D⁺ = z⁺ + b, D⁻ = z⁻ + b (full bias in both; iNNvestigate, the paper's VGG-16 tool);
    - "toolbox":      D⁺ = z⁺ + b⁺, D⁻ = z⁻ + b⁻ (LRP Toolbox, the paper's CaffeNet tool; zennit);
    - "ignore":       D± = z± (bias-free, conservative).
    """

    alpha: float = 1.0
    beta: float = 0.0
    bias: str = "innvestigate"

    def __post_init__(self):
        if self.bias not in BIAS_MODES:
            raise ValueError(f"bias must be one of {BIAS_MODES}, got {self.bias!r}")
        if abs(self.alpha - self.beta - 1.0) > 1e-9:
            raise ValueError(f"alpha - beta must be 1 (got alpha={self.alpha}, beta={self.beta})")

    def _bias_terms(self, layer):
        """(b for z⁻ = z − b − z⁺, the bias in D⁺, the bias in D⁻); None = no term."""
        b = layer.module.bias
        if b is None:
            return None, None, None
        b = expand_bias(layer, b.detach())  # (a Parameter's requires_grad would be one more compile variant)
        if self.bias == "ignore":
            return b, None, None
        if self.bias == "innvestigate":
            return b, b, b
        return b, b.clamp(min=0), b.clamp(max=0)

    def backward(self, layer, trace, R, ctx):
        i, w = layer.index, layer.module.weight
        x = trace.inputs[i]
        wp = trace.cached(("w+", i), lambda: w.clamp(min=0))
        b, bp, bn = self._bias_terms(layer)
        if trace.nonnegative_input(i):
            # Post-ReLU input: (a w)⁺ = a w⁺ and (a w)⁻ = a w⁻. One convolution (z⁺); z⁻ = (z − b) − z⁺ comes
            # from the recorded output z instead of a second convolution.
            zp = trace.cached(("z+", i), lambda: linear_forward(layer, x, wp))
            if self.beta == 0:
                s_p = trace.kernels.ratio(R, zp, bp, self.alpha)
                return linear_transpose(layer, x.shape, wp, s_p).mul_(x)
            s = trace.kernels.ratio_pair_from_z(R, trace.outputs[i], zp, b, bp, bn, self.alpha, self.beta)
            if layer.kind == "linear" or layer.module.groups > 1 or x.device.type not in STACKED_PAIR_DEVICES:
                # (a stacked dense weight is a large copy; stacked grouped weights would mix the groups)
                c, wn = R.shape[1], trace.cached(("w-", i), lambda: w.clamp(max=0))
                g = linear_transpose(layer, x.shape, wp, s[:, :c])
                return g.add_(linear_transpose(layer, x.shape, wn, s[:, c:])).mul_(x)
            # [α s⁺, −β s⁻] against the stacked weight [w⁺; w⁻]: T(w⁺, α s⁺) − T(w⁻, β s⁻) in one call
            w_pn = trace.cached(("W+;W-", i), lambda: torch.cat([wp, w.clamp(max=0)], 0))
            return linear_transpose(layer, x.shape, w_pn, s).mul_(x)
        wn = trace.cached(("w-", i), lambda: w.clamp(max=0))
        if layer.kind == "conv" and layer.module.groups == 1:  # (a signed dense layer keeps the 4-term path:
            return self._signed_stacked(layer, trace, R, x, wp, wn, bp, bn)  # a stacked W± would be 4× its size)
        bp, bn = (0.0 if bp is None else bp), (0.0 if bn is None else bn)
        xp = trace.cached(("x+", i), lambda: x.clamp(min=0))
        xn = trace.cached(("x-", i), lambda: x.clamp(max=0))
        zpp = trace.cached(("z++", i), lambda: linear_forward(layer, xp, wp))
        znn = trace.cached(("z--", i), lambda: linear_forward(layer, xn, wn))
        s_p = safe_divide(R, zpp + znn + bp)
        T = lambda w_, s_: linear_transpose(layer, x.shape, w_, s_)  # noqa: E731
        out = self.alpha * (xp * T(wp, s_p) + xn * T(wn, s_p))
        if self.beta == 0:
            return out
        zpn = trace.cached(("z+-", i), lambda: linear_forward(layer, xp, wn))
        znp = trace.cached(("z-+", i), lambda: linear_forward(layer, xn, wp))
        s_n = safe_divide(R, zpn + znp + bn)
        return out - self.beta * (xp * T(wn, s_n) + xn * T(wp, s_n))

    def _signed_stacked(self, layer, trace, R, x, wp, wn, bp, bn):
        """Signed input (the image layer), groups = 1: the four sign combinations in stacked convolutions.

        With x± = [x⁺, x⁻] stacked on the channel axis and W± = [[w⁺, w⁻], [w⁻, w⁺]] (output blocks P, N):
        conv(x±, W±) = [x⁺w⁺ + x⁻w⁻, x⁺w⁻ + x⁻w⁺] = [z⁺, z⁻], and the transposed map of [α s⁺, −β s⁻] gives
        [G⁺, G⁻] with R = x⁺G⁺ + x⁻G⁻. Same sums as four separate convolutions, in fewer passes over memory.
        z⁺ and z⁻ are computed as two half-size convolutions (blocks P and N), so β = 0 computes only z⁺.
        """
        i, c_out, c_in = layer.index, wp.shape[0], wp.shape[1]
        xs = trace.cached(("x+-", i), lambda: torch.cat([x.clamp(min=0), x.clamp(max=0)], 1))
        ws = trace.cached(("W+-", i), lambda: torch.cat([torch.cat([wp, wn], 1), torch.cat([wn, wp], 1)], 0))
        zp = trace.cached(("z+stacked", i), lambda: linear_forward(layer, xs, ws[:c_out]))
        if self.beta == 0:
            s_p = trace.kernels.ratio(R, zp, bp, self.alpha)
            g = linear_transpose(layer, xs.shape, ws[:c_out], s_p)
        else:
            zn = trace.cached(("z-stacked", i), lambda: linear_forward(layer, xs, ws[c_out:]))
            s = trace.kernels.ratio_pair(R, zp, zn, bp, bn, self.alpha, self.beta)
            g = linear_transpose(layer, xs.shape, ws, s)
        g.mul_(xs)
        return g[:, :c_in] + g[:, c_in:]


@dataclass(frozen=True)
class Flat(Rule):
    """LRP-♭: a neuron's relevance spreads uniformly over its receptive field (all input channels).

    Zero-padded positions do not count. Independent of activations and weights (bias ignored).
    """

    def backward(self, layer, trace, R, ctx):
        x = trace.inputs[layer.index]
        m = layer.module
        if layer.kind == "linear":
            return (R.sum(1, keepdim=True) / x.shape[1]).expand_as(x).contiguous()
        if m.groups == 1:
            # All output channels share one receptive-field count; sum them first (cheap single-channel map).
            k = trace.cached(("flat_k", layer.index), lambda: torch.ones(
                (1, 1) + tuple(m.weight.shape[2:]), dtype=x.dtype, device=x.device))
            n = trace.cached(("flat_n", layer.index), lambda: x.shape[1] * F.conv2d(
                torch.ones((1, 1) + tuple(x.shape[2:]), dtype=x.dtype, device=x.device),
                k, None, m.stride, m.padding, m.dilation))
            # safe_divide: outputs whose receptive field lies wholly in the padding have n = 0 (R/0 would put
            # inf/NaN into the transposed convolution, which only col2im-style kernels happen to crop away)
            s = safe_divide(R, n).sum(1, keepdim=True)
            r = torch.nn.grad.conv2d_input((x.shape[0], 1) + tuple(x.shape[2:]), k, s, m.stride, m.padding, m.dilation)
            return r.expand_as(x).contiguous()
        ones = torch.ones_like(m.weight)
        n = F.conv2d(torch.ones_like(x[:1]), ones, None, m.stride, m.padding, m.dilation, m.groups)
        return linear_transpose(layer, x.shape, ones, safe_divide(R, n))


# ---------------------------------------------------------------------------------------------------
# Rules for graph nodes: residual sums, concatenations, stand-alone BatchNorms


@dataclass(frozen=True)
class SumZ(Rule):
    """A residual sum z = Σ_k x_k under LRP: each summand gets its share, R_k = x_k · R / z (zennit's `Norm` on
    its `Sum`; exact zeros of z replaced by 1e-7 as everywhere in this engine). Conserves R."""

    def backward(self, layer, trace, R, ctx):
        s = safe_divide(R, trace.outputs[layer.index])
        return tuple(x * s for x in trace.inputs[layer.index])


@dataclass(frozen=True)
class SumGradient(Rule):
    """A sum, gradient family: its derivative is 1 for every summand, so each gets the whole signal."""

    family = "gradient"

    def backward(self, layer, trace, R, ctx):
        return tuple(R for _ in trace.inputs[layer.index])


@dataclass(frozen=True)
class SplitConcat(Rule):
    """A concatenation, every family: each input gets its slice back (relevance and gradient alike)."""

    def backward(self, layer, trace, R, ctx):
        xs = trace.inputs[layer.index]
        return tuple(R.split([x.shape[layer.module.dim] for x in xs], dim=layer.module.dim))


@dataclass(frozen=True)
class AffineZ(Rule):
    """A stand-alone BatchNorm (y = s·x + t per channel, lrp.canonizers.ChannelAffine) under LRP: the z-rule
    of an elementwise layer, R_x = s·x · R / y. The shift t, like a bias, absorbs its share (t · R / y)."""

    def backward(self, layer, trace, R, ctx):
        x, y = trace.inputs[layer.index], trace.outputs[layer.index]
        scale = layer.module.expand(layer.module.scale, x.ndim)
        return x * scale * safe_divide(R, y)


@dataclass(frozen=True)
class AffineGradient(Rule):
    """A stand-alone BatchNorm, gradient family: its derivative, the per-channel scale s."""

    family = "gradient"

    def backward(self, layer, trace, R, ctx):
        return R * layer.module.expand(layer.module.scale, R.ndim)
