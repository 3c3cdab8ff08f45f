"""Your own analyzers: the plugin loader, function analyzers, the config check, and the shipped example
(examples/my_analyzers.py: LRP-γ against zennit's Gamma rule, Integrated Gradients against its completeness
property and an exact linear case). The pipeline run with the example is in test_workflow.py (ci.yaml)."""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn
from zennit import composites as zc
from zennit import rules as zr
from zennit.types import Convolution

import lrp
from lrp import composites, plugins
from lrp.pipeline.config import ConfigError, check_config, fill_defaults
from lrp.pipeline.provenance import source_hash

from test_engine_zennit import STAB, _base, _build, _onehot, assert_close_per_sample, zennit_attribution

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "my_analyzers.py"


def _plugin(tmp_path, body: str, name: str = "plug.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


# ---------------------------------------------------------------------------------------------------
# the loader


def test_example_loads_once_by_path_or_module_name(example, monkeypatch):
    assert example == ["lrp_cmp_gamma_flat", "integrated_gradients"]
    monkeypatch.syspath_prepend(str(ROOT))
    assert plugins.load(["examples.my_analyzers"]) == example  # the same file: not imported twice
    for name in example:
        assert composites.get(name).source == str(EXAMPLE)
    assert composites.label("lrp_cmp_gamma_flat") == "LRP_CMP:γ+♭"


@pytest.mark.parametrize("spec, message", [
    ("nowhere/mine.py", "plugins[0]: plugin file 'nowhere/mine.py' does not exist"),
    ("no_such_module_xyz", "plugins[0]: no module named 'no_such_module_xyz'"),
    ("", "plugins[0]: expected a file path or module name"),
])
def test_missing_plugin_is_named(spec, message):
    with pytest.raises(plugins.PluginError, match=message.replace("[", r"\[").replace("]", r"\]")):
        plugins.load([spec])


def test_a_plugin_that_fails_leaves_nothing_registered(tmp_path, registry):
    path = _plugin(tmp_path, """
        from lrp.composites import register_function
        register_function("half_done", lambda model, x, t: x)
        raise RuntimeError("broken on purpose")
    """)
    with pytest.raises(plugins.PluginError) as e:
        plugins.load([str(path)])
    assert str(path) in str(e.value) and "RuntimeError: broken on purpose" in str(e.value)
    assert "half_done" not in composites.names()


@pytest.mark.parametrize("body, message", [
    ("x = 1\n", "registers no analyzer"),
    ("from lrp.composites import register_function\nregister_function('My-IG', lambda m, x, t: x)\n",
     "cannot be config keys"),
    ("from lrp.composites import register_function\nregister_function('lrp_z', lambda m, x, t: x)\n",
     "'lrp_z' exists already (built in)"),
    ("def broken(:\n", "SyntaxError"),
    ("import dataclasses\nfrom lrp import composites\n"
     "composites.register(dataclasses.replace(composites.get('lrp_z'), doc='mine'), replace=True)\n",
     "replaces existing analyzer(s) ['lrp_z']"),
    ("from lrp.composites import register_function\nregister_function('mine', lambda m, x, t: x, label='LRP_z')\n",
     "gives labels that other analyzers have (mine -> 'LRP_z' (also lrp_z))"),
])
def test_unusable_plugins_are_refused(tmp_path, registry, body, message):
    path = _plugin(tmp_path, body)
    before = dict(composites.REGISTRY)
    with pytest.raises(plugins.PluginError) as e:
        plugins.load([str(path)])
    assert message in str(e.value) and str(path) in str(e.value)
    assert composites.REGISTRY == before


def test_a_plugin_imports_modules_beside_it_and_survives_a_reimport(tmp_path, registry, example, monkeypatch):
    _plugin(tmp_path, "def double(x):\n    return 2 * x\n", name="helpers_beside.py")
    path = _plugin(tmp_path, """
        from helpers_beside import double
        from lrp.composites import register_function
        register_function("doubled_input", lambda model, x, t: double(x))
    """)
    assert plugins.load([str(path)]) == ["doubled_input"]
    monkeypatch.syspath_prepend(str(ROOT))
    import importlib

    import examples.my_analyzers as mine  # loaded by path above: the same module, nothing registered twice
    assert composites.get("integrated_gradients").function is mine.integrated_gradients
    importlib.reload(mine)  # a re-import from the same file replaces its own analyzers
    assert composites.get("integrated_gradients").function is mine.integrated_gradients
    assert composites.get("integrated_gradients").source == str(EXAMPLE)


@pytest.mark.parametrize("order", [("aplug.py", "bplug.py"), ("bplug.py", "aplug.py")])
def test_plugins_may_import_each_other(tmp_path, registry, order):
    """b imports a (a helper it shares), both are listed: each registers its own analyzers, once."""
    folder = tmp_path / "p"
    folder.mkdir()
    _plugin(folder, """
        import functools
        from lrp.composites import register_function
        def scale(model, x, t, by=1.0):
            return by * x
        register_function("a_scaled", functools.partial(scale), defaults={"by": 2.0})
    """, name="aplug.py")
    _plugin(folder, """
        import aplug
        from lrp.composites import register_function
        register_function("b_scaled", lambda model, x, t: aplug.scale(model, x, t, by=3.0))
    """, name="bplug.py")
    names = plugins.load([str(folder / f) for f in order])
    assert sorted(names) == ["a_scaled", "b_scaled"] and len(names) == 2
    assert composites.get("a_scaled").source == str(folder / "aplug.py")
    assert composites.get("b_scaled").source == str(folder / "bplug.py")


def test_another_file_cannot_take_over_a_plugins_analyzer(registry, example):
    mine = composites.get("integrated_gradients")
    with pytest.raises(ValueError, match=f"exists already \\(registered by {EXAMPLE}\\)"):
        composites.register_function("integrated_gradients", mine.function, defaults={"steps": 1}, label="X")
    with pytest.raises(plugins.PluginError, match="is part of lrp itself"):
        plugins.load([str(ROOT / "lrp" / "composites.py")])


def test_registration_is_checked(registry):
    from dataclasses import dataclass

    with pytest.raises(ValueError, match="start must be one of"):
        composites.register(composites.Analyzer("typo_start", "logits", "lrp", lambda layer, n, o: None))
    with pytest.raises(ValueError, match=r"cannot be called as \(model, inputs, targets"):
        composites.register_function("typo_option", lambda model, x, t, steps=3: x, defaults={"step": 3})

    @dataclass  # not frozen: unhashable
    class Mutable(lrp.rules.Rule):
        def backward(self, layer, trace, R, ctx):
            return R

    composites.register(composites.Analyzer("mutable_rule", "logit", "lrp", lambda layer, n, o: Mutable()))
    with pytest.raises(ValueError, match="rule Mutable is not hashable; declare it @dataclass"):
        lrp.attribute(_small_cnn(), torch.randn(1, 3, 16, 16), torch.tensor([0]), "mutable_rule")


def test_rules_and_functions_must_not_modify_what_others_share(registry):
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class HalveInPlace(lrp.rules.Rule):
        def backward(self, layer, trace, R, ctx):
            return lrp.rules.Epsilon().backward(layer, trace, R.mul_(0.5), ctx)

    # identical to lrp_z above the first conv, so the two share R there and branch at it
    composites.register(composites.Analyzer("halving", "logit", "lrp", lambda layer, n, o: HalveInPlace()
                                            if layer.conv_index == 0 else lrp.rules.Epsilon()))
    model, x, t = _small_cnn(), torch.randn(2, 3, 16, 16), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="HalveInPlace at layer '0' .* modified its input relevance in place"):
        lrp.attribute_many(model, x, t, ["halving", "lrp_z"])
    composites.register_function("edits_inputs", lambda model, x, t: x.mul_(1.0))
    composites.register_function("trains", lambda model, x, t: model.train() and x.clone())
    with pytest.raises(ValueError, match="'edits_inputs' .*modified the inputs in place"):
        lrp.attribute(model, x, t, "edits_inputs")
    with pytest.raises(ValueError, match="'trains' .*modified the model's train/eval modes"):
        lrp.attribute(model, x, t, "trains")
    model.eval()
    composites.register_function("trains_dropout", lambda model, x, t: model[1].train() and x.clone())
    with pytest.raises(ValueError, match="'trains_dropout' .*modified the model's train/eval modes"):
        lrp.attribute(model, x, t, "trains_dropout")
    model.eval()
    composites.register_function("hooks", lambda model, x, t: model[0].register_forward_hook(print) and x.clone())
    with pytest.raises(ValueError, match="'hooks' .*modified the model's hooks"):
        lrp.attribute(model, x, t, "hooks")
    model[0]._forward_hooks.clear()
    composites.register_function("edits_weights", lambda model, x, t: (model[0].weight.mul_(1.0), x.clone())[1])
    with pytest.raises(ValueError, match="'edits_weights' .*modified the model's parameters or buffers"):
        lrp.attribute(model, x, t, "edits_weights")
    composites.register_function("raises", lambda model, x, t: 1 / 0)
    with pytest.raises(lrp.attribution.AnalyzerError, match="'raises' .*failed: ZeroDivisionError"):
        lrp.attribute(model, x, t, "raises")


# ---------------------------------------------------------------------------------------------------
# function analyzers in attribute_many


def _small_cnn(dtype=torch.float32):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 5)).to(dtype).eval().requires_grad_(False)


def test_function_analyzers_run_beside_the_engine(example):
    model, x, t = _small_cnn(), torch.randn(2, 3, 16, 16), torch.tensor([1, 3])
    maps = lrp.attribute_many(model, x, t, {"integrated_gradients": {"steps": 4}, "lrp_z": {},
                                            "lrp_cmp_gamma_flat": {}}, bias="toolbox")
    fn = composites.get("integrated_gradients").function
    assert torch.equal(maps["integrated_gradients"], fn(model, x, t, steps=4))
    assert torch.equal(maps["lrp_z"], lrp.attribute(model, x, t, "lrp_z"))  # unchanged by the company it keeps
    with pytest.raises(ValueError, match=r"'integrated_gradients': unknown option\(s\) \['epsilon'\]"):
        lrp.attribute(model, x, t, "integrated_gradients", epsilon=0.1)
    with pytest.raises(ValueError, match=r"\['flat_layer'\] are taken by none of the analyzers"):
        lrp.attribute_many(model, x, t, ["lrp_z", "integrated_gradients"], flat_layer=2)  # a typo is no no-op


@pytest.mark.parametrize("fn, message", [
    (lambda model, x, t: x[:, :1], r"returned \(2, 1, 16, 16\); expected a tensor of the inputs' shape"),
    (lambda model, x, t: x.numpy(), "returned ndarray"),
    (lambda model, x, t: x * float("nan"), "non-finite"),
    (lambda model, x, t: x.double(), "returned torch.float64"),
])
def test_function_analyzer_output_is_checked(registry, fn, message):
    composites.register_function("bad_analyzer", fn)
    with pytest.raises(ValueError, match=message):
        lrp.attribute(_small_cnn(), torch.randn(2, 3, 16, 16), torch.tensor([0, 1]), "bad_analyzer")


# ---------------------------------------------------------------------------------------------------
# the example's analyzers against independent references


def _zennit_gamma_flat(conv_names, gamma):
    return zc.NameLayerMapComposite(
        name_map=[((conv_names[0],), zr.Flat(stabilizer=STAB))],
        layer_map=_base() + [(Convolution, zr.Gamma(gamma=gamma, stabilizer=1e-6)),
                             (nn.Linear, zr.Epsilon(epsilon=0.1))])


@pytest.mark.parametrize("arch", ["vgg16@64", "alexnet@128"])
def test_gamma_matches_zennit(example, arch):
    """zennit 0.5.1's Gamma is the generalised rule (Andéol et al. 2021); on non-negative inputs it reduces to
    Montavon's for every neuron with z > 0, and relevance reaches no other neuron under these rules (it is
    proportional to the activation above). ♭ on the first conv keeps the signed image out of it."""
    model, x, targets, _, conv_names = _build(arch)
    ours = lrp.attribute(model, x, targets, "lrp_cmp_gamma_flat")
    ref = zennit_attribution(model, x, _zennit_gamma_flat(conv_names, 0.25), lambda out: _onehot(out, targets) * out)
    assert_close_per_sample(ours, ref, what=f"{arch} lrp_cmp_gamma_flat")
    other = lrp.attribute(model, x, targets, "lrp_cmp_gamma_flat", gamma=1.0)  # the comparison can fail
    with pytest.raises(AssertionError):
        assert_close_per_sample(other, ref)


def test_gamma_refuses_a_signed_input(example):
    with pytest.raises(ValueError, match="LRP-γ needs a non-negative input, but layer '0'"):
        lrp.attribute(_small_cnn(), torch.randn(1, 3, 16, 16), torch.tensor([0]), "lrp_cmp_gamma_flat",
                      flat_layers=0)


def test_integrated_gradients_is_complete(example):
    """Completeness (Sundararajan et al. 2017): Σ IG = f_t(x) − f_t(0). The midpoint rule converges on the
    piecewise linear path roughly like 1/steps, unevenly (worst of these 4 samples: 16 % off at 16 steps, 3.9 %
    at 256, 0.7 % at 1024, 0.11 % at 4096); on a linear model it is exact for any number of steps."""
    model, x, t = _small_cnn(torch.float64), torch.randn(4, 3, 16, 16, dtype=torch.float64), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        gap = (model(x) - model(torch.zeros_like(x))).gather(1, t[:, None]).ravel()
    tol = 5e-3 * float(gap.abs().max())  # the error shrinks like 1/steps (ReLU and max-pool kinks): ~1e-3 here
    total = lrp.attribute(model, x, t, "integrated_gradients", steps=4096).sum((1, 2, 3))
    assert torch.allclose(total, gap, rtol=0, atol=tol)
    coarse = lrp.attribute(model, x, t, "integrated_gradients", steps=1).sum((1, 2, 3))
    assert not torch.allclose(coarse, gap, rtol=0, atol=tol)  # the check can fail
    torch.manual_seed(1)
    linear = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 14 * 14, 5)).double().eval()
    linear.requires_grad_(False)
    with torch.no_grad():
        gap = (linear(x) - linear(torch.zeros_like(x))).gather(1, t[:, None]).ravel()
    total = lrp.attribute(linear, x, t, "integrated_gradients", steps=3).sum((1, 2, 3))
    assert torch.allclose(total, gap, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------------
# the pipeline's view: config check and re-run triggers


def _ci_config() -> dict:
    """config/ci.yaml with the schema's defaults filled in, as the Snakefile hands it to check_config."""
    return fill_defaults(yaml.safe_load((ROOT / "config" / "ci.yaml").read_text()), ROOT / "config" / "schema.yaml")


def test_ci_config_uses_the_example():
    cfg = _ci_config()
    assert cfg["plugins"] == ["examples.my_analyzers"]
    assert {"lrp_cmp_gamma_flat", "integrated_gradients"} <= set(cfg["analyzers"])


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["analyzers"]["integrated_gradients"].update({"epsilon": 0.1}),
     "analyzers.integrated_gradients.epsilon: integrated_gradients takes no option 'epsilon' (it takes: steps)"),
    (lambda c: c["analyzers"].update({"lrp_cmp_gamma_flat": {"gama": 0.5}}),
     "analyzers.lrp_cmp_gamma_flat.gama: lrp_cmp_gamma_flat takes no option 'gama'"),
    (lambda c: c.update({"plugins": ["examples/nope.py"]}),
     "plugins[0]: plugin file 'examples/nope.py' does not exist"),
    (lambda c: c["analyzers"].update({"my_smoothgrad": {}}),
     "analyzers.my_smoothgrad: unknown analyzer (known: "),
])
def test_config_check_names_the_key(example, monkeypatch, edit, message):
    monkeypatch.syspath_prepend(str(ROOT))
    monkeypatch.chdir(ROOT)
    cfg = copy.deepcopy(_ci_config())
    edit(cfg)
    with pytest.raises(ConfigError) as e:
        check_config(cfg)
    assert message in str(e.value)


def test_editing_a_plugin_reruns_only_the_stages_that_use_analyzers(tmp_path, registry):
    path = _plugin(tmp_path, "from lrp.composites import register_function\n"
                             "register_function('mine', lambda model, x, t: x)\n")
    specs = [str(path)]
    before = {s: source_hash(s, plugins=specs)
              for s in ("pipeline.attribution:attribute", "pipeline.evaluation:table1", "pipeline.model:train_model")}
    # the plugin counts
    assert source_hash("pipeline.attribution:attribute") != before["pipeline.attribution:attribute"]
    path.write_text(path.read_text() + "# an edit\n")
    after = {s: source_hash(s, plugins=specs) for s in before}
    assert after["pipeline.attribution:attribute"] != before["pipeline.attribution:attribute"]
    assert after["pipeline.evaluation:table1"] != before["pipeline.evaluation:table1"]  # labels come from the registry
    assert (after["pipeline.model:train_model"] == before["pipeline.model:train_model"]
            == source_hash("pipeline.model:train_model"))
