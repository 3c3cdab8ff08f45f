"""The library refuses inputs, targets and options that would give wrong or meaningless maps (issue #17, items 4
and 5): each with a ValueError that names the culprit and says what to do; valid calls are unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

import lrp
from lrp import attribution, composites
from lrp.composites import Analyzer

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "my_analyzers.py"


def _net(n_conv: int = 1, classes: int = 3) -> nn.Sequential:
    """A small ReLU CNN on (3, 8, 8) inputs with `n_conv` convolutions (none: a dense net)."""
    torch.manual_seed(0)
    convs = [m for i in range(n_conv) for m in (nn.Conv2d(3 if i == 0 else 2, 2, 3, padding=1), nn.ReLU())]
    width = 2 if n_conv else 3
    return nn.Sequential(*convs, nn.Flatten(), nn.Linear(width * 8 * 8, classes)).eval().requires_grad_(False)


def _inputs(n: int = 4) -> torch.Tensor:
    return torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(1))


# ---------------------------------------------------------------------------------------------------
# inputs


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("analyzers", [["lrp_z"], ["lrp_cmp_alpha2_flat", "gradient"]])
def test_non_finite_inputs_are_refused_naming_the_samples(value, analyzers):
    """NaN used to fail the first call with 'atol must be greater than or equal to zero' and give NaN maps
    after; Inf gave NaN maps. The refused call leaves nothing behind: the next valid call is unchanged."""
    model, x = _net(), _inputs()
    bad = x.clone()
    bad[3, 0, 0, 0] = value
    bad[1, 2, 7, 7] = value
    for _ in range(2):  # the first call (the model's walk is verified on it) and a later one
        with pytest.raises(ValueError, match=r"^inputs\[1, 3\] contain NaN/Inf: check those images and their "
                                             r"preprocessing .*, or leave them out$"):
            lrp.attribute_many(model, bad, [0, 1, 2, 0], analyzers)
    maps = lrp.attribute_many(model, x, [0, 1, 2, 0], analyzers)
    fresh = lrp.attribute_many(_net(), x, [0, 1, 2, 0], analyzers)
    assert all(torch.equal(maps[n], fresh[n]) and torch.isfinite(maps[n]).all() for n in analyzers)


def test_many_non_finite_samples_are_summarised():
    x = _inputs(12)
    x[:, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"^inputs\[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, … \(12 in all\)\] contain NaN/Inf"):
        lrp.attribute(_net(), x, [0] * 12, "lrp_z")


@pytest.mark.parametrize("dtype, big", [(torch.float32, 3e38), (torch.float16, 6e4)])
def test_finite_inputs_whose_sum_overflows_pass_the_check(dtype, big):
    """The check sums the inputs (one fast pass); a sum that overflows on finite values is no NaN/Inf input."""
    x = torch.full((4, 3, 8, 8), big, dtype=dtype)
    assert not torch.isfinite(x.sum())  # the sum alone would be a false alarm
    checked, t, t_max = attribution._check_inputs(nn.Identity(), x, [0, 1, 2, 3])
    assert checked is x or torch.equal(checked, x)
    assert t.tolist() == [0, 1, 2, 3] and t.dtype == torch.int64 and t_max == 3


def test_integer_inputs_are_refused():
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"^inputs are torch\.uint8; the models take floating-point images: "
                                         r"convert them \(e\.g\. x\.float\(\)\) and preprocess them"):
        lrp.attribute(_net(), images, [0, 1], "lrp_z")


@pytest.mark.parametrize("shape, what", [((0, 3, 8, 8), r"no samples \(N = 0\)"),
                                         ((2, 3, 0, 8), r"no pixels \(shape \(2, 3, 0, 8\)\)")])
def test_empty_inputs_are_refused(shape, what):
    with pytest.raises(ValueError, match=rf"^inputs hold {what}: pass at least one \(C, H, W\) image$"):
        lrp.attribute_many(_net(), torch.zeros(shape), [0] * shape[0], ["lrp_z", "gradient"])


# ---------------------------------------------------------------------------------------------------
# targets


@pytest.mark.parametrize("targets, message", [
    ([0, 1, 2], r"^3 targets for 4 inputs: give one class index per input$"),
    (torch.zeros(4, 3), r"^12 targets for 4 inputs \(shape \(4, 3\): one-hot or score rows\? use "
                        r"targets\.argmax\(1\)\)"),
    ([0, 1.5, 2, 0], r"^targets\[1\] are not whole numbers \(1\.5\): give class indices"),
    (torch.tensor([0, 1, float("nan"), 0]), r"^targets\[2\] are not whole numbers \(nan\)"),
    ([0, -1, 2, -3], r"^targets\[1, 3\] are negative \(-1, -3\): give class indices ≥ 0$"),
    ([0, 1, 3, 7], r"^targets\[2, 3\] out of range \(3, 7\): the model has 3 outputs, so class indices are 0 "
                   r"to 2$"),
    (torch.tensor([True, False, True, True]), r"^targets are torch\.bool; give class indices"),
    (["a", "b", "c", "d"], r"^targets must be class indices, one integer per input; got list"),
], ids=["count", "one_hot", "fractional", "nan", "negative", "out_of_range", "bool", "strings"])
def test_bad_targets_are_refused(targets, message):
    with pytest.raises(ValueError, match=message):
        lrp.attribute_many(_net(), _inputs(), targets, ["lrp_cmp_alpha1", "guided_backprop"])


def test_whole_float_targets_give_the_same_maps_as_integers():
    model, x = _net(), _inputs()
    ints = lrp.attribute_many(model, x, torch.tensor([0, 1, 2, 0]), ["lrp_z", "gradient"])
    floats = lrp.attribute_many(model, x, [0.0, 1.0, 2.0, 0.0], ["lrp_z", "gradient"])
    assert all(torch.equal(ints[n], floats[n]) for n in ints)


def test_out_of_range_targets_are_refused_before_a_function_analyzer_runs(registry):
    """Without a rule-based analyzer there is no engine forward pass; one sample tells the outputs. On CUDA the
    function's own out-of-range gather would be a device-side assert that ends the process."""
    calls = []

    def logit(model, inputs, targets):
        calls.append(targets)
        return inputs * model(inputs).gather(1, targets[:, None]).view(-1, 1, 1, 1)

    composites.register_function("test_logit_times_input", logit)
    model, x = _net(), _inputs()
    with pytest.raises(ValueError, match=r"^targets\[0\] out of range \(5\): the model has 3 outputs"):
        lrp.attribute(model, x, [5, 0, 1, 2], "test_logit_times_input")
    assert calls == []
    assert lrp.attribute(model, x, [2, 0, 1, 2], "test_logit_times_input").shape == x.shape


# ---------------------------------------------------------------------------------------------------
# options


BUILTIN_OPTIONS = {
    "lrp_z": {"bias"}, "lrp_epsilon": {"bias", "epsilon"}, "lrp_alpha1": {"bias"}, "lrp_alpha2": {"bias"},
    "lrp_cmp_alpha1": {"bias", "epsilon"}, "lrp_cmp_alpha2": {"bias", "epsilon"},
    "lrp_cmp_alpha1_flat": {"bias", "epsilon", "flat_layers"},
    "lrp_cmp_alpha2_flat": {"bias", "epsilon", "flat_layers"},
    "lrp_cam": {"bias"}, "guided_backprop": {"bias"}, "pattern_attribution": {"bias", "patterns"},
    "gradient": {"bias"}, "baseline": {"bias"},
}


def test_each_builtin_takes_only_its_own_options():
    """bias, the model's α-β convention, is every rule-based analyzer's (one setting per model); the others
    only where the analyzer's rules read them."""
    assert {n: composites.option_names(composites.get(n)) for n in composites.BUILTIN} == BUILTIN_OPTIONS


@pytest.mark.parametrize("analyzer, option, takes", [
    ("gradient", {"epsilon": 5}, "bias"),
    ("lrp_z", {"epsilon": 0.5}, "bias"),
    ("lrp_cmp_alpha2", {"flat_layers": 2}, "bias, epsilon"),
    ("lrp_cam", {"flat_layers": 2}, "bias"),
    ("lrp_epsilon", {"patterns": {}}, "bias, epsilon"),
], ids=["gradient_epsilon", "lrp_z_epsilon", "cmp_flat_layers", "cam_flat_layers", "epsilon_patterns"])
def test_an_option_the_analyzer_does_not_take_is_refused(analyzer, option, takes):
    """These used to give the plain maps, as if the option had worked."""
    (key,) = option
    message = rf"^analyzer '{analyzer}': unknown option\(s\) \['{key}'\]; it takes: {takes}$"
    with pytest.raises(ValueError, match=message):
        lrp.attribute(_net(), _inputs(), [0, 1, 2, 0], analyzer, **option)
    with pytest.raises(ValueError, match=message):
        composites.check_options(analyzer, option)


def test_keyword_options_apply_to_the_analyzers_that_take_them():
    model, x, t = _net(), _inputs(), [0, 1, 2, 0]
    maps = lrp.attribute_many(model, x, t, ["lrp_z", "lrp_epsilon"], epsilon=0.5)
    assert torch.equal(maps["lrp_z"], lrp.attribute(model, x, t, "lrp_z"))
    assert torch.equal(maps["lrp_epsilon"], lrp.attribute(model, x, t, "lrp_epsilon", epsilon=0.5))
    assert not torch.equal(maps["lrp_epsilon"], lrp.attribute(model, x, t, "lrp_epsilon"))  # it did apply
    with pytest.raises(ValueError, match=r"^option\(s\) \['epsilon'\] are taken by none of the analyzers "
                                         r"\['lrp_z', 'gradient'\]; known: \['bias'\]$"):
        lrp.attribute_many(model, x, t, ["lrp_z", "gradient"], epsilon=0.5)


def test_flat_layers_beyond_the_models_convolutions_is_refused():
    model, x, t = _net(n_conv=13), _inputs(2), [0, 1]
    message = (r"^analyzer '{}': flat_layers = {}, but the model has 13 convolution\(s\); give 0 ≤ flat_layers "
               r"≤ 13 \(♭ on that many of the first convolutions\)$")
    with pytest.raises(ValueError, match=message.format("lrp_cmp_alpha1_flat", 999)):
        lrp.attribute(model, x, t, "lrp_cmp_alpha1_flat", flat_layers=999)
    with pytest.raises(ValueError, match=message.format("lrp_cmp_alpha2_flat", 14)):  # also as a shared option
        lrp.attribute_many(model, x, t, ["lrp_z", "lrp_cmp_alpha2_flat"], flat_layers=14)
    all_flat = lrp.attribute(model, x, t, "lrp_cmp_alpha1_flat", flat_layers=13)  # ♭ on every conv: allowed
    assert not torch.equal(all_flat, lrp.attribute(model, x, t, "lrp_cmp_alpha1_flat", flat_layers=12))
    assert torch.equal(lrp.attribute(model, x, t, "lrp_cmp_alpha1_flat", flat_layers=0),
                       lrp.attribute(model, x, t, "lrp_cmp_alpha1"))


def test_default_flat_layers_on_a_net_without_convolutions_still_works():
    model, x, t = _net(n_conv=0), _inputs(), [0, 1, 2, 0]
    assert torch.equal(lrp.attribute(model, x, t, "lrp_cmp_alpha1_flat"), lrp.attribute(model, x, t, "lrp_cmp_alpha1"))
    with pytest.raises(ValueError, match=r"flat_layers = 1, but the model has 0 convolution\(s\); give 0 ≤ "
                                         r"flat_layers ≤ 0"):
        lrp.attribute(model, x, t, "lrp_cmp_alpha1_flat", flat_layers=1)


@pytest.mark.parametrize("analyzer, options, message", [
    ("lrp_epsilon", {"epsilon": -1.0}, r"epsilon must be a finite number ≥ 0, got -1\.0"),
    ("lrp_epsilon", {"epsilon": float("nan")}, r"epsilon must be a finite number ≥ 0, got nan"),
    ("lrp_cmp_alpha1", {"epsilon": float("inf")}, r"epsilon must be a finite number ≥ 0, got inf"),
    ("lrp_epsilon", {"epsilon": "0.1"}, r"epsilon must be a finite number ≥ 0, got '0\.1'"),
    ("lrp_epsilon", {"epsilon": True}, r"epsilon must be a finite number ≥ 0, got True"),
    ("lrp_cmp_alpha2_flat", {"flat_layers": 1.5}, r"flat_layers must be a whole number ≥ 0 .*, got 1\.5"),
    ("lrp_cmp_alpha2_flat", {"flat_layers": -1}, r"flat_layers must be a whole number ≥ 0 .*, got -1"),
    ("lrp_cmp_alpha2_flat", {"flat_layers": True}, r"flat_layers must be a whole number ≥ 0 .*, got True"),
    ("lrp_cmp_alpha2_flat", {"flat_layers": "2"}, r"flat_layers must be a whole number ≥ 0 .*, got '2'"),
    ("lrp_z", {"bias": "caffe"}, r"bias must be one of innvestigate, toolbox, ignore, got 'caffe'"),
    ("pattern_attribution", {"patterns": "patterns.h5"}, r"patterns must be a \{layer name: tensor\} mapping"),
])
def test_bad_option_values_are_refused_before_the_model_runs(analyzer, options, message):
    with pytest.raises(ValueError, match=rf"^analyzer '{analyzer}': {message}"):
        composites.check_options(analyzer, options)
    with pytest.raises(ValueError, match=rf"^analyzer '{analyzer}': {message}"):
        lrp.attribute(_net(), _inputs(), [0, 1, 2, 0], analyzer, **options)


def test_malformed_analyzer_arguments_are_refused():
    model, x, t = _net(), _inputs(), [0, 1, 2, 0]
    with pytest.raises(ValueError, match=r"^the options of analyzer 'lrp_z' must be a mapping of option names "
                                         r"to values \(or None\), got int 5$"):
        lrp.attribute_many(model, x, t, {"lrp_z": 5})
    with pytest.raises(ValueError, match=r"^analyzer must be the name of one analyzer, got list \['lrp_z'\]; "
                                         r"for several, use attribute_many$"):
        lrp.attribute(model, x, t, ["lrp_z"])
    with pytest.raises(ValueError, match=r"^analyzer 'lrp_z': options must be a mapping"):
        composites.check_options("lrp_z", [("bias", "toolbox")])
    with pytest.raises(ValueError, match=r"^unknown analyzer 'lrp_zz'"):
        composites.check_options("lrp_zz", {})


def test_a_plugin_rule_analyzer_declares_the_engine_options_it_takes(registry, example):
    model, x, t = _net(), _inputs(), [0, 1, 2, 0]
    composites.register(Analyzer("test_eps_only", "logit", "lrp", lambda layer, n, o: composites.Epsilon(o["epsilon"]),
                                 {"unused": 1}, options=("epsilon",)))
    assert composites.option_names(composites.get("test_eps_only")) == {"bias", "epsilon", "unused"}
    assert torch.equal(lrp.attribute(model, x, t, "test_eps_only", epsilon=0.3),
                       lrp.attribute(model, x, t, "lrp_epsilon", epsilon=0.3))
    with pytest.raises(ValueError, match=r"^analyzer 'test_eps_only': unknown option\(s\) \['flat_layers'\]; it "
                                         r"takes: bias, epsilon, unused$"):
        lrp.attribute(model, x, t, "test_eps_only", flat_layers=1)
    with pytest.raises(ValueError, match=r"^analyzer 'test_gamma': options must be a tuple of engine options, of "
                                         r"epsilon, bias, flat_layers, patterns \(got \('gamma',\)\); declare your "
                                         r"own in defaults$"):
        composites.register(Analyzer("test_gamma", "logit", "lrp", lambda layer, n, o: composites.Flat(),
                                     options=("gamma",)))
    assert "test_gamma" not in composites.REGISTRY
    # without `options` (the example's LRP-γ) a plugin takes every engine option, and flat_layers is still bounded
    with pytest.raises(ValueError, match=r"^analyzer 'lrp_cmp_gamma_flat': flat_layers = 3, but the model has 1 "):
        lrp.attribute(model, x, t, "lrp_cmp_gamma_flat", flat_layers=3)


CONFIGS = sorted(p for p in (ROOT / "config").glob("*.yaml") if p.name != "schema.yaml")


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_the_shipped_configs_options_pass_check_options(config, example):
    analyzers = yaml.safe_load(config.read_text())["analyzers"]
    for name, options in analyzers.items():
        composites.check_options(name, options)
