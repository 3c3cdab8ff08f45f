"""Properties and edge cases of the LRP engine: identities LRP must satisfy, layer configurations the
torchvision models do not cover, and the errors users get for models and options the engine cannot explain.

References used, and why:
- autograd: LRP-z is gradient × input on ReLU nets, even with biases, max-pools and average pools. Under
  z, every R_j equals a_j·∂f/∂a_j, so R_j/z_j is the gradient.
- zennit 0.5.1, with our stabiliser (exact zeros become 1e-7), in float64: an independent hook-based
  implementation (see test_engine_zennit.py).
- an explicit per-neuron loop over the unfolded receptive fields: for z, αβ (all three bias conventions)
  and ♭ on strided, padded, dilated and grouped convolutions. It does not use conv_transpose, so it shares
  no code path with the engine.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from zennit import composites as zc
from zennit import rules as zr

import lrp
from lrp import composites
from lrp.graph import UnsupportedModelError, forward_trace, layers_of
from lrp.rules import AlphaBeta, Epsilon, Flat

from test_engine_zennit import STAB, _base, _layer_map, _onehot, assert_close_per_sample, zennit_attribution

D64 = torch.float64
ALL = list(composites.TABLE1)  # the 13 built-ins (other test modules register extra analyzers)


@pytest.fixture
def flat_all():
    """A temporary analyzer with ♭ on every Conv2d/Linear (removed afterwards: the registry is global)."""
    composites.register(composites.Analyzer("prop_flat_all", "logit", "lrp", lambda layer, n, o: Flat()))
    yield "prop_flat_all"
    composites.REGISTRY.pop("prop_flat_all", None)


# ---------------------------------------------------------------------------------------------------
# small models (seeded, random non-zero biases)


def _init(model: nn.Module, seed: int = 0, bias: bool = True, dtype=D64) -> nn.Module:
    torch.manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.normal_(0.0, (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.normal_(0.0, 0.1) if bias else m.bias.zero_()
    return model.to(dtype).eval().requires_grad_(False)


def vgg_like(bias=True, dtype=D64, avgpool=None):
    """3×3 convs, 2×2 max-pools, optional (adaptive) average pool, two dense layers with Dropout."""
    layers = [
        nn.Conv2d(3, 8, 3, padding=1, bias=bias), nn.ReLU(inplace=True),
        nn.Conv2d(8, 8, 3, padding=1, bias=bias), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1, bias=bias), nn.ReLU(inplace=True), nn.MaxPool2d(2),
    ]
    if avgpool is not None:
        layers.append(avgpool)
    layers += [nn.Flatten(), nn.LazyLinear(32, bias=bias), nn.ReLU(inplace=True), nn.Dropout(0.5),
               nn.Linear(32, 10, bias=bias)]
    return nn.Sequential(*layers)


def alexnet_like():
    """CaffeNet-style: 11×11 stride 4 conv, overlapping 3×3/2 ceil-mode max-pools, grouped convs (groups=2)."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 11, stride=4, padding=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, ceil_mode=True),
        nn.Conv2d(16, 32, 5, padding=2, groups=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, ceil_mode=True),
        nn.Conv2d(32, 24, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(24, 24, 3, padding=1, groups=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, ceil_mode=True),
        nn.Flatten(), nn.LazyLinear(32), nn.ReLU(inplace=True), nn.Dropout(), nn.Linear(32, 6),
    )


def _materialise(model, x, seed=0, bias=True):
    """Run once in float32 to size the LazyLinear layers, then initialise and cast."""
    with torch.no_grad():
        model(x.float())
    return _init(model, seed=seed, bias=bias, dtype=x.dtype)


def _data(shape, seed=1, dtype=D64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=dtype)


def _targets(model, x):
    """Argmax for even samples, the lowest (negative) logit for odd ones."""
    with torch.no_grad():
        out = model(x)
    t = out.argmax(1)
    t[1::2] = out[1::2].argmin(1)
    return t


def _patterns(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {name: torch.rand(m.weight.shape, generator=g, dtype=m.weight.dtype)
            for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def _grad_x_input(model, x, t):
    x = x.clone().requires_grad_(True)
    out = model(x)
    (g,) = torch.autograd.grad(out, x, _onehot(out, t))
    return g * x.detach()


# ---------------------------------------------------------------------------------------------------
# identities


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("arch", ["vgg_like", "vgg_like_avgpool", "alexnet_like"])
def test_lrp_z_is_gradient_times_input(arch, dtype, tol):
    if arch == "alexnet_like":
        model, x = alexnet_like(), _data((3, 3, 67, 83), dtype=dtype)  # non-square
    else:
        pool = nn.AdaptiveAvgPool2d((3, 5)) if arch == "vgg_like_avgpool" else None  # non-identity
        model, x = vgg_like(avgpool=pool), _data((3, 3, 16, 20), dtype=dtype)
    model = _materialise(model, x)
    t = _targets(model, x)
    assert_close_per_sample(lrp.attribute(model, x, t, "lrp_z"), _grad_x_input(model, x, t), tol=tol)


def _assert_conserves(R, model, x, t, rtol=1e-10):
    with torch.no_grad():
        logit = model(x).gather(1, t[:, None]).squeeze(1)
    sums = R.flatten(1).sum(1)
    assert torch.allclose(sums, logit, rtol=rtol, atol=rtol * float(logit.abs().max())), (sums, logit)


@pytest.mark.parametrize("bias", [True, False])
def test_flat_everywhere_conserves(bias, flat_all):
    """♭ ignores activations and bias, so every layer conserves, max-pool winner-take-all included. The
    identity AdaptiveAvgPool2d passes relevance through. A non-identity average pool under the z-rule would
    drop the relevance that ♭ put on zero activations."""
    model = vgg_like(avgpool=nn.AdaptiveAvgPool2d((4, 5)))
    x = _data((4, 3, 16, 20))
    model = _materialise(model, x, bias=bias)
    t = _targets(model, x)
    _assert_conserves(lrp.attribute(model, x, t, flat_all), model, x, t)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("analyzer", ["lrp_alpha1", "lrp_alpha2"])
def test_alphabeta_ignore_bias_conserves(analyzer, bias):
    """αβ with bias="ignore" on a ReLU net: each layer redistributes α·R − β·R = R, provided that every
    neuron carrying relevance has non-zero denominators (true for these random weights)."""
    model, x = alexnet_like(), _data((4, 3, 67, 67))
    model = _materialise(model, x, bias=bias)
    t = _targets(model, x)
    _assert_conserves(lrp.attribute(model, x, t, analyzer, bias="ignore"), model, x, t)
    if bias:  # with the bias in the denominators, relevance is absorbed: the check above can fail
        R = lrp.attribute(model, x, t, analyzer, bias="toolbox")
        with pytest.raises(AssertionError):
            _assert_conserves(R, model, x, t)


def test_lrp_z_with_bias_does_not_conserve():
    model, x = vgg_like(), _data((2, 3, 16, 16))
    model = _materialise(model, x)
    t = _targets(model, x)
    with pytest.raises(AssertionError):
        _assert_conserves(lrp.attribute(model, x, t, "lrp_z"), model, x, t, rtol=1e-6)


# ---------------------------------------------------------------------------------------------------
# single conv layers against an explicit per-neuron loop


def safe(d):
    """Exact zeros (e.g. a receptive field of zeros after a ReLU) -> 1e-7, as iNNvestigate's safe_divide."""
    return torch.where(d == 0, torch.full_like(d, 1e-7), d)


def explicit_conv_relevance(conv: nn.Conv2d, x: torch.Tensor, R: torch.Tensor, rule: str,
                            alpha=1.0, beta=0.0, bias="toolbox"):
    """R at the input of `conv`, computed neuron by neuron over unfolded receptive fields (no conv_transpose)."""
    kh, kw = conv.kernel_size
    args = dict(kernel_size=(kh, kw), dilation=conv.dilation, padding=conv.padding, stride=conv.stride)
    cols = F.unfold(x, **args)  # (N, C·kh·kw, L)
    valid = F.unfold(torch.ones_like(x[:1]), **args)  # 1 on image pixels, 0 on zero padding
    N, L = x.shape[0], cols.shape[2]
    n_out, fan_in = conv.weight.shape[0], conv.weight[0].numel()
    G = conv.groups
    Og = n_out // G
    R = R.reshape(N, n_out, L)
    out = torch.zeros_like(cols)
    b = conv.bias if conv.bias is not None else torch.zeros(n_out, dtype=x.dtype)
    for o in range(n_out):
        g = o // Og
        xs, vs = cols[:, g * fan_in:(g + 1) * fan_in], valid[:, g * fan_in:(g + 1) * fan_in]
        zij = xs * conv.weight[o].reshape(1, fan_in, 1)  # (N, fan_in, L)
        Rj = R[:, o:o + 1]
        if rule == "z":
            c = zij / safe(zij.sum(1, keepdim=True) + b[o]) * Rj
        elif rule == "flat":
            c = vs / vs.sum(1, keepdim=True) * Rj
        else:
            bp, bn = {"toolbox": (b[o].clamp(min=0), b[o].clamp(max=0)), "innvestigate": (b[o], b[o]),
                      "ignore": (0.0, 0.0)}[bias]
            zp, zn = zij.clamp(min=0), zij.clamp(max=0)  # (a w)⁺ = a⁺w⁺ + a⁻w⁻, (a w)⁻ = a⁺w⁻ + a⁻w⁺
            c = (alpha * zp / safe(zp.sum(1, keepdim=True) + bp) - beta * zn / safe(zn.sum(1, keepdim=True) + bn)) * Rj
        out[:, g * fan_in:(g + 1) * fan_in] += c
    return F.fold(out, x.shape[2:], **args)


CONVS = {
    "stride2_pad2_dil2": dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=2, dilation=2),
    "k5_stride3_nopad": dict(in_channels=4, out_channels=6, kernel_size=5, stride=3, padding=0),
    "rect_k3x2_pad(1,0)": dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=(1, 2), padding=(1, 0)),
    "groups2": dict(in_channels=4, out_channels=6, kernel_size=3, padding=1, groups=2),
    "groups2_stride2_dil2": dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1, dilation=2,
                                 groups=2),
}
RULES = {
    "z": (Epsilon(0.0), dict(rule="z")),
    "flat": (Flat(), dict(rule="flat")),
    "alpha1_toolbox": (AlphaBeta(1, 0, "toolbox"), dict(rule="ab", alpha=1, beta=0, bias="toolbox")),
    "alpha2_toolbox": (AlphaBeta(2, 1, "toolbox"), dict(rule="ab", alpha=2, beta=1, bias="toolbox")),
    "alpha2_innvestigate": (AlphaBeta(2, 1, "innvestigate"), dict(rule="ab", alpha=2, beta=1, bias="innvestigate")),
    "alpha2_ignore": (AlphaBeta(2, 1, "ignore"), dict(rule="ab", alpha=2, beta=1, bias="ignore")),
}


@pytest.mark.parametrize("signed", [True, False], ids=["signed_input", "relu_input"])
@pytest.mark.parametrize("rule", list(RULES))
@pytest.mark.parametrize("conv", list(CONVS))
def test_conv_rule_against_explicit_loop(conv, rule, signed):
    """Both αβ code paths: signed inputs (the image layer: x⁺/x⁻ split) and non-negative ones (post-ReLU)."""
    torch.manual_seed(3)
    m = _init(nn.Conv2d(**CONVS[conv]), seed=3)
    x = _data((2, 4, 11, 13), seed=4)
    if not signed:
        x = x.clamp(min=0)
    layers = layers_of(nn.Sequential(m))
    trace = forward_trace(layers, x)
    R = _data(trace.outputs[0].shape, seed=5)
    ours = RULES[rule][0].backward(layers[0], trace, R, {})
    ref = explicit_conv_relevance(m, x, R, **RULES[rule][1])
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10 * float(ref.abs().max()))


@pytest.mark.parametrize("signed", [True, False], ids=["signed_input", "relu_input"])
@pytest.mark.parametrize("rule", list(RULES))
def test_linear_rule_against_explicit_loop(rule, signed):
    """Dense layers: the same rules, reference z_ij = x_i w_ji built explicitly."""
    m = _init(nn.Linear(7, 5), seed=6)
    x = _data((3, 7), seed=7)
    if not signed:
        x = x.clamp(min=0)
    layers = layers_of(nn.Sequential(m))
    trace = forward_trace(layers, x)
    R = _data((3, 5), seed=8)
    ours = RULES[rule][0].backward(layers[0], trace, R, {})
    kw = RULES[rule][1]
    zij = x[:, :, None] * m.weight.T[None]  # (N, I, O)
    Rj = R[:, None, :]
    if kw["rule"] == "z":
        ref = (zij / safe(zij.sum(1, keepdim=True) + m.bias) * Rj).sum(2)
    elif kw["rule"] == "flat":
        ref = (torch.ones_like(zij) / zij.shape[1] * Rj).sum(2)
    else:
        b = m.bias
        bp, bn = {"toolbox": (b.clamp(min=0), b.clamp(max=0)), "innvestigate": (b, b), "ignore": (0.0, 0.0)}[kw["bias"]]
        zp, zn = zij.clamp(min=0), zij.clamp(max=0)
        ref = ((kw["alpha"] * zp / safe(zp.sum(1, keepdim=True) + bp)
                - kw["beta"] * zn / safe(zn.sum(1, keepdim=True) + bn)) * Rj).sum(2)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10 * float(ref.abs().max()))


def strided_grouped_net():
    return nn.Sequential(
        nn.Conv2d(3, 8, 5, stride=2, padding=3, dilation=2), nn.ReLU(inplace=True),
        nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, ceil_mode=True),
        nn.Conv2d(8, 12, 3, stride=2, padding=1, groups=4), nn.ReLU(inplace=True),
        nn.AvgPool2d(3, stride=2, padding=1),
        nn.Conv2d(12, 12, 1), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d((2, 3)),  # 3×4 -> 2×3: overlapping bins
        nn.Flatten(), nn.LazyLinear(16), nn.ReLU(inplace=True), nn.Linear(16, 5),
    )


ZENNIT_SMALL = {
    "lrp_z": ({}, lambda: _layer_map(zr.Epsilon(epsilon=STAB), zr.Epsilon(epsilon=STAB))),
    "lrp_alpha2": ({"bias": "toolbox"}, lambda: _layer_map(zr.AlphaBeta(2.0, 1.0, stabilizer=STAB),
                                                           zr.AlphaBeta(2.0, 1.0, stabilizer=STAB))),
    "lrp_cmp_alpha1_flat": ({"bias": "toolbox"}, lambda: zc.EpsilonPlusFlat(epsilon=0.1, stabilizer=STAB)),
    "lrp_cmp_alpha2_flat": ({"bias": "toolbox", "flat_layers": 3}, lambda: zc.NameLayerMapComposite(
        name_map=[(("0", "2", "5"), zr.Flat(stabilizer=STAB))],
        layer_map=_base() + [(nn.Conv2d, zr.AlphaBeta(2.0, 1.0, stabilizer=STAB)), (nn.Linear, zr.Epsilon(0.1))])),
    "lrp_cam": ({}, lambda: _layer_map(zr.Flat(stabilizer=STAB), zr.Epsilon(epsilon=STAB))),
    "guided_backprop": ({}, lambda: zc.GuidedBackprop()),
    "gradient": ({}, lambda: None),
}


@pytest.mark.parametrize("analyzer", list(ZENNIT_SMALL))
@pytest.mark.parametrize("shape", [(1, 3, 48, 64), (3, 3, 41, 37)], ids=["batch1_48x64", "batch3_41x37"])
def test_strided_grouped_pooled_net_vs_zennit(analyzer, shape):
    """Stride, padding, dilation, groups=2 and 4, a ceil-mode overlapping max-pool, AvgPool2d with padding,
    and a non-identity AdaptiveAvgPool2d. Non-square inputs and a batch of 1. ♭ sits above pools, so relevance
    lands on dead windows."""
    x = _data(shape)
    model = _materialise(strided_grouped_net(), x)
    t = _targets(model, x)
    opts, make = ZENNIT_SMALL[analyzer]
    if analyzer in ("gradient", "guided_backprop"):
        if analyzer == "guided_backprop":
            with torch.no_grad():
                t = model(x).argmax(1)
        ref = zennit_attribution(model, x, make(), lambda out: _onehot(out, t))
        if analyzer == "guided_backprop":
            with torch.no_grad():
                logit = model(x).gather(1, t[:, None])
            assert (logit > 0).all()
            ref = ref * logit.view(-1, 1, 1, 1)
    else:
        ref = zennit_attribution(model, x, make(), lambda out: _onehot(out, t) * out)
    assert_close_per_sample(lrp.attribute(model, x, t, analyzer, **opts), ref, tol=1e-10, what=analyzer)


def test_ceil_mode_overlapping_maxpool_is_winner_take_all():
    """3×3/2 with ceil_mode on 14×14 gives 7×7, where floor gives 6×6. The last windows are partial. The engine's
    gradient through the pool equals autograd's. Under ♭ (above the pool) relevance goes to the first argmax of
    each window, including all-zero windows after dead ReLUs, as zennit's autograd does."""
    pool = nn.MaxPool2d(3, stride=2, ceil_mode=True)
    assert pool(torch.zeros(1, 1, 14, 14)).shape[-1] == 7
    assert nn.MaxPool2d(3, stride=2)(torch.zeros(1, 1, 14, 14)).shape[-1] == 6
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(inplace=True), pool,
                          nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(inplace=True), nn.Flatten(), nn.LazyLinear(4))
    x = _data((2, 3, 14, 14))
    model = _materialise(model, x)
    with torch.no_grad():
        model[0].bias -= 0.7  # many dead units: all-zero (tied) pool windows
        h = model[1](model[0](x.clone()))
    assert ((F.unfold(h.flatten(0, 1)[:, None], 3, stride=2) == 0).all(1)).any(), "no tied window"
    t = _targets(model, x)
    xg = x.clone().requires_grad_(True)
    out = model(xg)
    (g,) = torch.autograd.grad(out, xg, _onehot(out, t))
    assert_close_per_sample(lrp.attribute(model, x, t, "gradient"), g, tol=1e-12)
    ref = zennit_attribution(model, x, _layer_map(zr.Flat(stabilizer=STAB), zr.Epsilon(epsilon=STAB)),
                             lambda o: _onehot(o, t) * o)
    assert_close_per_sample(lrp.attribute(model, x, t, "lrp_cam"), ref, tol=1e-12)


# ---------------------------------------------------------------------------------------------------
# model structure


class TorchvisionStyle(nn.Module):
    """features / avgpool / classifier with torch.flatten in forward(), like torchvision's VGG and AlexNet."""

    def __init__(self, body: nn.Sequential, head: nn.Sequential):
        super().__init__()
        self.features, self.avgpool, self.classifier = body, nn.AdaptiveAvgPool2d((2, 3)), head

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _nested_and_flat():
    flat = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d((2, 3)),
        nn.Flatten(), nn.Linear(48, 16), nn.ReLU(inplace=True), nn.Dropout(), nn.Linear(16, 5))
    x = _data((2, 3, 12, 12))
    flat = _materialise(flat, x)
    f = list(flat)
    nested = nn.Sequential(
        nn.Sequential(nn.Sequential(f[0], f[1]), f[2]),
        nn.Sequential(f[3], nn.Sequential(f[4], nn.Sequential(f[5]))),
        nn.Sequential(f[6], nn.Sequential(f[7], f[8]), f[9]), f[10]).eval()
    tv = TorchvisionStyle(nn.Sequential(*f[:5]), nn.Sequential(*f[7:])).eval()
    return flat, nested, tv, x


@pytest.mark.parametrize("variant", ["nested", "torchvision_style"])
def test_structure_variants_equal_flat_sequential(variant):
    """Nested Sequentials and torchvision's implicit flatten give the same maps as the flat Sequential, bitwise.
    PatternAttribution patterns are keyed by each model's own qualified layer names."""
    flat, nested, tv, x = _nested_and_flat()
    other = nested if variant == "nested" else tv
    t = _targets(flat, x)
    pf, po = _patterns(flat), _patterns(other)
    assert sorted(map(tuple, (v.shape for v in pf.values()))) == sorted(map(tuple, (v.shape for v in po.values())))
    # same weights -> same pattern values in module order
    po = dict(zip(po, pf.values()))
    a = lrp.attribute_many(flat, x, t, {n: ({"patterns": pf} if n == "pattern_attribution" else {}) for n in ALL})
    b = lrp.attribute_many(other, x, t, {n: ({"patterns": po} if n == "pattern_attribution" else {}) for n in ALL})
    for n in ALL:
        assert a[n].shape == x.shape
        torch.testing.assert_close(b[n], a[n], rtol=0, atol=0, msg=n)


# ---------------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize("module,typename", [(nn.SiLU(), "SiLU"), (nn.Sigmoid(), "Sigmoid"),
                                             (nn.LeakyReLU(), "LeakyReLU"), (nn.Hardswish(), "Hardswish")])
def test_unsupported_module_is_named(module, typename):
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Sequential(nn.ReLU(), module), nn.Flatten(), nn.LazyLinear(3))
    x = torch.randn(1, 3, 8, 8)
    model(x)
    model.eval()
    with pytest.raises(UnsupportedModelError, match=rf"'1\.1'.*{typename}"):
        lrp.attribute(model, x, [0], "lrp_z")


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.relu, self.conv2 = nn.Conv2d(3, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 3, 3, padding=1)
        self.flatten, self.fc = nn.Flatten(), nn.Linear(3 * 8 * 8, 4)

    def forward(self, x):
        return self.fc(self.flatten(self.conv2(self.relu(self.conv1(x))) + x))


def test_residual_forward_is_traced():
    """A shortcut from the input (`... + x`): the traced graph has the sum, and LRP-z = gradient × input holds."""
    model = Residual().double().eval()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    kinds = [layer.kind for layer in layers_of(model)]
    assert kinds == ["conv", "relu", "conv", "add", "flatten", "linear"]
    assert layers_of(model)[3].parents == (2, -1)
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(xg)[:, 0].sum(), xg)
    torch.testing.assert_close(lrp.attribute(model, x, [0, 0], "lrp_z"), g * x, rtol=1e-12, atol=1e-14)


class Subclassed(nn.Conv2d):
    """A conv whose own forward differs from its type's: the trace keeps it one layer, the check catches it."""

    def forward(self, x):
        return super().forward(x) * 2


def test_module_subclass_with_its_own_forward_is_rejected():
    model = nn.Sequential(Subclassed(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()
    with pytest.raises(UnsupportedModelError, match="does not reproduce model"):
        lrp.attribute(model, torch.randn(1, 3, 8, 8), [0], "lrp_z")


def test_functional_activation_in_forward_is_rejected():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4 * 6 * 6, 3)

        def forward(self, x):
            return self.fc(torch.flatten(torch.sigmoid(self.conv(x)), 1))

    with pytest.raises(UnsupportedModelError):
        lrp.attribute(Functional().eval(), torch.randn(1, 3, 8, 8), [0], "lrp_z")


def test_train_mode_is_rejected():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Dropout(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    with pytest.raises(UnsupportedModelError, match="eval"):
        lrp.attribute(model.train(), torch.randn(1, 3, 8, 8), [0], "lrp_z")


def _tiny():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()
    return model, torch.randn(2, 3, 8, 8)


@pytest.mark.parametrize("call,match", [
    (lambda m, x: lrp.attribute(m, x, [0, 1], "lrp_zz"), "lrp_zz"),
    (lambda m, x: lrp.attribute_many(m, x, [0, 1], ["lrp_z", "grad"]), "'grad'"),
    (lambda m, x: lrp.attribute(m, x, [0, 1], "lrp_epsilon", epsilonn=0.1), "epsilonn"),
    (lambda m, x: lrp.attribute_many(m, x, [0, 1], {"lrp_z": {"bais": "toolbox"}}), "bais"),
    (lambda m, x: lrp.attribute(m, x, [0, 1], "lrp_alpha2", bias="caffe"), "caffe"),
    (lambda m, x: lrp.attribute(m, x, [0, 1], "lrp_epsilon", epsilon=-1.0), "epsilon"),
    (lambda m, x: lrp.attribute(m, x, [0, 1], "lrp_cmp_alpha1_flat", flat_layers=1.5), "flat_layers"),
    (lambda m, x: lrp.attribute(m, x, [0, 7], "lrp_z"), "out of range"),
    (lambda m, x: lrp.attribute(m, x, [0], "lrp_z"), "targets"),
    (lambda m, x: lrp.attribute(m, x[0], [0], "lrp_z"), "inputs"),
    (lambda m, x: lrp.attribute(m, x.double(), [0, 1], "lrp_z"), "float64"),
    (lambda m, x: lrp.attribute_many(m, x, [0, 1], []), "no analyzers"),
], ids=["analyzer", "analyzer_many", "option", "option_per_analyzer", "bias_value", "epsilon_negative",
        "flat_layers", "target_range", "target_count", "input_ndim", "dtype", "empty"])
def test_bad_arguments_raise_value_error_naming_them(call, match):
    model, x = _tiny()
    with pytest.raises(ValueError, match=match):
        call(model, x)


def test_pattern_attribution_without_patterns():
    model, x = _tiny()
    with pytest.raises(ValueError, match="patterns"):
        lrp.attribute(model, x, [0, 1], "pattern_attribution")
    incomplete = {"0": torch.rand(4, 3, 3, 3)}
    with pytest.raises(ValueError, match="'3'"):
        lrp.attribute(model, x, [0, 1], "pattern_attribution", patterns=incomplete)
    wrong = {"0": torch.rand(4, 3, 3, 3), "3": torch.rand(3, 5)}
    with pytest.raises(ValueError, match="shape"):
        lrp.attribute(model, x, [0, 1], "pattern_attribution", patterns=wrong)


# ---------------------------------------------------------------------------------------------------
# degenerate inputs


def _all(model, x, t, **opts):
    return lrp.attribute_many(model, x, t, {n: ({"patterns": _patterns(model)} if n == "pattern_attribution"
                                                else {}) for n in ALL}, **opts)


@pytest.mark.parametrize("bias", ["innvestigate", "toolbox", "ignore"])
@pytest.mark.parametrize("case", ["zero_image", "dead_relus", "padding_only_outputs"])
def test_zero_denominators_give_finite_maps(case, bias):
    """Zero denominators occur for an all-zero image, for dead ReLUs, and for ♭ on outputs whose receptive field
    is all zero padding (k=1, padding=1). Every analyzer must return finite maps."""
    if case == "padding_only_outputs":
        model = nn.Sequential(nn.Conv2d(3, 4, 1, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=3), nn.ReLU(),
                              nn.MaxPool2d(2), nn.Flatten(), nn.LazyLinear(5))
    else:
        model = vgg_like(avgpool=nn.AdaptiveAvgPool2d((3, 3)))
    x = _data((2, 3, 12, 12))
    model = _materialise(model, x)
    if case == "zero_image":
        x = torch.zeros_like(x)
    if case == "dead_relus":
        with torch.no_grad():
            model[5].bias.fill_(-1e3)  # the third conv: all dead, logits = the bias of the last layer
    t = torch.tensor([0, 3])
    maps = _all(model, x, t, bias=bias, flat_layers=2)
    for name, R in maps.items():
        assert R.shape == x.shape and torch.isfinite(R).all(), name


def test_baseline_is_uniform_positive():
    model, x = _tiny()
    R = lrp.attribute(model, x, [0, 1], "baseline")
    assert R.shape == x.shape and R.dtype == x.dtype and R.device == x.device
    assert (R > 0).all() and (R == R.flatten()[0]).all()


def test_attribute_many_equals_one_by_one_bitwise():
    """attribute_many shares the forward pass and common backward segments; the maps must not change, bitwise."""
    model, x = alexnet_like(), _data((2, 3, 67, 67))
    model = _materialise(model, x)
    t = _targets(model, x)
    opts = {"bias": "toolbox", "flat_layers": 2}
    pat = _patterns(model)
    many = _all(model, x, t, **opts)
    assert list(many) == ALL and len(ALL) == 13
    for name in ALL:
        own = {k: v for k, v in opts.items() if k in composites.option_names(composites.get(name))}
        one = lrp.attribute(model, x, t, name, **own, **({"patterns": pat} if name == "pattern_attribution" else {}))
        torch.testing.assert_close(many[name], one, rtol=0, atol=0, msg=name)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("model_fn,shape", [(alexnet_like, (3, 3, 67, 83)), (strided_grouped_net, (2, 3, 48, 64))],
                         ids=["alexnet_like", "strided_grouped"])
def test_cuda_equals_cpu(model_fn, shape):
    x = _data(shape, dtype=torch.float32)
    model = _materialise(model_fn(), x)
    t = _targets(model, x)
    cpu = _all(model, x, t, bias="toolbox", flat_layers=2)
    gpu = _all(model.cuda(), x.cuda(), t.cuda(), bias="toolbox", flat_layers=2)
    for name in ALL:
        assert gpu[name].device.type == "cuda"
        assert_close_per_sample(gpu[name].cpu(), cpu[name], tol=1e-5, what=f"cuda {name}")


def test_nonnegative_inputs_are_known_from_the_graph_after_a_relu():
    """αβ takes its one-convolution path where a layer's input cannot be negative: after a ReLU (through pools,
    LRN, Dropout, Flatten) the graph says so without reading the data; elsewhere the data decides."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.LocalResponseNorm(2), nn.Conv2d(4, 4, 3),
                          nn.Conv2d(4, 4, 1), nn.ReLU(), nn.Flatten(), nn.Dropout(), nn.Linear(4, 2)).eval()
    layers = layers_of(model)
    assert [layer.input_nonneg for layer in layers if layer.kind in ("conv", "linear")] == [False, True, False, True]
    x = torch.rand(2, 3, 8, 8)  # a non-negative image: known only from the data
    trace = forward_trace(layers, x)
    assert trace.nonnegative_input(0) and ("nonneg", 0) in trace.cache  # checked on the data
    assert trace.nonnegative_input(4) and ("nonneg", 4) not in trace.cache  # from the graph: no data check
    assert trace.nonnegative_input(5) == bool((trace.inputs[5] >= 0).all()) and ("nonneg", 5) in trace.cache
    assert not forward_trace(layers, x - 0.5).nonnegative_input(0)


@pytest.mark.parametrize("module", [nn.LocalResponseNorm(2, k=-1.0, beta=1.0), nn.AvgPool2d(1, divisor_override=-1)],
                         ids=["lrn_negative_k", "avgpool_negative_divisor"])
def test_modules_that_can_flip_signs_leave_it_to_the_data(module):
    """After a ReLU, an LRN with k < 0 or an average pool with a negative divisor outputs negative values: the
    graph must not vouch for the next layer's input (αβ's one-convolution path would then be wrong)."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), module, nn.Conv2d(4, 4, 3, padding=1)).eval()
    layers = layers_of(model)
    assert [layer.input_nonneg for layer in layers] == [False, False, True, False]
    trace = forward_trace(layers, _data((2, 3, 8, 8), dtype=torch.float32))
    assert (trace.inputs[3] < 0).any() and not trace.nonnegative_input(3)
