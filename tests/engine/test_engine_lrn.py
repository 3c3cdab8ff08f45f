"""LocalResponseNorm in the engine: LRP passes relevance through it unchanged (LRP Toolbox lrn_backward_type 0),
the gradient family uses its true gradient.

References, and why they are independent of the code under test:
- the identity rule: the net is cut at the LRN. The part above it is explained on its own (its own forward pass
  from the LRN's output, through `lrp.attribute_many`), giving the relevance that arrives at the LRN's output; the
  part below is then explained from exactly that relevance. For LRP-z the lower part is autograd
  (LRP-z from a start relevance R at output y is x ⊙ ∇_x⟨R/y, f(x)⟩ on ReLU/max-pool nets with biases).
- gradient and Guided Backprop: torch.autograd through F.local_response_norm (Guided: ReLU backward clamped).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lrp
from lrp import composites
from lrp.graph import forward_trace, layers_of
from lrp.rules import LRNGradient, Pass

D64 = torch.float64
LRP_ANALYZERS = [n for n in composites.TABLE1 if composites.get(n).family == "lrp"]


def _net(seed: int = 0) -> tuple[nn.Sequential, nn.Sequential, nn.Sequential]:
    """(full, lower, upper): conv-relu-maxpool | LRN | grouped conv-relu-flatten-linear, float64, random biases.
    A strong LRN (α = 2) so that treating it as the identity visibly differs from its gradient."""
    torch.manual_seed(seed)
    lower = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True))
    upper = nn.Sequential(nn.Conv2d(6, 8, 3, padding=1, groups=2), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 5 * 5, 5))
    for m in [*lower, *upper]:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.bias, std=0.1)
    full = nn.Sequential(*lower, nn.LocalResponseNorm(5, alpha=2.0, beta=0.75, k=1.0), *upper)
    return full.to(D64).eval(), lower.to(D64).eval(), upper.to(D64).eval()


def _inputs(n: int = 3, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 9, 9, generator=g, dtype=D64), torch.tensor([0, 3, 4][:n])


@torch.no_grad()
def _lrp_from(layers, x: torch.Tensor, analyzer: str, R: torch.Tensor, **options) -> torch.Tensor:
    """Our rules on a layer chain, started from relevance R at its output (instead of the logit)."""
    a = composites.get(analyzer)
    trace = forward_trace(layers, x)
    rules = composites.plan(a, layers, composites.resolve_options(a, options))
    for i in range(len(layers) - 1, -1, -1):
        R = rules[i].backward(layers[i], trace, R, {})
        if i > 0:
            R = R.reshape(trace.outputs[i - 1].shape)
    return R


def test_plan_gives_identity_under_lrp_and_gradient_otherwise():
    full, _, _ = _net()
    layers = layers_of(full)
    i = next(layer.index for layer in layers if layer.kind == "lrn")
    for name in composites.TABLE1:
        a = composites.get(name)
        if a.kernel_rule is None:
            continue
        rule = composites.plan(a, layers, composites.resolve_options(a, {}))[i]
        assert rule == (Pass() if a.family == "lrp" else LRNGradient()), name


def test_lrp_z_through_lrn_is_identity_then_gradient_times_input():
    full, lower, upper = _net()
    x, t = _inputs()
    got = lrp.attribute(full, x, t, analyzer="lrp_z")
    with torch.no_grad():
        y_pool = lower(x)
        y_lrn = full[3](y_pool)
    # relevance at the LRN output: LRP-z of the upper part = y ⊙ ∇ upper_t(y) (autograd, no engine)
    y = y_lrn.clone().requires_grad_(True)
    (g_up,) = torch.autograd.grad(upper(y).gather(1, t[:, None]).sum(), y)
    R_mid = y_lrn * g_up
    # identity at the LRN, then LRP-z of the lower part from R_mid: x ⊙ ∇_x ⟨R_mid / y_pool, lower(x)⟩
    ratio = torch.where(y_pool == 0, 0.0, R_mid / torch.where(y_pool == 0, 1.0, y_pool))
    xg = x.clone().requires_grad_(True)
    (g_low,) = torch.autograd.grad(lower(xg), xg, ratio)
    torch.testing.assert_close(got, x * g_low, rtol=1e-9, atol=1e-12)
    # and the LRN matters: the true gradient through it gives a different map
    xg = x.clone().requires_grad_(True)
    (g_true,) = torch.autograd.grad(full(xg).gather(1, t[:, None]).sum(), xg)
    assert (got - x * g_true).abs().max() > 1e-3 * got.abs().max()


def test_every_lrp_analyzer_passes_relevance_through_lrn_unchanged():
    full, lower, upper = _net()
    x, t = _inputs()
    got = lrp.attribute_many(full, x, t, LRP_ANALYZERS, bias="toolbox")  # one call: the shared rule trie
    with torch.no_grad():
        y_lrn = full[3](lower(x))
    for name in LRP_ANALYZERS:
        # the lower part holds the first conv: ♭ analyzers put ♭ there (flat_layers = 1), not on the upper conv
        flat = {"flat_layers": 0} if "flat_layers" in composites.option_names(composites.get(name)) else {}
        R_mid = lrp.attribute(upper, y_lrn, t, analyzer=name, bias="toolbox", **flat)  # lrp_cam: ♭ on every conv
        ref = _lrp_from(layers_of(full)[:3], x, name, R_mid, bias="toolbox")  # conv, relu, max-pool
        torch.testing.assert_close(got[name], ref, rtol=1e-9, atol=1e-12, msg=name)


def test_gradient_through_lrn_is_autograd():
    full, _, _ = _net()
    x, t = _inputs()
    got = lrp.attribute(full, x, t, analyzer="gradient")
    xg = x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(full(xg).gather(1, t[:, None]).sum(), xg)
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-12)


class _GuidedReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g.clamp(min=0) * (x > 0)


def test_guided_backprop_through_lrn_is_autograd_with_guided_relus():
    full, _, _ = _net()
    x, t = _inputs()
    got = lrp.attribute(full, x, t, analyzer="guided_backprop")
    xg = x.clone().requires_grad_(True)
    a = xg
    for m in full:
        a = _GuidedReLU.apply(a) if isinstance(m, nn.ReLU) else m(a)
    start = torch.zeros_like(a).scatter_(1, t[:, None], 1.0) * a.detach()  # started at the logit
    (ref,) = torch.autograd.grad(a, xg, start)
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("size", [1, 3, 4])  # even sizes: torch pads (n//2, (n-1)//2) channels
def test_forward_trace_matches_module(size):
    full, _, _ = _net()
    full[3] = nn.LocalResponseNorm(size, alpha=0.5, beta=0.6, k=1.5)
    x, t = _inputs()
    r = lrp.attribute(full, x, t, analyzer="gradient")  # compile_model checks the trace against full(x)
    assert torch.isfinite(r).all()
