"""The faithfulness stages (lrp.pipeline.faithfulness): the perturbation job reads the stored maps and gives the
library's curves, a unit's curves do not depend on which other units are selected, and Table 3's AOPC is the
mean of the stored curves."""

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from lrp.datasets.index import INDEX_COLUMNS
from lrp.evaluation.perturbation import region_perturbation
from lrp.models.base import ModelBundle, Preprocessing
from lrp.models.checkpoint import save_bundle
from lrp.pipeline.attribution import attribute_shard
from lrp.pipeline.faithfulness import RANDOM, faithfulness, perturbation, select_units, unit_seed, value_range
from lrp.storage.attributions import read_shard
from lrp.storage.perturbation import read_perturbations

SIZE, N = 16, 6
ANALYZERS = ["lrp_z", "gradient"]
SETTINGS = {"region": 14, "steps": 6, "fill": "mean", "orders": ["morf", "lerf"], "max_units": None, "seed": 0}


def _image_shard(path: Path, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, SIZE, SIZE), bool)
    masks[:, 4:10, 3:12] = True
    with h5py.File(path, "w") as f:
        f["images"] = rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)
        f["image_row"] = np.arange(n, dtype=np.int32)
        f["image_size"] = np.tile(np.array([[SIZE, SIZE]], np.int32), (n, 1))
        f["masks"] = masks
        f.create_dataset("sample_id", data=np.array([f"s{i}" for i in range(n)], dtype=object),
                         dtype=h5py.string_dtype("utf-8"))
        f["class_index"] = rng.integers(0, 3, n)
        f["box_fraction"] = masks.reshape(n, -1).mean(1)
        f.attrs.update(shard=0, n_shards=1, transform="imagenet", size=SIZE)


def _index(path: Path, ids) -> None:
    row = {c: "" for c in INDEX_COLUMNS} | {"class_index": 0, "width": SIZE, "height": SIZE, "n_boxes": 1,
                                             "box_fraction": 0.5}
    pd.DataFrame([{**row, "sample_id": s} for s in ids], columns=INDEX_COLUMNS).to_csv(path, index=False)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from lrp.training.demo import DemoVGG

    tmp = tmp_path_factory.mktemp("faith")
    torch.manual_seed(0)
    module = DemoVGG(n_classes=3, width=4, image_size=SIZE, blocks=(1, 1), hidden=8).eval()
    bundle = ModelBundle(module, Preprocessing(mean=(120.0, 110.0, 100.0), std=(60.0, 60.0, 60.0)), SIZE,
                         ["a", "b", "c"], "tiny")
    weights = tmp / "model.pt"
    save_bundle(bundle, weights)
    img = tmp / "images.h5"
    _image_shard(img, N)
    maps = {a: tmp / "att" / a / "0.h5" for a in ANALYZERS}
    attribute_shard(bundle, torch.device("cpu"), img, {a: {} for a in ANALYZERS}, maps, 4, "float32", False,
                    {"model_checksum": bundle.checksum})
    index = tmp / "samples.csv"
    _index(index, [f"s{i}" for i in range(N)])
    return {"tmp": tmp, "spec": {"arch": "checkpoint", "weights": str(weights), "name": "tiny"}, "img": img,
            "maps": maps, "index": index, "bundle": bundle}


def _run(study, name, **settings):
    out = study["tmp"] / f"{name}.h5"
    perturbation(study["spec"], study["img"], study["maps"], study["index"], {**SETTINGS, **settings}, out,
                 batch_size=16, device="cpu")
    return read_perturbations([out])


def test_job_gives_the_library_curves_of_the_stored_maps(study):
    p = _run(study, "all")
    assert list(p.sample_id) == [f"s{i}" for i in range(N)] and set(p.curves) == {*ANALYZERS, RANDOM}
    b = study["bundle"]
    with h5py.File(study["img"], "r") as f:
        x = b.preprocessing(torch.from_numpy(f["images"][:]))
        t = torch.from_numpy(f["class_index"][:])
    seeds = [unit_seed(0, f"s{i}") for i in range(N)]
    assert p.attrs["region"] == 1  # 14 at 224 → 1 at 16
    for a in ANALYZERS:
        _, R = read_shard(study["maps"][a])
        for order in ("morf", "lerf"):
            want, _ = region_perturbation(b.module, x, t, torch.from_numpy(R), region=1, steps=6, order=order,
                                          seed=seeds)
            np.testing.assert_allclose(p.curves[a][order], want.numpy(), rtol=1e-5, atol=1e-5)
    # step 0 is the model's own logit, the same for every map and order
    np.testing.assert_allclose(p.curves[RANDOM]["morf"][:, 0], p.curves["lrp_z"]["lerf"][:, 0], rtol=1e-6)
    assert not np.allclose(p.curves[RANDOM]["morf"], p.curves["lrp_z"]["morf"])


def test_a_units_curves_do_not_depend_on_the_selection(study):
    full = _run(study, "full")
    sub = _run(study, "sub", max_units=3)
    assert len(sub.sample_id) == 3 and set(sub.sample_id) == select_units([f"s{i}" for i in range(N)], 3, 0)
    rows = [list(full.sample_id).index(s) for s in sub.sample_id]
    for name in full.curves:
        np.testing.assert_allclose(sub.curves[name]["morf"], full.curves[name]["morf"][rows], rtol=1e-5, atol=1e-6)


def test_select_units_is_seeded_and_order_free():
    ids = [f"u{i}" for i in range(50)]
    a = select_units(ids, 10, 0)
    assert len(a) == 10 and a == select_units(ids[::-1], 10, 0) and a != select_units(ids, 10, 1)
    assert select_units(ids, None, 0) == set(ids) == select_units(ids, 99, 0)


def test_uniform_fill_is_noise_over_the_valid_input_range(study, monkeypatch):
    """The stage asks for uniform noise over the preprocessed 0..255 range; several calls (7-row batches: four
    units per call) give each unit the curves of one library call on all units."""
    import lrp.evaluation.perturbation as library

    seen = []
    real = library.region_perturbation

    def spy(*args, **kwargs):
        seen.append((kwargs["fill"], kwargs["value_range"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(library, "region_perturbation", spy)
    out = study["tmp"] / "noise.h5"
    perturbation(study["spec"], study["img"], study["maps"], study["index"], {**SETTINGS, "fill": "uniform"}, out,
                 batch_size=7, device="cpu")
    monkeypatch.setattr(library, "region_perturbation", real)
    lo, hi = value_range(study["bundle"].preprocessing)
    np.testing.assert_allclose(lo.numpy(), [-2.0, -110 / 60, -100 / 60])
    np.testing.assert_allclose(hi.numpy(), [135 / 60, 145 / 60, 155 / 60])
    assert len(seen) == 2 * 3 * 2 and all(f == "uniform" and torch.equal(v[0], lo) and torch.equal(v[1], hi)
                                          for f, v in seen)  # 2 calls of 4 + 2 units × 3 maps × 2 orders
    noise = read_perturbations([out])
    b = study["bundle"]
    with h5py.File(study["img"], "r") as f:
        x = b.preprocessing(torch.from_numpy(f["images"][:]))
        t = torch.from_numpy(f["class_index"][:])
    seeds = [unit_seed(0, f"s{i}") for i in range(N)]
    _, R = read_shard(study["maps"]["lrp_z"])
    want, _ = real(b.module, x, t, torch.from_numpy(R), region=1, steps=6, order="lerf", fill="uniform",
                   value_range=(lo, hi), seed=seeds)
    np.testing.assert_allclose(noise.curves["lrp_z"]["lerf"], want.numpy(), rtol=1e-5, atol=1e-5)
    mean = _run(study, "mean_fill")
    assert not np.allclose(mean.curves["lrp_z"]["morf"][:, 1:], noise.curves["lrp_z"]["morf"][:, 1:])


def test_the_random_map_is_independent_of_the_noise_fill():
    """Both come from the unit's seed, through different streams: drawn from the same stream, the random map
    would equal the fill's first channel, and MoRF would remove the brightest fill first."""
    from lrp.evaluation.perturbation import _fill_tensor
    from lrp.pipeline.faithfulness import random_maps

    seeds = [unit_seed(0, f"s{i}") for i in range(4)]
    maps = random_maps(seeds, 32)
    fill = _fill_tensor("uniform", torch.zeros(4, 3, 32, 32), seeds, (0.0, 1.0))
    for m, f in zip(maps, fill):
        r = np.corrcoef(m.flatten().numpy(), f[0].flatten().numpy())[0, 1]
        assert abs(r) < 0.1, r
    assert torch.equal(maps, random_maps(seeds, 32)) and random_maps([], 8).shape == (0, 8, 8)


def test_sanity_stage_writes_the_check(study, tmp_path):
    from lrp.pipeline.faithfulness import sanity

    out = tmp_path / "sanity.csv"
    sanity(study["spec"], study["img"], {a: {} for a in ANALYZERS}, None, out, tmp_path / "s.png", tmp_path / "s.pdf",
           n_units=3, seed=0, device="cpu", title="t")
    df = pd.read_csv(out, dtype={"sample_id": str})
    assert list(df["sample_id"].unique()) == ["s0", "s1", "s2"] and set(df["analyzer"]) == set(ANALYZERS)
    from lrp.evaluation.randomisation import randomisable_layers

    layers = randomisable_layers(study["bundle"].module)
    assert df["stage"].max() == len(layers) and list(df["layer"].unique()) == ["(trained)", *layers]
    assert (df.loc[df["stage"] == 0, "spearman"] == 1.0).all()
    assert (tmp_path / "s.png").stat().st_size > 1000


def test_maps_of_another_shard_are_refused(study, tmp_path):
    other = tmp_path / "other.h5"
    _image_shard(other, N - 1, seed=3)
    with pytest.raises(ValueError, match="differ from .*other.h5"):
        perturbation(study["spec"], other, study["maps"], study["index"], SETTINGS, tmp_path / "o.h5", 16, "cpu")
    assert not (tmp_path / "o.h5").exists()


def test_table3_is_the_mean_of_the_stored_curves(study, tmp_path):
    _run(study, "t3")
    t1 = pd.DataFrame({"analyzer": ANALYZERS, "mu_w": [1.2, 0.9], "mu_w_lo": [1.1, 0.8], "mu_w_hi": [1.3, 1.0]})
    t1.to_csv(tmp_path / "table1.csv", index=False)
    out = {"csv": tmp_path / "t3.csv", "md": tmp_path / "t3.md", "tex": tmp_path / "t3.tex",
           "curves": (tmp_path / "c.png", tmp_path / "c.pdf"), "scatter": (tmp_path / "s.png", tmp_path / "s.pdf")}
    faithfulness([study["tmp"] / "t3.h5"], tmp_path / "table1.csv", out, n_boot=50, seed=0, title="Table 3 — t")
    table = pd.read_csv(out["csv"]).set_index("analyzer")
    p = read_perturbations([study["tmp"] / "t3.h5"])
    for name in (*ANALYZERS, RANDOM):
        morf, lerf = (np.mean(p.curves[name][o][:, :1] - p.curves[name][o]) for o in ("morf", "lerf"))
        assert table.at[name, "morf"] == pytest.approx(morf) and table.at[name, "lerf"] == pytest.approx(lerf)
        assert table.at[name, "diff"] == pytest.approx(morf - lerf)
        assert table.at[name, "morf_lo"] <= morf <= table.at[name, "morf_hi"]
    assert table.at["lrp_z", "mu_w"] == 1.2 and np.isnan(table.at[RANDOM, "mu_w"])
    assert list(pd.read_csv(out["csv"])["morf"]) == sorted(table["morf"], reverse=True)
    md = out["md"].read_text()
    assert "Random map" in md and "AOPC MoRF" in md and f"N = {N} units" in md
    for f in (*out["curves"], *out["scatter"]):
        assert Path(f).stat().st_size > 1000
