"""Region perturbation (lrp.evaluation.region_perturbation): exact cases on a linear model, the closed form of a
random order, removal strictly by region, and Quantus 0.6.0's RegionPerturbation on a small CNN."""

import numpy as np
import pytest
import torch

from lrp.evaluation import region_perturbation
from lrp.evaluation.perturbation import region_grid, region_size


def linear_model(c, h, w, seed=0):
    torch.manual_seed(seed)
    lin = torch.nn.Linear(c * h * w, 3, dtype=torch.float64)
    return torch.nn.Sequential(torch.nn.Flatten(), lin).eval(), lin


def region_sums_by_slices(rel, region):
    """Region relevance from explicit slices of a Quantus-style padded map (an independent route to the grid)."""
    h, w = rel.shape
    ph, pw = (region - h % region) % region, (region - w % region) % region
    padded = np.pad(rel, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)))
    return np.array([padded[i:i + region, j:j + region].sum()
                     for i in range(0, padded.shape[0], region) for j in range(0, padded.shape[1], region)])


@pytest.mark.parametrize("size,region", [((12, 12), 3), ((10, 13), 3), ((9, 7), 4)])
@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_linear_model_curve_is_logit_minus_cumulative_sorted_region_relevance(size, region, order):
    c, (h, w) = 2, size
    model, lin = linear_model(c, h, w)
    x = torch.randn(4, c, h, w, dtype=torch.float64)
    t = torch.tensor([0, 2, 1, 0])
    rel = (lin.weight[t].reshape(4, c, h, w) * x).detach()  # w ⊙ x: LRP-0 of a linear model
    m = region_grid(h, w, region)[1]
    curves, aopc = region_perturbation(model, x, t, rel, region=region, steps=m, order=order, batch_size=5)
    f = model(x).gather(1, t[:, None])[:, 0].detach().numpy()
    for i in range(4):
        s = region_sums_by_slices(rel[i].sum(0).numpy(), region)
        s = np.sort(s)[::-1] if order == "morf" else np.sort(s)
        expected = f[i] - np.concatenate([[0.0], np.cumsum(s)])
        np.testing.assert_allclose(curves[i].numpy(), expected, rtol=0, atol=1e-10)
        np.testing.assert_allclose(aopc[i].item(), np.mean(expected[0] - expected), rtol=0, atol=1e-10)
    # With every region gone the input is the fill (0): only the bias is left.
    np.testing.assert_allclose(curves[:, -1].numpy(), lin.bias[t].detach().numpy(), atol=1e-12)


def test_random_order_aopc_ci_contains_the_closed_form():
    """E[f(x⁰) − f(xᵏ)] = k·S/M for a uniformly random order on a linear model with zero fill, so
    E[AOPC] = S/M · L/2. The bound is 3.29 standard errors (two-sided 0.1 %), so the test fails by chance once in
    a thousand seeds; a biased order (e.g. row-major) misses it by far more."""
    c, h, w, region, steps, n = 1, 12, 12, 3, 10, 2000
    model, lin = linear_model(c, h, w, seed=1)
    x = torch.randn(1, c, h, w, dtype=torch.float64).expand(n, -1, -1, -1)
    t = torch.zeros(n, dtype=torch.long)
    rel = (lin.weight[0].reshape(1, c, h, w) * x).detach()
    _, aopc = region_perturbation(model, x, t, rel, region=region, steps=steps, order="random", seed=11)
    m = region_grid(h, w, region)[1]
    closed = rel[0].sum().item() / m * steps / 2
    se = aopc.std().item() / np.sqrt(n)
    assert aopc.std() > 0  # the orders differ between units
    assert abs(aopc.mean().item() - closed) < 3.29 * se, (aopc.mean().item(), closed, se)


class Recorder(torch.nn.Module):
    """Remembers every batch it sees; its logit is the input's sum."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(x.clone())
        return x.sum((1, 2, 3))[:, None].expand(-1, 2)


@pytest.mark.parametrize("order", ["morf", "lerf", "random"])
def test_removal_is_exactly_by_region_no_leakage(order):
    c, h, w, region = 3, 11, 8, 3
    x = torch.rand(2, c, h, w) + 1.0  # never equal to the fill
    rel = torch.randn(2, h, w)
    rec = Recorder()
    steps = region_grid(h, w, region)[1]
    region_perturbation(rec, x, [0, 1], rel, region=region, steps=steps, order=order, fill=-5.0, batch_size=4)
    seen = torch.cat(rec.seen).reshape(2, steps + 1, c, h, w)
    ph, pw = (region - h % region) % region, (region - w % region) % region
    for i in range(2):
        removed_before = torch.zeros(h, w, dtype=torch.bool)
        for k in range(steps + 1):
            changed = (seen[i, k] != x[i])
            assert torch.equal(changed[0], changed[1]) and torch.equal(changed[0], changed[2])  # all channels
            assert torch.all(seen[i, k][changed] == -5.0)
            new = changed[0] & ~removed_before
            assert torch.equal(removed_before, changed[0] & removed_before)  # nothing comes back
            if k == 0:
                assert not new.any()
            else:  # exactly one whole region of the padded grid is new
                ys, xs = torch.nonzero(new, as_tuple=True)
                r0, c0 = (ys.min() + ph // 2) // region, (xs.min() + pw // 2) // region
                block = torch.zeros(h, w, dtype=torch.bool)
                y0, x0 = r0 * region - ph // 2, c0 * region - pw // 2
                block[max(y0, 0):y0 + region, max(x0, 0):x0 + region] = True
                assert torch.equal(new, block), (i, k)
            removed_before = changed[0]
        assert removed_before.all()


def small_cnn(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(32, 5)).eval()


@pytest.mark.parametrize("side,region", [(32, 4), (30, 4), (31, 4)])
@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_equals_quantus_region_perturbation(side, region, order):
    """Quantus returns f(x⁰) − f(xᵏ) for k = 1..L; same settings: logits (softmax=False), the raw map
    (abs=False, normalise=False), fill 0 (perturb_baseline=0.0; Quantus' "black" is the image's minimum), its
    centred padding. Tie-free maps: Quantus' argsort breaks ties in no defined order."""
    quantus = pytest.importorskip("quantus")
    model = small_cnn()
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(6, 3, side, side, generator=gen)
    a = torch.randn(6, 1, side, side, generator=gen)
    y = model(x).argmax(1).detach()
    steps = 20
    metric = quantus.RegionPerturbation(patch_size=region, regions_evaluation=steps, order=order, abs=False,
                                        normalise=False, perturb_baseline=0.0, disable_warnings=True)
    theirs = np.asarray(metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a.numpy(),
                               softmax=False, device="cpu", channel_first=True))
    curves, _ = region_perturbation(model, x, y, a, region=region, steps=steps, order=order)
    ours = (curves[:, :1] - curves[:, 1:]).numpy()
    assert theirs.shape == ours.shape
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5 * np.abs(curves.numpy()).max())


def test_fills_and_seeds():
    model = small_cnn(1)
    x = torch.randn(3, 3, 16, 16)
    rel = torch.randn(3, 16, 16)
    m = region_grid(16, 16, 4)[1]
    channel_fill = torch.tensor([0.5, -1.0, 2.0])
    curves, _ = region_perturbation(model, x, [0, 1, 2], rel, region=4, steps=m, fill=channel_fill)
    full = model(channel_fill.reshape(1, 3, 1, 1).expand(3, 3, 16, 16)).detach()
    torch.testing.assert_close(curves[:, -1], full.gather(1, torch.tensor([[0], [1], [2]]))[:, 0].double())

    # uniform: one noise image per unit from its own seed (any batch position), inside value_range
    vr = (torch.tensor([-1.0, 0.0, 0.0]), torch.tensor([1.0, 0.5, 3.0]))
    a, _ = region_perturbation(model, x, [0, 1, 2], rel, region=4, steps=m, fill="uniform", value_range=vr,
                               seed=[7, 8, 9])
    b, _ = region_perturbation(model, x[[2, 0]], [2, 0], rel[[2, 0]], region=4, steps=m, fill="uniform",
                               value_range=vr, seed=[9, 7], batch_size=3)
    torch.testing.assert_close(b, a[[2, 0]])
    rec = Recorder()
    region_perturbation(rec, x[:1], [0], rel[:1], region=4, steps=m, fill="uniform", value_range=vr, seed=7)
    noise = rec.seen[-1][-1]
    for ch in range(3):
        assert vr[0][ch] <= noise[ch].min() and noise[ch].max() <= vr[1][ch]
    # random order: per-unit seeds make a unit's curve independent of the other units
    r1, _ = region_perturbation(model, x, [0, 1, 2], rel, region=4, steps=5, order="random", seed=[1, 2, 3])
    r2, _ = region_perturbation(model, x[1:], [1, 2], rel[1:], region=4, steps=5, order="random", seed=[2, 3])
    torch.testing.assert_close(r1[1:], r2)


def test_batch_size_changes_nothing():
    model, lin = linear_model(1, 9, 9)
    x = torch.randn(3, 1, 9, 9, dtype=torch.float64)
    rel = torch.randn(3, 9, 9, dtype=torch.float64)
    ref, _ = region_perturbation(model, x, [0, 1, 2], rel, region=3, steps=9, batch_size=1000)
    for bs in (1, 4, 7):
        got, _ = region_perturbation(model, x, [0, 1, 2], rel, region=3, steps=9, batch_size=bs)
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kwargs,message", [
    ({"steps": 17}, "steps must be in 1..16"),
    ({"steps": 0}, "steps must be in"),
    ({"order": "best"}, "order must be one of"),
    ({"region": 17}, "does not fit"),
    ({"fill": "mean"}, "fill must be a number"),
    ({"fill": "uniform"}, "needs value_range"),
    ({"fill": torch.zeros(2)}, "does not broadcast"),
    ({"fill": float("nan")}, "NaN"),
    ({"seed": [1, 2]}, "per-unit seeds"),
    ({"batch_size": 0}, "batch_size"),
])
def test_bad_arguments_are_refused(kwargs, message):
    model = small_cnn()
    args = {"region": 4, "steps": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        region_perturbation(model, torch.zeros(3, 3, 16, 16), [0, 1, 2], torch.randn(3, 16, 16), **args)


def test_bad_maps_are_refused():
    model = small_cnn()
    x = torch.zeros(2, 3, 16, 16)
    with pytest.raises(ValueError, match="relevance must be"):
        region_perturbation(model, x, [0, 1], torch.zeros(2, 15, 16), region=4, steps=2)
    bad = torch.zeros(2, 16, 16)
    bad[1, 3, 3] = float("inf")
    with pytest.raises(ValueError, match=r"units \[1\]"):
        region_perturbation(model, x, [0, 1], bad, region=4, steps=2)
    with pytest.raises(ValueError, match="targets"):
        region_perturbation(model, x, [0], torch.zeros(2, 16, 16), region=4, steps=2)


def test_region_size_scales_with_the_input():
    assert region_size(224) == 9 and region_size(64) == 3 and region_size(448) == 18 and region_size(8) == 1
