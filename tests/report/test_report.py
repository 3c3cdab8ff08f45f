"""Report pieces: Fig. 1-style panels on the real ImageNet fixture images, the summary page, provenance."""

import hashlib
import json
from importlib import metadata
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.image import imread

from lrp import attribute, attribute_many
from lrp.datasets.imagenet import index_imagenet
from lrp.models.base import ModelBundle, Preprocessing
from lrp.pipeline.provenance import source_hash, source_specs, stamp, versions, write_manifest
from lrp.report.panel import compute_maps, heatmap_rgb, n_conv_layers, select_samples, write_panels
from lrp.report.summary import write_summary
from lrp.report.table import build_table1
from lrp.storage.images import write_image_shard
from lrp.training.demo import DemoVGG

DATA = Path(__file__).parents[1] / "data" / "imagenet"
# The iNNvestigate example images (ILSVRC2012 val) that tests/data holds, with their sorted-WNID classes.
INNV = {"ILSVRC2012_val_00011670": 429, "ILSVRC2012_val_00033712": 118, "ILSVRC2012_val_00042581": 399}


@pytest.fixture(scope="module")
def imagenet_shard(tmp_path_factory):
    """An image shard of the real fixture JPEGs, built by the pipeline's own index + preprocessing."""
    tmp = tmp_path_factory.mktemp("shard")
    df, _ = index_imagenet(DATA / "metadata" / "LOC_val_solution.excerpt.csv", size=64, on_error="skip",
                           image_dir=DATA / "val")
    df = df[df["sample_id"].isin(INNV)].reset_index(drop=True)
    assert len(df) == 3
    write_image_shard(df, 0, 1, DATA / "val", transform="imagenet", size=64, out_path=tmp / "0.h5", workers=1)
    return tmp / "0.h5", df


def tiny_bundle(n_classes=1000, seed=0):
    torch.manual_seed(seed)
    model = DemoVGG(n_classes, width=4, image_size=64, blocks=(1, 1, 1)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return ModelBundle(module=model, preprocessing=Preprocessing(mean=(123.0, 117.0, 104.0), std=(58.0, 57.0, 57.0)),
                       input_size=64, class_names=[f"c{i}" for i in range(n_classes)], name="tiny", checksum="x")


def test_heatmap_is_diverging_and_centred_at_zero():
    rgb = heatmap_rgb(np.array([[-2.0, 0.0, 2.0, 1.0]]))
    np.testing.assert_allclose(rgb[0, 1], [1, 1, 1], atol=0.01)  # zero -> white
    assert rgb[0, 0, 2] > 0.9 and rgb[0, 0, 0] < 0.1  # most negative -> blue
    assert rgb[0, 2, 0] > 0.9 and rgb[0, 2, 2] < 0.1  # most positive -> red
    # scale-free, sign-symmetric: -R is the mirror image, 10·R the same picture
    np.testing.assert_allclose(heatmap_rgb(np.array([[2.0, -1.0]]) * 10), heatmap_rgb(np.array([[2.0, -1.0]])))
    np.testing.assert_allclose(heatmap_rgb(np.array([[-2.0, 1.0]]))[..., ::-1][0, 0], rgb[0, 2], atol=0.01)
    assert np.all(heatmap_rgb(np.zeros((3, 3))) > 0.99)  # an all-zero map is blank, not NaN


def test_select_samples_by_id_and_default(imagenet_shard):
    path, df = imagenet_shard
    want = ["ILSVRC2012_val_00042581", "ILSVRC2012_val_00011670"]
    s = select_samples([path], want)
    assert s.sample_id == want
    assert list(s.class_index) == [INNV[w] for w in want]  # the iNNvestigate ground truth classes
    assert s.images.shape == (2, 64, 64, 3) and s.images.dtype == np.uint8
    with h5py.File(path) as h:
        row = list(h["sample_id"].asstr()[:]).index(want[0])
        np.testing.assert_array_equal(s.images[0], h["images"][h["image_row"][row]])
    assert select_samples([path], n=2).sample_id == list(df["sample_id"][:2])
    with pytest.raises(ValueError, match="ILSVRC2012_val_99999999"):
        select_samples([path], ["ILSVRC2012_val_00011670", "ILSVRC2012_val_99999999"])


def test_panel_maps_are_the_engines_maps(imagenet_shard):
    path, _ = imagenet_shard
    bundle = tiny_bundle()
    s = select_samples([path], list(INNV))
    analyzers = {"lrp_cmp_alpha2_flat": {"bias": "toolbox"}, "gradient": {}, "lrp_z": {}}
    res = compute_maps(bundle, s, analyzers, "cpu", "lrp_cmp_alpha1_flat", {"bias": "toolbox"})
    x = bundle.preprocessing(torch.from_numpy(s.images))
    t = torch.as_tensor(s.class_index)
    ref = attribute_many(bundle.module, x, t, analyzers)
    for name in analyzers:
        np.testing.assert_array_equal(res["maps"][name], ref[name].sum(1).numpy())
    np.testing.assert_allclose(res["logits"], bundle.module(x).gather(1, t[:, None])[:, 0].numpy())
    n_conv = n_conv_layers(bundle.module)
    assert sorted(res["flat"]) == list(range(1, n_conv + 1))
    for n in (1, n_conv):
        expected = attribute(bundle.module, x, t, "lrp_cmp_alpha1_flat", flat_layers=n, bias="toolbox").sum(1)
        np.testing.assert_array_equal(res["flat"][n], expected.numpy())
    assert not np.array_equal(res["flat"][1], res["flat"][n_conv])  # the rows really differ


def test_write_panels_grid(imagenet_shard, tmp_path):
    path, _ = imagenet_shard
    bundle = tiny_bundle()
    s = select_samples([path], list(INNV))
    out = {k: tmp_path / f"{k}.{k.split('_')[-1]}" for k in ("analyzers_png", "analyzers_pdf", "flat_png", "flat_pdf")}
    write_panels(bundle, s, {"lrp_cmp_alpha2_flat": {}, "gradient": {}}, "cpu", out, title="t",
                 labels={"lrp_cmp_alpha2_flat": "LRP_CMP:α2+♭"})
    a, f = imread(out["analyzers_png"]), imread(out["flat_png"])
    # 3 rows; analyzers: input + 2 maps; flat: input + one column per conv layer (DemoVGG blocks (1,1,1): 3)
    assert a.shape[0] == pytest.approx(f.shape[0], abs=2)
    assert a.shape[1] / a.shape[0] == pytest.approx(3 * 1.05 / (3 * 1.05 + 0.45), rel=0.05)
    assert f.shape[1] / a.shape[1] == pytest.approx(4 / 3, rel=0.05)
    assert out["analyzers_pdf"].read_bytes()[:4] == b"%PDF"
    assert not list(tmp_path.glob(".*tmp*"))


def test_plot_panel_rejects_mismatched_maps(tmp_path):
    from lrp.report.panel import plot_panel

    imgs = np.zeros((2, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="shape"):
        plot_panel(imgs, {"a": np.zeros((2, 4, 4))}, ["x", "y"], tmp_path / "a.png", tmp_path / "a.pdf", "t")
    assert not (tmp_path / "a.png").exists()


def _summaries(names, rng):
    out = {}
    for i, a in enumerate(names):
        mu_w = 3.0 - 0.3 * i + rng.normal(0, 0.01)
        out[a] = {"mu_w": mu_w, "mu_le_0.25": 0.3, "mu_le_0.5": 0.4, "mu": 0.5, "n_used": 10, "n_nan": 0}
    return out


def test_summary_page(tmp_path):
    rng = np.random.default_rng(0)
    names = ["lrp_cmp_alpha2_flat", "lrp_cmp_alpha1", "lrp_alpha1", "lrp_z"]
    table = build_table1(_summaries(names, rng), "voc2007", 10)
    table.to_csv(tmp_path / "t.csv", index=False)
    pd.DataFrame([{"mu": 0.3221, "mu_w": 1.0, "mu_le_0.25": 0.1004, "mu_le_0.5": 0.1862, "n_units": 15000,
                   "n_valid": 14990}]).to_csv(tmp_path / "b.csv", index=False)
    (tmp_path / "card.json").write_text(json.dumps({"mAP": 0.71, "passed": True, "model": "checkpoint",
                                                    "weights": "w.pt", "checksum": "ab" * 32}))
    write_summary("voc2007", tmp_path / "t.csv", tmp_path / "b.csv", tmp_path / "card.json", "voc2007",
                  {"versions": versions(), "config": {"a": 1}}, tmp_path / "s.html")
    page = (tmp_path / "s.html").read_text()
    # our ordering equals the paper's for these four rows except none: compute τ independently
    from scipy.stats import kendalltau

    both = table.dropna(subset=["paper_mu_w"])
    tau = kendalltau(both["mu_w"], both["paper_mu_w"]).statistic
    assert f"Kendall τ = {tau:.3f}" in page
    assert "within ±0.003" in page and "NOT within" not in page  # 0.3221 vs 0.322 etc.
    assert "0.7100" in page and "passed the accuracy check" in page
    assert "LRP_CMP:α2+♭" in page and "2.716" in page  # ours beside the paper's value
    # a baseline off by more than the tolerance is flagged
    pd.DataFrame([{"mu": 0.33, "mu_w": 1.0, "mu_le_0.25": 0.1, "mu_le_0.5": 0.186, "n_units": 15000,
                   "n_valid": 15000}]).to_csv(tmp_path / "b.csv", index=False)
    write_summary("voc2007", tmp_path / "t.csv", tmp_path / "b.csv", tmp_path / "card.json", "voc2007",
                  {}, tmp_path / "s.html")
    assert "NOT within ±0.003" in (tmp_path / "s.html").read_text()


def test_provenance_manifest(tmp_path):
    (tmp_path / "res" / "x").mkdir(parents=True)
    a, b = tmp_path / "res" / "a.csv", tmp_path / "res" / "x" / "b.h5"
    a.write_text("1,2\n")
    b.write_bytes(b"\x00" * 10)
    doc = write_manifest([b, a], {"results": "res", "k": [1]}, tmp_path / "res" / "p.json", root=tmp_path / "res")
    on_disk = json.loads((tmp_path / "res" / "p.json").read_text())
    assert on_disk == json.loads(json.dumps(doc))
    assert list(on_disk["files"]) == ["a.csv", "x/b.h5"]
    assert on_disk["files"]["x/b.h5"] == {"sha256": hashlib.sha256(b"\x00" * 10).hexdigest(), "bytes": 10}
    assert on_disk["config"] == {"results": "res", "k": [1]}
    assert on_disk["versions"]["torch"] == metadata.version("torch")
    s = stamp({"k": 1})
    assert json.loads(s["config"]) == {"k": 1} and "lrp" in json.loads(s["versions"])


@pytest.mark.parametrize("cached", [False, True], ids=["parsed", "through-the-cache"])
def test_source_hash_follows_the_functions_a_stage_uses(tmp_path, cached):
    """Editing a helper a stage calls, or a module it imports (also lazily, also indirectly), re-runs it;
    editing another stage of the same module, or a module only that one imports, does not. Through the cache
    (.snakemake/lrp_source_hash.json in a workflow) every answer is the same."""
    cache = tmp_path.parent / f"{tmp_path.name}-cache" / "hashes.json" if cached else None
    (tmp_path / "sub").mkdir()
    (tmp_path / "__init__.py").write_text("from .engine import run  # re-export\n")
    (tmp_path / "engine.py").write_text("E = 1\n")
    (tmp_path / "sub" / "__init__.py").write_text("")
    (tmp_path / "sub" / "model.py").write_text("from ..maths import square\n")
    (tmp_path / "maths.py").write_text("def square(x):\n    return x * x\n")
    (tmp_path / "plot.py").write_text("P = 1\n")
    mod = tmp_path / "stages.py"
    src = ("from . import __version__\nSIZE = 3\n\ndef helper(x):\n    return x * SIZE\n\n"
           "def train(x):\n    from .sub.model import square\n    return helper(x), __version__\n\n"
           "def report(x):\n    from .plot import P\n    return x\n\n"
           "def data(x):\n    report = x + 1  # a local that shadows the report stage\n    return report\n")
    mod.write_text(src)
    from lrp.pipeline.source_cache import cached_source_hash

    def h(*specs):
        return cached_source_hash(*specs, root=tmp_path, cache=cache) if cached else source_hash(*specs, root=tmp_path)
    train, report, data = h("stages:train"), h("stages:report"), h("stages:data")
    assert source_specs("stages:train", root=tmp_path) == {"stages:train", "sub.model", "maths", ""}
    assert source_specs("stages:data", root=tmp_path) == {"stages:data"}  # the local is not the stage
    mod.write_text(src.replace("return x\n", "return -x\n"))  # edit report()
    assert h("stages:train") == train and h("stages:report") != report and h("stages:data") == data
    mod.write_text(src.replace("SIZE = 3", "SIZE = 4"))  # a constant train() uses via helper()
    assert h("stages:train") != train and h("stages:report") == report
    mod.write_text(src)
    (tmp_path / "maths.py").write_text("def square(x):\n    return x ** 2\n")  # imported by an import
    assert h("stages:train") != train and h("stages:report") == report
    (tmp_path / "plot.py").write_text("P = 2\n")
    assert h("stages:report") != report
    before = h("stages:train")  # uses __version__ from __init__, which re-exports the engine
    (tmp_path / "engine.py").write_text("E = 2\n")  # ... whose edits do not count: __init__ is not followed
    assert h("stages:train") == before
    (tmp_path / "__init__.py").write_text("from .engine import run\n__version__ = '2'\n")  # __init__ itself does
    assert h("stages:train") != before
    if cached:
        assert json.loads(cache.read_text())["hashes"]  # it was used
        cache.write_text('{"code": 5, "hashes": [1]}')  # a cache of another form is recomputed, not trusted
        assert h("stages:train") == source_hash("stages:train", root=tmp_path)
    with pytest.raises(ValueError, match="no top-level 'nope'"):
        h("stages:nope")
    with pytest.raises(ValueError, match="no lrp module"):
        h("missing")
    assert len(source_hash("pipeline.attribution:attribute")) == 16  # the real stage module
    real = source_specs("pipeline.model:train_model")
    assert {"training.demo", "training.finetune", "models.checkpoint"} <= real and "report.panel" not in real
    attribute = source_specs("pipeline.attribution:attribute")
    assert {"attribution", "rules", "composites", "graph", "storage.attributions", "storage.loader",
            "evaluation.sums"} <= attribute
    # the jobs store μ's sums (lrp.evaluation.sums); Table 1's statistics are not theirs
    assert not {"evaluation.metrics", "training.demo", "training.finetune"} & attribute


def test_summary_shows_the_seed_spread_beside_table1(tmp_path):
    """With a seed-spread CSV (lrp.pipeline.seeds) the summary page has the per-seed μ_w, mean ± sd, range and
    the bootstrap CI half-width, row by row."""
    from lrp.pipeline.seeds import spread
    from lrp.report.summary import seed_spread_section

    def table(mu_w):
        return pd.DataFrame({"analyzer": ["lrp_z"], "label": ["LRP_z"], "mu_w": [mu_w], "mu_w_lo": [mu_w - 0.1],
                             "mu_w_hi": [mu_w + 0.1], "mu": [0.5], "mu_lo": [0.4], "mu_hi": [0.6]})

    html = seed_spread_section(spread({0: table(3.0), 1: table(3.2), 2: table(2.8)}), "spread.csv")
    assert "<th>μ_w seed 2</th>" in html and "spread.csv" in html
    assert "<td>3.000 ± 0.200</td><td>2.800–3.200</td><td>±0.100</td>" in html


def test_source_hash_cache_keys_the_code_exactly(tmp_path, monkeypatch):
    """Files are framed by name and length in the cache's code key (no two code states share it), and a hash
    computed while a file was edited is returned but not stored under either state."""
    from lrp.pipeline import provenance, source_cache

    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        root.mkdir()
        (root / "__init__.py").write_text("")
    (a / "m.py").write_text("X = 1\n")
    (a / "n.py").write_text("Y = 2\n")
    (b / "m.py").write_text("X = 1\nn.py\nY = 2\n")
    assert source_cache.content_key(a) != source_cache.content_key(b)

    cache = tmp_path / "cache.json"
    real = provenance.source_hash

    def editing(*specs, **kwargs):
        value = real(*specs, **kwargs)
        (a / "n.py").write_text("Y = 3\n")  # an editor saves while the workflow is being parsed
        return value

    monkeypatch.setattr(provenance, "source_hash", editing)
    source_cache.cached_source_hash("m", root=a, cache=cache)
    assert not cache.exists()
