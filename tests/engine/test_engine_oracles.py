"""Every analyzer against the reference tools the paper used (iNNvestigate 2.1.2, LRP Toolbox 1.3.1).

Tolerance: max |Δ| ≤ 1e-5 · max |R| (the issue's acceptance bound).
"""

import numpy as np
import pytest
import torch

import lrp
from lrp.composites import Analyzer, _uniform, register
from lrp.rules import AlphaBeta, Epsilon, Flat

from oracle_models import innvestigate_toy, toolbox_toy

# Custom rule assignments the oracle holds beyond Table 1 (also shows how users add analyzers).
register(Analyzer("oracle_flat", "logit", "lrp", _uniform(lambda o: Flat())))
register(Analyzer("oracle_z_dense_a1_conv_flat_input", "logit", "lrp",
                  lambda layer, n, o: Epsilon(0.0) if layer.kind == "linear"
                  else Flat() if layer.conv_index == 0 else AlphaBeta(1, 0, o["bias"])))

INNVESTIGATE = {
    "lrp.z": ("lrp_z", {}),
    "lrp.epsilon": ("lrp_epsilon", {}),
    "lrp.epsilon_0.1": ("lrp_epsilon", {"epsilon": 0.1}),
    "lrp.alpha_1_beta_0": ("lrp_alpha1", {}),
    "lrp.alpha_1_beta_0_IB": ("lrp_alpha1", {"bias": "ignore"}),
    "lrp.alpha_2_beta_1": ("lrp_alpha2", {}),
    "lrp.alpha_2_beta_1_IB": ("lrp_alpha2", {"bias": "ignore"}),
    "lrp.flat": ("oracle_flat", {}),
    "lrp.sequential_preset_a": ("lrp_cmp_alpha1", {}),
    "lrp.sequential_preset_b": ("lrp_cmp_alpha2", {}),
    "lrp.sequential_preset_a_flat": ("lrp_cmp_alpha1_flat", {}),
    "lrp.sequential_preset_b_flat": ("lrp_cmp_alpha2_flat", {}),
    "lrp.sequential_preset_b_flat_until_idx2": ("lrp_cmp_alpha2_flat", {"flat_layers": 2}),
    "custom.cam_z_dense_flat_conv": ("lrp_cam", {}),
    "custom.z_dense_a1b0_conv_flat_input": ("oracle_z_dense_a1_conv_flat_input", {}),
    "guided_backprop": ("guided_backprop", {}),
    "gradient": ("gradient", {}),
}

TOOLBOX = {
    "eps0.1_all": ("lrp_epsilon", {"epsilon": 0.1}),
    "alphabeta_a1_all": ("lrp_alpha1", {}),
    "alphabeta_a2_all": ("lrp_alpha2", {}),
    "cmp_a1": ("lrp_cmp_alpha1", {}),
    "cmp_a2_flat": ("lrp_cmp_alpha2_flat", {}),
}


def _close(R, ref):
    R = R.detach().cpu().numpy()
    assert R.shape == ref.shape
    err = np.abs(R - ref).max() / np.abs(ref).max()
    assert err <= 1e-5, f"max |Δ| = {err:.2e} · max |R|"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("key", list(INNVESTIGATE))
def test_innvestigate_oracle(key, dtype):
    model, x, cls, maps, logits = innvestigate_toy(dtype)
    analyzer, opts = INNVESTIGATE[key][0], dict(INNVESTIGATE[key][1])
    _close(lrp.attribute(model, x, cls, analyzer, bias=opts.pop("bias", "innvestigate"), **opts), maps[key])


@pytest.mark.parametrize("key", list(TOOLBOX))
def test_toolbox_oracle(key):
    model, x, cls, maps, logits = toolbox_toy()
    analyzer, opts = TOOLBOX[key]
    _close(lrp.attribute(model, x, cls, analyzer, bias="toolbox", **opts), maps[key])


def test_attribute_many_equals_one_by_one():
    model, x, cls, maps, _ = innvestigate_toy()
    spec = {a: o for a, o in INNVESTIGATE.values()}  # last options per name win; fine for this check
    many = lrp.attribute_many(model, x, cls, spec)
    for name, opts in spec.items():
        torch.testing.assert_close(many[name], lrp.attribute(model, x, cls, name, **opts), rtol=0, atol=0)


def test_bias_conventions_really_differ():
    """The α-β bias convention matters on this model: the two oracles are not interchangeable."""
    model, x, cls, maps, _ = innvestigate_toy()
    a = lrp.attribute(model, x, cls, "lrp_alpha2", bias="innvestigate")
    b = lrp.attribute(model, x, cls, "lrp_alpha2", bias="toolbox")
    assert (a - b).abs().max() > 0.1 * a.abs().max()
