"""The graph engine against zennit 0.5.1 with its canonizers, on torchvision ResNet-18, ResNet-50 and VGG-16-BN, and
on the demo's ResNet (lrp.models.architectures.DemoResNet: torchvision's BasicBlock, a 3x3 stem, a 2x2 max-pool).

Why these: they have BatchNorm after every conv (merged into it on both sides: ours by `lrp.canonizers`, zennit's by
`SequentialMergeBatchNorm` inside `ResNetCanonizer` / `VGGCanonizer`) and, in the ResNets, residual sums (ours
`SumZ`, zennit's `Norm` on the `Sum` module its canonizer inserts). zennit is hook-based and independent of our
closed-form rules, so agreement tests the tracing, the merge and the sum rule at once.

Setup, and why:
- Seeded random weights, random conv biases where a conv has one, and BatchNorm statistics that are NOT the
  identity (running mean ~ N(0, 0.2), var ~ U(0.5, 2), γ ~ U(0.5, 1.5), β ~ N(0, 0.2)): a merge that ignored any of
  them, or a norm left out, would change the maps.
- BatchNorm eps = 0 (the variances are ≥ 0.5): zennit's canonizer sets a merged norm's statistics to "identity"
  (mean 0, var 1, γ 1, β 0) but leaves its eps, so its canonized net computes x / √(1 + eps) at every norm, not
  the model; with torchvision's eps = 1e-5 that alone moved zennit's ResNet-18 LRP-z map by 2.5e-3 · max|R| from
  gradient × input of the real model, which ours equals to 1e-15 (test_engine_graph.py).
- float64 at 64×64 (ResNet-50's stages end at 2×2; the global average pool is then a true 4-pixel pool).
- zennit gets our stabiliser (exact zeros -> 1e-7) for every rule without ε, as in test_engine_zennit.py; the
  αβ composites use the toolbox bias convention, zennit's (the merged BatchNorms give every conv a bias, so the
  conventions differ: `test_comparison_can_fail` shows it).
- Start relevance one-hot × logit; sample 1 explains a class with a negative logit. Guided Backprop on argmax
  targets with positive logits (our GB starts at the logit, zennit's at 1).
- Tolerance: max|Δ| ≤ 1e-5 · max|R| per sample (the issue's acceptance bound).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torchvision
from torch import nn
from zennit import composites as zc
from zennit import rules as zr
from zennit.torchvision import ResNetCanonizer, VGGCanonizer
from zennit.types import Activation, AvgPool, Convolution

import lrp
from lrp import composites
from lrp.models.architectures import DemoResNet

from test_engine_zennit import STAB, _onehot, assert_close_per_sample, zennit_attribution

DTYPE = torch.float64
ARCHS = {"resnet18": ResNetCanonizer, "resnet50": ResNetCanonizer, "vgg16_bn": VGGCanonizer,
         "demo_resnet": ResNetCanonizer}


def randomise_batchnorms(model: nn.Module, seed: int = 1) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, and random conv/linear biases."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.2)
                m.eps = 0.0  # see the module docstring: zennit's "identity" norm is x / √(1 + eps)
            elif isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model


def build(arch: str, size: int = 64):
    torch.manual_seed(0)
    if arch == "demo_resnet":  # identity shortcuts in layer1 and after the strided block of layer2
        model = DemoResNet(20, width=8, image_size=size, blocks=(1, 2, 1))
    else:
        model = getattr(torchvision.models, arch)(weights=None)
    if arch == "vgg16_bn":  # narrow the 4096-wide dense layers (as test_engine_zennit._slim_classifier)
        model.classifier[0], model.classifier[3] = nn.Linear(512 * 7 * 7, 256), nn.Linear(256, 256)
        model.classifier[6] = nn.Linear(256, 1000)
    model = randomise_batchnorms(model).to(DTYPE).eval().requires_grad_(False)
    x = torch.randn(2, 3, size, size, dtype=DTYPE)
    with torch.no_grad():
        logits = model(x)
    argmax = logits.argmax(1)
    targets = torch.stack([argmax[0], logits[1].argmin()])
    assert logits[0, targets[0]] > 0 and logits[1, targets[1]] < 0
    return model, x, targets, argmax


def _layer_map(conv_rule, dense_rule, canonizer):
    from zennit.layer import Sum

    base = [(Activation, zr.Pass()), (Sum, zr.Norm(stabilizer=STAB)), (AvgPool, zr.Norm(stabilizer=STAB))]
    return zc.LayerMapComposite(base + [(Convolution, conv_rule), (nn.Linear, dense_rule)], canonizers=[canonizer])


# case -> (our analyzer, our options, zennit composite factory (canonizer -> composite) or None = autograd)
CASES = {
    "lrp_z": ("lrp_z", {}, lambda c: _layer_map(zr.Epsilon(epsilon=STAB), zr.Epsilon(epsilon=STAB), c)),
    "lrp_alpha1": ("lrp_alpha1", {}, lambda c: _layer_map(zr.AlphaBeta(1.0, 0.0, stabilizer=STAB),
                                                          zr.AlphaBeta(1.0, 0.0, stabilizer=STAB), c)),
    "lrp_cmp_alpha1": ("lrp_cmp_alpha1", {}, lambda c: zc.EpsilonPlus(epsilon=0.1, stabilizer=STAB, canonizers=[c])),
    "lrp_cmp_alpha2": ("lrp_cmp_alpha2", {},
                       lambda c: zc.EpsilonAlpha2Beta1(epsilon=0.1, stabilizer=STAB, canonizers=[c])),
    "lrp_cmp_alpha1_flat": ("lrp_cmp_alpha1_flat", {},
                            lambda c: zc.EpsilonPlusFlat(epsilon=0.1, stabilizer=STAB, canonizers=[c])),
    "lrp_cmp_alpha2_flat": ("lrp_cmp_alpha2_flat", {},
                            lambda c: zc.EpsilonAlpha2Beta1Flat(epsilon=0.1, stabilizer=STAB, canonizers=[c])),
    "lrp_cam": ("lrp_cam", {}, lambda c: _layer_map(zr.Flat(stabilizer=STAB), zr.Epsilon(epsilon=STAB), c)),
    "guided_backprop": ("guided_backprop", {}, lambda c: zc.GuidedBackprop(canonizers=[c])),
    "gradient": ("gradient", {}, None),
}


def _alias(case: str) -> str:
    return f"graph_zennit_case:{case}"


@pytest.fixture(scope="module", params=list(ARCHS))
def net(request):
    """The model and our maps of every case from ONE attribute_many call (one forward pass, shared backward)."""
    model, x, targets, argmax = build(request.param)
    cases = [c for c in CASES if c != "guided_backprop"]
    for c in cases:
        composites.register(dataclasses.replace(composites.get(CASES[c][0]), name=_alias(c)))
    try:
        opts = {_alias(c): {**({"bias": "toolbox"} if "alpha" in c else {}), **CASES[c][1]} for c in cases}
        maps = lrp.attribute_many(model, x, targets, opts)
    finally:
        for c in cases:
            composites.REGISTRY.pop(_alias(c), None)
    ours = {c: maps[_alias(c)] for c in cases}
    ours["guided_backprop"] = lrp.attribute(model, x, argmax, "guided_backprop")
    return request.param, model, x, targets, argmax, ours


@pytest.mark.parametrize("case", list(CASES))
def test_matches_zennit_with_canonizers(net, case):
    arch, model, x, targets, argmax, ours = net
    analyzer, _, make = CASES[case]
    composite = make(ARCHS[arch]()) if make is not None else None
    if analyzer == "guided_backprop":
        with torch.no_grad():
            logit = model(x).gather(1, argmax[:, None])
        assert (logit > 0).all()
        ref = zennit_attribution(model, x, composite, lambda out: _onehot(out, argmax)) * logit.view(-1, 1, 1, 1)
    elif analyzer == "gradient":
        ref = zennit_attribution(model, x, composite, lambda out: _onehot(out, targets))
    else:
        ref = zennit_attribution(model, x, composite, lambda out: _onehot(out, targets) * out)
    assert_close_per_sample(ours[case], ref, what=f"{arch} {case}")


@pytest.mark.filterwarnings("ignore::lrp.BiasConventionWarning")  # the default (innvestigate) bias on purpose
def test_the_users_model_is_left_unchanged():
    """Canonization works on copies: the model's parameters, buffers and modules are as they were."""
    model, x, targets, _ = build("resnet18")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modules = [type(m) for m in model.modules()]
    lrp.attribute_many(model, x, targets, ["lrp_cmp_alpha2_flat", "gradient"])
    after = model.state_dict()
    assert modules == [type(m) for m in model.modules()]
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_comparison_can_fail():
    """The same check must fail for a wrong choice on these models: iNNvestigate's αβ bias convention (the merged
    BatchNorms give every conv a bias), and zennit without its canonizer (BatchNorm then gets no rule)."""
    model, x, targets, _ = build("resnet18")
    ref = zennit_attribution(model, x, zc.EpsilonAlpha2Beta1(epsilon=0.1, stabilizer=STAB,
                                                             canonizers=[ResNetCanonizer()]),
                             lambda out: _onehot(out, targets) * out)
    with pytest.raises(AssertionError), pytest.warns(lrp.BiasConventionWarning):
        assert_close_per_sample(lrp.attribute(model, x, targets, "lrp_cmp_alpha2", bias="innvestigate"), ref)
    ours = lrp.attribute(model, x, targets, "lrp_cmp_alpha2", bias="toolbox")
    assert_close_per_sample(ours, ref)
    uncanonized = zennit_attribution(model, x, zc.EpsilonAlpha2Beta1(epsilon=0.1, stabilizer=STAB),
                                     lambda out: _onehot(out, targets) * out)
    with pytest.raises(AssertionError):
        assert_close_per_sample(ours, uncanonized)


def test_innvestigate_bias_on_merged_batchnorms_warns():
    """The convention that broke α2β1 on the demo ResNet is said, once per call, naming the analyzer and a layer;
    the toolbox convention, rules without α-β and nets without BatchNorm stay silent."""
    import warnings

    model, x, targets, _ = build("resnet18")
    with pytest.warns(lrp.BiasConventionWarning, match=r"lrp_cmp_alpha2: .* on 20 layer\(s\) with a merged "
                                                       r"BatchNorm \(first: 'conv1'\).*bias='toolbox'"):
        lrp.attribute(model, x, targets, "lrp_cmp_alpha2", bias="innvestigate")
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 62 * 62, 5)).to(DTYPE).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error", lrp.BiasConventionWarning)
        lrp.attribute_many(model, x, targets, {"lrp_cmp_alpha2": {"bias": "toolbox"}, "lrp_z": {}, "gradient": {}})
        lrp.attribute(plain, x, targets % 5, "lrp_cmp_alpha2", bias="innvestigate")
