"""PatternAttribution: the patterns' defining property, a hand-computed case, save/load, the backward pass."""

import numpy as np
import torch
from torch import nn

import lrp
from lrp import patterns


def _toy():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 6), nn.ReLU(), nn.Linear(6, 3)).double().eval()


def test_defining_property_w_dot_a_is_one():
    model = _toy()
    batches = [torch.randn(8, 3, 8, 8, dtype=torch.float64) for _ in range(3)]
    pats = patterns.compute(model, batches, log=lambda m: None)
    assert set(pats) == {"0", "4", "6"}
    for name, a in pats.items():
        w = dict(model.named_modules())[name].weight
        wa = (w.reshape(w.shape[0], -1) * a.reshape(a.shape[0], -1)).sum(1)
        active = wa != 0  # neurons never active have a = 0
        assert active.sum() >= 1
        torch.testing.assert_close(wa[active], torch.ones_like(wa[active]))


def test_hand_computed_linear_pattern():
    """One Linear(2→1) neuron, w = (1, 1), b = 0: with x = (1, 0), (0, 2), (-1, -1) → y = 1, 2, -2."""
    layer = nn.Linear(2, 1).double()
    with torch.no_grad():
        layer.weight[:] = torch.tensor([[1.0, 1.0]])
        layer.bias[:] = 0
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, -1.0]], dtype=torch.float64)
    pats = patterns.compute(_Flat(layer).eval(), [x[:, :, None, None]], log=lambda m: None)
    # mask m = y > 0 → samples 1, 2. E+[x] = (0.5, 1), E+[xy] = ((1·1 + 0·2)/2, (0·1 + 2·2)/2) = (0.5, 2),
    # E[y] = (1 + 2 - 2)/3 = 1/3. cov = (0.5 - 0.5/3, 2 - 1/3) = (1/3, 5/3); wᵀcov = 2 → a = (1/6, 5/6).
    np.testing.assert_allclose(pats["1"].numpy(), [[1 / 6, 5 / 6]], rtol=1e-12)


class _Flat(nn.Sequential):
    def __init__(self, linear):
        super().__init__(nn.Flatten(), linear)


def test_save_load_and_attribution_uses_patterns(tmp_path):
    model = _toy()
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    pats = patterns.compute(model, [x], log=lambda m: None)
    patterns.save(pats, tmp_path / "p.h5", model="toy")
    loaded = patterns.load(tmp_path / "p.h5")
    assert set(loaded) == set(pats)
    for k in pats:
        torch.testing.assert_close(loaded[k], pats[k])
    t = torch.tensor([0, 1, 2, 0])
    R = lrp.attribute(model, x, t, "pattern_attribution", patterns=loaded)
    # Reference by autograd: forward values of the original net (so ReLU gates and max-pool winners come
    # from the real forward pass), gradients through weights w ⊙ a, started at the logit.
    xg = x.clone().requires_grad_(True)
    h = xg
    for name, mod in model.named_children():
        if name in pats:
            w_mod = mod.weight * pats[name]
            f = nn.functional.conv2d if isinstance(mod, nn.Conv2d) else nn.functional.linear
            kw = {"padding": mod.padding} if isinstance(mod, nn.Conv2d) else {}
            orig, modified = mod(h), f(h, w_mod, None, **kw)
            h = orig.detach() + modified - modified.detach()
        else:
            h = mod(h)
    logits = model(x)
    (g,) = torch.autograd.grad(h, xg, torch.zeros_like(h).scatter_(1, t[:, None], 1.0) * logits)
    torch.testing.assert_close(R, g)
    assert (R - lrp.attribute(model, x, t, "gradient")
            * logits.gather(1, t[:, None])[:, :, None, None]).abs().max() > 1e-3


def test_grouped_conv_patterns_are_those_of_each_group_alone():
    """A grouped conv is G independent convs: its patterns must equal, block by block, those of each group's
    conv computed alone on that group's input channels (an ungrouped path through the same code)."""
    torch.manual_seed(0)
    G, c_in, c_out = 3, 6, 9
    conv = nn.Conv2d(c_in, c_out, 3, padding=1, groups=G).double()
    model = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(c_out * 25, 2)).double().eval()
    batches = [torch.randn(4, c_in, 5, 5, dtype=torch.float64) for _ in range(2)]
    grouped = patterns.compute(model, batches, log=lambda m: None)["0"]
    assert grouped.shape == conv.weight.shape
    ci, co = c_in // G, c_out // G
    for g in range(G):
        alone = nn.Conv2d(ci, co, 3, padding=1).double()
        with torch.no_grad():
            alone.weight.copy_(conv.weight[g * co : (g + 1) * co])
            alone.bias.copy_(conv.bias[g * co : (g + 1) * co])
        ref_model = nn.Sequential(alone, nn.ReLU(), nn.Flatten(), nn.Linear(co * 25, 2)).double().eval()
        ref = patterns.compute(ref_model, [b[:, g * ci : (g + 1) * ci] for b in batches], log=lambda m: None)["0"]
        torch.testing.assert_close(grouped[g * co : (g + 1) * co], ref, rtol=1e-12, atol=1e-14)


def test_pattern_attribution_on_a_canonized_mobilenet():
    """Patterns per conv/linear of the canonized graph (BatchNorm merged, depthwise convs grouped) drive PA on
    MobileNetV2 (ReLU6). The identity check: with every a ≡ 1, w ⊙ a = w and PA is the gradient (started, as
    PA is, from the logit)."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(weights=None, width_mult=0.35).double().eval()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    pats = patterns.compute(model, [x], log=lambda m: None)
    layers = [la for la in lrp.graph.layers_of(model) if la.kind in ("conv", "linear")]
    assert set(pats) == {la.name for la in layers}
    assert any(la.module.groups > 1 for la in layers if la.kind == "conv")
    assert all(pats[la.name].shape == la.module.weight.shape for la in layers)
    t = [0, 1]
    R = lrp.attribute(model, x, t, "pattern_attribution", patterns=pats)
    assert torch.isfinite(R).all() and R.abs().sum() > 0
    ones = {k: torch.ones_like(v) for k, v in pats.items()}
    torch.testing.assert_close(
        lrp.attribute(model, x, t, "pattern_attribution", patterns=ones),
        lrp.attribute(model, x, t, "gradient") * _logits(model, x, t)[:, None, None, None],
        rtol=1e-10,
        atol=1e-12,
    )


def _logits(model, x, t):
    with torch.no_grad():
        return model(x)[torch.arange(len(t)), torch.tensor(t)]
