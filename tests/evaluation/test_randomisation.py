"""Cascading model-parameter randomisation (lrp.evaluation.randomisation): Spearman's ρ against scipy, the
cascade's order and copy semantics, and that a model-dependent map decorrelates while a model-free one does not."""

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

from lrp.evaluation.randomisation import cascading_randomisation, randomisable_layers
from lrp.evaluation.ranks import average_ranks, spearman


def _net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(),
                        nn.Flatten(), nn.Linear(6 * 10 * 10, 4)).eval()
    for m in net:
        if hasattr(m, "bias") and m.bias is not None:
            nn.init.uniform_(m.bias, -0.1, 0.1)
    return net.double()


def test_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, (6, 40)).astype(float)  # many ties
    b = a + rng.normal(0, 2, a.shape)
    b[0] = np.round(b[0])
    want = [spearmanr(x, y).statistic for x, y in zip(a, b)]
    np.testing.assert_allclose(spearman(a, b), want, rtol=1e-12)
    np.testing.assert_allclose(average_ranks(np.array([[3.0, 1.0, 3.0, 2.0]])), [[3.5, 1.0, 3.5, 2.0]])
    assert np.isnan(spearman(np.ones((1, 5)), np.arange(5.0)[None]))[0]


def test_layers_output_first():
    assert randomisable_layers(_net()) == ["5", "2", "0"]


def test_cascade_decorrelates_gradient_and_leaves_the_model_alone():
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(5, 3, 10, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0, 1, 2, 3, 0])
    df = cascading_randomisation(net, x, t, {"gradient": {}, "lrp_z": {}}, seed=0)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert len(df) == 4 * 2 * 5 and list(df["layer"].unique()) == ["(trained)", "5", "2", "0"]
    s = df.groupby(["stage", "analyzer"])["spearman"].mean()
    assert s.loc[0].eq(1.0).all()
    assert s.loc[(3, "gradient")] < 0.5  # every layer re-initialised: the map has little left of the trained one
    again = cascading_randomisation(net, x, t, {"gradient": {}, "lrp_z": {}}, seed=0)
    np.testing.assert_array_equal(df["spearman"].to_numpy(), again["spearman"].to_numpy())  # seeded
    # cumulative: stage 2 is the model with layer "5" AND layer "2" re-initialised (seeds 1 and 2), by hand
    import copy

    import lrp

    ref = copy.deepcopy(net)
    for stage, layer in ((1, "5"), (2, "2")):
        torch.manual_seed(stage)
        dict(ref.named_modules())[layer].reset_parameters()
    trained = lrp.attribute(net, x, t, "gradient").sum(1).reshape(5, -1).numpy()
    cascaded = lrp.attribute(ref, x, t, "gradient").sum(1).reshape(5, -1).numpy()
    got = df[(df["stage"] == 2) & (df["analyzer"] == "gradient")]["spearman"].to_numpy()
    np.testing.assert_allclose(got, spearman(trained, cascaded), rtol=1e-12)


def test_a_map_that_ignores_the_model_stays_at_one():
    """The check's point: an edge detector (here the input itself) keeps ρ = 1 however much of the model is
    destroyed, while gradient × input (lrp_z) does not."""
    from lrp import composites

    composites.register_function("test_input_only", lambda model, inputs, targets: inputs.clone())
    try:
        net = _net()
        x = torch.randn(4, 3, 10, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
        df = cascading_randomisation(net, x, torch.tensor([0, 1, 2, 3]), ["test_input_only", "lrp_z"], seed=3)
    finally:
        composites.REGISTRY.pop("test_input_only", None)
    last = df[df["stage"] == df["stage"].max()].groupby("analyzer")["spearman"].mean()
    assert last["test_input_only"] == pytest.approx(1.0)
    assert last["lrp_z"] < 0.9


def test_model_without_weights_is_refused():
    with pytest.raises(ValueError, match="conv or linear"):
        cascading_randomisation(nn.Sequential(nn.ReLU()), torch.zeros(1, 3, 4, 4), torch.tensor([0]), ["gradient"])
