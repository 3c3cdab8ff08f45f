"""The rules' elementwise steps (lrp.kernels): hand-computed cases, and the fused (torch.compile) steps
against the eager ones, alone and through whole analyzers.

Why these references: the eager steps are what the oracle and zennit tests validate; a fused step must give
the same numbers, so every analyzer inherits those tests. Hand-computed cases pin the conventions both share
(exact zeros → 1e-7, sign(0) = +1, the stacked [α s⁺, −β s⁻] layout)."""

from __future__ import annotations

import pytest
import torch

import lrp
from lrp import kernels
from lrp.kernels import EAGER, SAFE_EPS, Fused, FusedKernelError

from compiling import skip_unless_compiles
from test_engine_properties import ALL, _all, _data, _materialise, _targets, alexnet_like, vgg_like

IMPLS = [EAGER, kernels.FUSED]
IDS = ["eager", "fused"]


TOL = {torch.float32: 1e-6, torch.float64: 1e-15}


def _close(a, b, dtype):
    torch.testing.assert_close(a, b, rtol=TOL[dtype], atol=0)


@pytest.mark.parametrize("k", IMPLS, ids=IDS)
def test_ratio_by_hand(k):
    skip_unless_compiles(k)
    R = torch.tensor([[1.0, 2.0, -3.0, 4.0]])
    z = torch.tensor([[2.0, 0.0, -1.0, -0.5]])
    b = torch.tensor([[0.0, 0.0, 1.0, 0.5]])  # 3rd and 4th denominators become exact zeros with the bias
    s = k.ratio(R, z, b, 2.0)
    assert torch.equal(s, torch.tensor([[1.0, 4.0 / SAFE_EPS, -6.0 / SAFE_EPS, 8.0 / SAFE_EPS]]))
    assert torch.equal(k.ratio(R, z, None, 1.0), torch.tensor([[0.5, 2.0 / SAFE_EPS, 3.0, -8.0]]))
    assert torch.equal(z, torch.tensor([[2.0, 0.0, -1.0, -0.5]]))  # inputs untouched (z is often cached)


@pytest.mark.parametrize("k", IMPLS, ids=IDS)
def test_ratio_pair_by_hand(k):
    """[α R / (z⁺ + b⁺), −β R / (z⁻ + b⁻)] on the channel axis; z⁻ = min(z − b − z⁺, 0) from z."""
    skip_unless_compiles(k)
    R = torch.tensor([[2.0, 6.0, 4.0]])
    zp = torch.tensor([[1.0, 3.0, 2.0]])
    # z − b − z⁺ = [−1, 1.5, −1.5]: the second clamps to 0 (round-off of the wrong sign)
    z = torch.tensor([[0.5, 5.0, 0.0]])
    b = torch.tensor([[0.5, 0.5, -0.5]])
    bp, bn = b.clamp(min=0), b.clamp(max=0)
    expect = torch.tensor([[2.0 * 2 / 1.5, 2.0 * 6 / 3.5, 2.0 * 4 / 2.0,
                            -1.0 * 2 / -1.0, -1.0 * 6 / SAFE_EPS, -1.0 * 4 / -2.0]])
    _close(k.ratio_pair_from_z(R, z, zp, b, bp, bn, 2.0, 1.0), expect, torch.float32)
    zn = torch.tensor([[-1.0, 0.0, -1.5]])
    _close(k.ratio_pair(R, zp, zn, bp, bn, 2.0, 1.0), expect, torch.float32)


@pytest.mark.parametrize("k", IMPLS, ids=IDS)
def test_eps_ratio_by_hand(k):
    skip_unless_compiles(k)
    R = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    z = torch.tensor([[0.0, -0.0, 0.5, -0.5]])
    # sign(±0) = +1: both zeros get +ε
    _close(k.eps_ratio(R, z, 0.25), torch.tensor([[4.0, 4.0, 1 / 0.75, -1 / 0.75]]), torch.float32)
    _close(k.eps_ratio(R, z, 0.0), torch.tensor([[1 / SAFE_EPS, 1 / SAFE_EPS, 2.0, -2.0]]), torch.float32)


def _inputs(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    R, z, zp = (torch.randn(shape, generator=g, dtype=dtype) for _ in range(3))
    zp = zp.abs()
    zp.view(-1)[::7] = 0  # exact zeros, with and without the bias
    z.view(-1)[::5] = 0
    c = shape[1]
    b = torch.randn((1, c) + (1,) * (len(shape) - 2), generator=g, dtype=dtype)
    b.view(-1)[::3] = 0
    return R, z, zp, b


@pytest.mark.parametrize("shape,dtype", [((3, 5, 7, 6), torch.float32), ((3, 5, 7, 6), torch.float64),
                                         ((4, 9), torch.float32), ((1, 4, 3, 3), torch.float32)],
                         ids=["conv", "conv-float64", "dense", "batch1"])
def test_fused_steps_equal_eager(shape, dtype):
    skip_unless_compiles()
    R, z, zp, b = _inputs(shape, dtype)
    F = kernels.FUSED
    for bias in (None, b):
        bp = None if bias is None else bias.clamp(min=0)
        bn = None if bias is None else bias.clamp(max=0)
        for scale in (1.0, 2.0):
            _close(F.ratio(R, zp, bp, scale), EAGER.ratio(R, zp, bp, scale), dtype)
        zn = -zp.flip(0)
        _close(F.ratio_pair(R, zp, zn, bp, bn, 2.0, 1.0), EAGER.ratio_pair(R, zp, zn, bp, bn, 2.0, 1.0), dtype)
        _close(F.ratio_pair_from_z(R, z, zp, bias, bp, bn, 2.0, 1.0),
               EAGER.ratio_pair_from_z(R, z, zp, bias, bp, bn, 2.0, 1.0), dtype)
    for eps in (0.0, 0.1):
        _close(F.eps_ratio(R, z, eps), EAGER.eps_ratio(R, z, eps), dtype)
    assert torch.isfinite(F.eps_ratio(R, z, 0.0)).all()


@pytest.mark.parametrize("bias", ["innvestigate", "toolbox", "ignore"])
@pytest.mark.parametrize("arch", ["vgg_like", "alexnet_like"])
def test_fused_analyzers_equal_eager(arch, bias):
    """Every built-in analyzer, fused against eager (float32, non-square, grouped convs in alexnet_like)."""
    skip_unless_compiles()
    if arch == "alexnet_like":
        model, x = alexnet_like(), _data((2, 3, 67, 83), dtype=torch.float32)
    else:
        model, x = vgg_like(dtype=torch.float32), _data((3, 3, 16, 20), dtype=torch.float32)
    model = _materialise(model, x)
    t = _targets(model, x)
    eager = _all(model, x, t, bias=bias, flat_layers=2)
    fused = _all(model, x, t, bias=bias, flat_layers=2, fused=True)
    for name in ALL:
        scale = float(eager[name].abs().max())
        torch.testing.assert_close(fused[name], eager[name], rtol=1e-5, atol=1e-6 * scale, msg=name)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_fused_on_cuda_equals_cpu():
    skip_unless_compiles()
    x = _data((3, 3, 67, 83), dtype=torch.float32)
    model = _materialise(alexnet_like(), x)
    t = _targets(model, x)
    cpu = _all(model, x, t, bias="toolbox")
    gpu = _all(model.cuda(), x.cuda(), t.cuda(), bias="toolbox", fused=True)
    for name in ALL:
        scale = float(cpu[name].abs().max())
        torch.testing.assert_close(gpu[name].cpu(), cpu[name], rtol=1e-4, atol=1e-5 * scale, msg=name)


@pytest.mark.parametrize("fused, device, expected", [
    (None, "cpu", False), ("auto", "cpu", False), (None, "cuda", True), ("auto", torch.device("cuda", 1), True),
    (True, "cpu", True), (False, "cuda", False)])
def test_fused_default_is_per_device(fused, device, expected):
    """The default (None / config "auto") fuses on CUDA only: measured faster there; on CPU the gain is smaller
    than a new process's compile time."""
    assert kernels.resolve(fused, device) is expected


def test_fused_must_be_a_bool_or_auto():
    with pytest.raises(TypeError, match=r"fused must be True, False, or None / 'auto'.*'yes'"):
        kernels.resolve("yes", "cpu")


def _selected_kernels(monkeypatch, model, x, t, **kw):
    """Which implementation the recorded pass of attribute_many hands the rules."""
    import lrp.attribution

    seen = []
    trace = lrp.attribution.forward_trace
    monkeypatch.setattr(lrp.attribution, "forward_trace", lambda *a: seen.append(trace(*a)) or seen[-1])
    lrp.attribute_many(model, x, t, ["lrp_cmp_alpha2"], **kw)
    return [tr.kernels.name for tr in seen]


def test_cpu_inputs_run_eager_by_default(monkeypatch):
    x = _data((2, 3, 16, 16), dtype=torch.float32)
    model = _materialise(vgg_like(dtype=torch.float32), x)
    t = _targets(model, x)
    assert _selected_kernels(monkeypatch, model, x, t) == ["eager"]
    assert _selected_kernels(monkeypatch, model, x, t, fused=False) == ["eager"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_inputs_run_fused_by_default(monkeypatch):
    x = _data((2, 3, 16, 16), dtype=torch.float32)
    model = _materialise(vgg_like(dtype=torch.float32), x).cuda()
    x = x.cuda()
    t = _targets(model, x)
    assert _selected_kernels(monkeypatch, model, x, t) == ["fused"]
    assert _selected_kernels(monkeypatch, model, x, t, fused=False) == ["eager"]


@pytest.mark.parametrize("bias", ["innvestigate", "toolbox", "ignore"])
def test_stacked_and_split_alphabeta_pair_agree(monkeypatch, bias):
    """αβ (β ≠ 0) after a ReLU: one transposed convolution of [α s⁺, −β s⁻] against [w⁺; w⁻] (CPU) or two
    (other devices, lrp.rules.STACKED_PAIR_DEVICES). Both are run here on CPU; the split one makes one more
    transposed call per post-ReLU conv, so the switch is seen to take effect."""
    import lrp.rules

    x = _data((3, 3, 16, 20))
    model = _materialise(vgg_like(), x)
    t = _targets(model, x)
    calls = []
    transpose = lrp.rules.linear_transpose
    monkeypatch.setattr(lrp.rules, "linear_transpose", lambda *a: calls.append(1) or transpose(*a))
    names = ["lrp_alpha2", "lrp_cmp_alpha2", "lrp_cmp_alpha2_flat"]
    maps, n_calls = {}, {}
    for devices in ({"cpu"}, set()):
        monkeypatch.setattr(lrp.rules, "STACKED_PAIR_DEVICES", devices)
        calls.clear()
        maps[bool(devices)] = lrp.attribute_many(model, x, t, names, bias=bias)
        n_calls[bool(devices)] = len(calls)
    post_relu_convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) - 1
    # per analyzer whose αβ layers are not shared: lrp_alpha2 and lrp_cmp_alpha2 share nothing above the dense
    # layers (ε vs αβ there), so each does its post-ReLU convs; lrp_cmp_alpha2_flat shares all but layer 1
    assert n_calls[False] - n_calls[True] == 2 * post_relu_convs
    for name in names:
        scale = float(maps[True][name].abs().max())
        torch.testing.assert_close(maps[False][name], maps[True][name], rtol=1e-12, atol=1e-13 * scale, msg=name)


def test_a_step_that_cannot_compile_names_the_step_and_the_way_out(monkeypatch):
    def broken_compile(fn, **kw):
        def run(*args):
            raise RuntimeError("Compiler: cc not found\nmore detail")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    k = Fused()
    R = torch.ones(2, 3)
    with pytest.raises(FusedKernelError, match=r"could not compile or run eps_ratio on cpu \(RuntimeError: "
                                               r"Compiler: cc not found\).*fused=False.*attribution.fused: false"):
        k.eps_ratio(R, R, 0.1)


def test_inputs_that_are_wrong_anyway_get_pytorchs_own_error():
    """A shape mismatch is the caller's problem, not the compiler's: the eager step's error, unwrapped."""
    skip_unless_compiles()
    with pytest.raises(RuntimeError, match="size of tensor") as err:
        kernels.Fused().ratio(torch.ones(2, 3), torch.ones(2, 4), None, 1.0)
    assert not isinstance(err.value, FusedKernelError)


def test_past_the_recompile_limit_a_step_runs_eagerly_with_a_warning():
    skip_unless_compiles()
    k = Fused()
    k.RECOMPILE_LIMIT = 1  # (the variants compiled so far in this process count too)
    R32, z32 = torch.randn(3, 4), torch.randn(3, 4)
    R64, z64 = torch.randn(2, 3, 5, dtype=torch.float64), torch.randn(2, 3, 5, dtype=torch.float64)
    with pytest.warns(UserWarning, match=r"eps_ratio reached 1 compiled variants .* run eagerly \(same maps\)"):
        out = [k.eps_ratio(R32, z32, 0.3), k.eps_ratio(R64, z64, 0.3)]
    _close(out[0], EAGER.eps_ratio(R32, z32, 0.3), torch.float32)
    _close(out[1], EAGER.eps_ratio(R64, z64, 0.3), torch.float64)


def test_attribute_passes_fused_through(monkeypatch):
    """`attribute` (one analyzer) selects the kernels as `attribute_many` does."""
    skip_unless_compiles()
    model, x = vgg_like(dtype=torch.float32), _data((2, 3, 16, 16), dtype=torch.float32)
    model = _materialise(model, x)
    t = _targets(model, x)
    used = []
    for k in IMPLS:
        monkeypatch.setattr(k, "ratio", (lambda real: lambda *a: used.append(real.__self__.name) or real(*a))(k.ratio))
    lrp.attribute(model, x, t, "lrp_cmp_alpha1", fused=True)
    lrp.attribute(model, x, t, "lrp_cmp_alpha1")
    n = len(used) // 2
    assert n > 0 and used == ["fused"] * n + ["eager"] * n


@pytest.mark.parametrize("case", ["zero_image", "dead_relus"])
def test_fused_maps_stay_finite_with_zero_denominators(case):
    skip_unless_compiles()
    model, x = vgg_like(dtype=torch.float32), _data((2, 3, 16, 16), dtype=torch.float32)
    model = _materialise(model, x)
    if case == "zero_image":
        x = torch.zeros_like(x)
    else:
        with torch.no_grad():
            model[0].bias.fill_(-100.0)  # every first-layer ReLU dead
    t = torch.tensor([0, 1])
    for name, R in _all(model, x, t, bias="toolbox", fused=True).items():
        assert torch.isfinite(R).all(), name
