"""The attribution job (`lrp.pipeline.attribution.attribute_shard`) and the metrics job that reads what it stores.

The job scores every map before storing it (μ's sums, on the job's device, from the float32 maps); the metrics
job only reads those sums. These tests check the sums against an independent computation (numpy
`relevance_sums` of `lrp.attribute_many`'s maps), that μ does not depend on the storage precision, and that
the stored maps are the same maps.
"""

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import lrp
from lrp.evaluation.metrics import mu_from_sums, relevance_sums
from lrp.models.base import ModelBundle
from lrp.models.zoo import TORCHVISION_PREPROCESSING
from lrp.pipeline.attribution import attribute_shard
from lrp.pipeline.evaluation import metrics
from lrp.storage.attributions import read_attrs, read_shard, read_sums

from compiling import skip_unless_compiles

ANALYZERS = ["lrp_z", "lrp_cmp_alpha1_flat", "gradient"]
SIZE = 24


def _image_shard(path: Path, n: int, seed: int = 0) -> None:
    """An image shard laid out as `lrp.storage.images` writes them: uint8 images, one box mask per sample."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, SIZE, SIZE), bool)
    for i in range(n):
        y, x = rng.integers(0, SIZE // 2, 2)
        masks[i, y:y + rng.integers(2, SIZE // 2), x:x + rng.integers(2, SIZE // 2)] = True
    masks[-1] = False  # a box cropped away: μ is NaN
    with h5py.File(path, "w") as f:
        f["images"] = rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)
        f["image_row"] = np.arange(n, dtype=np.int32)
        f["image_size"] = np.tile(np.array([[SIZE, SIZE]], np.int32), (n, 1))
        f["masks"] = masks
        f.create_dataset("sample_id", data=np.array([f"s{i}" for i in range(n)], dtype=object),
                         dtype=h5py.string_dtype("utf-8"))
        f["class_index"] = rng.integers(0, 5, n)
        f["box_fraction"] = masks.reshape(n, -1).mean(1)
        f.attrs.update(shard=0, n_shards=1, transform="imagenet", size=SIZE)


def _bundle() -> ModelBundle:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1),
                        nn.ReLU(), nn.Flatten(), nn.Linear(8 * (SIZE // 2) ** 2, 5)).eval().requires_grad_(False)
    for m in net:
        if hasattr(m, "bias"):
            nn.init.uniform_(m.bias, -0.1, 0.1)
    return ModelBundle(net, TORCHVISION_PREPROCESSING, SIZE, [str(i) for i in range(5)], "tiny")


def _run(tmp_path: Path, precision: str, n: int = 7, batch: int = 3, fused: bool = False):
    img = tmp_path / "images.h5"
    if not img.exists():
        _image_shard(img, n)
    bundle = _bundle()
    outs = {a: tmp_path / (precision + "-fused" * fused) / a / "0.h5" for a in ANALYZERS}
    attribute_shard(bundle, torch.device("cpu"), img, {a: {} for a in ANALYZERS}, outs, batch, precision, False,
                    {"model_checksum": "x"}, fused=fused)
    return bundle, img, outs


def _reference_maps(bundle, img):
    with h5py.File(img) as f:
        images, masks, targets = f["images"][:], f["masks"][:], f["class_index"][:]
    x = bundle.preprocessing(torch.from_numpy(images), device=torch.device("cpu"))
    maps = lrp.attribute_many(bundle.module, x, torch.from_numpy(targets), ANALYZERS)
    return {a: R.sum(1).numpy() for a, R in maps.items()}, masks


def test_the_job_stores_the_sums_of_its_float32_maps(tmp_path):
    bundle, img, outs = _run(tmp_path, "float16")
    ref, masks = _reference_maps(bundle, img)
    for a, path in outs.items():
        ids, sums, size = read_sums(path)
        assert list(ids) == [f"s{i}" for i in range(7)] and size == (SIZE, SIZE)
        expect = relevance_sums(ref[a], masks)  # numpy, independent of the job's torch path
        for k in ("r_in", "r_tot", "s_in", "s_tot"):
            np.testing.assert_allclose(sums[k], expect[k], rtol=1e-6, atol=1e-30, err_msg=f"{a} {k}")
        assert read_attrs(path)["sums_of"].startswith("lrp.evaluation.sums.relevance_sums")
        # the map scores, from numpy on the reference maps (24² images: the map is the whole image, no resize)
        flat, inside = ref[a].reshape(7, -1), masks.reshape(7, -1)
        order = np.argsort(-flat, axis=1, kind="stable")
        k = read_attrs(path)["top_k"]
        assert k == round(1000 * SIZE * SIZE / 224 ** 2)
        for i in range(7):
            if len(np.unique(flat[i])) == flat.shape[1]:  # no ties: the fair share is the plain count
                assert sums["rank_in"][i] == inside[i][order[i, :inside[i].sum()]].sum(), (a, i)
                assert sums["topk_in"][i] == inside[i][order[i, :k]].sum(), (a, i)
            assert (sums["point_y"][i], sums["point_x"][i]) == np.unravel_index(flat[i].argmax(), (SIZE, SIZE))
        shifted = flat.astype(np.float64) - flat.min(1, keepdims=True)
        np.testing.assert_allclose(sums["e_in"], (shifted * inside).sum(1), rtol=1e-6)
        np.testing.assert_allclose(sums["e_tot"], shifted.sum(1), rtol=1e-6)
        stored = read_shard(path)[1]  # the float16 maps: the same maps, to float16's precision
        scale = np.abs(ref[a]).max(axis=(1, 2), keepdims=True)
        assert np.abs(stored - ref[a]).max() <= 1e-3 * scale.max()


def test_metrics_read_the_sums_and_do_not_depend_on_storage_precision(tmp_path):
    csvs = {}
    for precision in ("float16", "float32"):
        _, img, outs = _run(tmp_path, precision)
        for a, path in outs.items():
            csvs[precision, a] = tmp_path / f"{precision}-{a}.csv"
            metrics(a, [img], [path], csvs[precision, a])
    for a in ANALYZERS:
        lo, hi = pd.read_csv(csvs["float16", a]), pd.read_csv(csvs["float32", a])
        pd.testing.assert_frame_equal(lo, hi)  # the sums come from the float32 maps either way
        _, sums, _ = read_sums(tmp_path / "float32" / a / "0.h5")
        mu, mu_w = mu_from_sums(sums["r_in"], sums["r_tot"], sums["s_in"], sums["s_tot"])
        # through CSV text (pandas 3.0 reads it back to 1 ulp)
        np.testing.assert_allclose(lo["mu"].to_numpy(), mu, rtol=1e-14)
        assert np.isnan(lo["mu"].iloc[-1]) and lo["box_fraction"].iloc[-1] == 0
        assert list(lo.columns) == ["sample_id", "class_index", "box_fraction", "mu", "mu_w", "r_in", "r_tot",
                                    "rank_accuracy", "topk", "energy"]


def test_metrics_refuse_shards_without_sums_or_out_of_order(tmp_path):
    _, img, outs = _run(tmp_path, "float32")
    path = outs["lrp_z"]
    with h5py.File(path, "a") as f:
        del f["r_in"]
    with pytest.raises(ValueError, match=r"0\.h5: no metric sums \(r_in\).*re-run its attribution"):
        metrics("lrp_z", [img], [path], tmp_path / "m.csv")
    _image_shard(tmp_path / "shorter.h5", 6)
    with pytest.raises(ValueError, match="disagree on sample order"):
        metrics("gradient", [tmp_path / "shorter.h5"], [outs["gradient"]], tmp_path / "m.csv")
    _image_shard(tmp_path / "permuted.h5", 7)
    with h5py.File(tmp_path / "permuted.h5", "a") as f:
        f["sample_id"][:] = np.array([f"s{i}" for i in (1, 0, 2, 3, 4, 5, 6)], dtype=object)
    with pytest.raises(ValueError, match="disagree on sample order"):
        metrics("gradient", [tmp_path / "permuted.h5"], [outs["gradient"]], tmp_path / "m.csv")
    _image_shard(tmp_path / "other_masks.h5", 7, seed=1)  # same ids, other boxes: sums of other masks
    with pytest.raises(ValueError, match=r"mask sizes differ from .*other_masks\.h5's box_fraction"):
        metrics("gradient", [tmp_path / "other_masks.h5"], [outs["gradient"]], tmp_path / "m.csv")
    assert not (tmp_path / "m.csv").exists()


def test_a_non_finite_map_fails_the_job_naming_analyzer_and_shard(tmp_path, monkeypatch):
    real = lrp.attribution.attribute_many

    def broken(*args, **kwargs):
        maps = real(*args, **kwargs)
        maps["gradient"][1, 0, 2, 2] = float("nan")
        return maps

    monkeypatch.setattr(lrp.attribution, "attribute_many", broken)
    with pytest.raises(ValueError, match=r"gradient -> .*gradient/0\.h5 \(samples from 0\): non-finite relevance in "
                                         r"samples \[1\]"):
        _run(tmp_path, "float16")
    assert [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix == ".h5" and p.name != "images.h5"] == []


def test_a_fused_job_stores_what_an_eager_job_stores(tmp_path):
    """attribution.fused: true changes how the rules' elementwise steps run, not the maps or the sums."""
    skip_unless_compiles()
    _, _, eager = _run(tmp_path, "float32")
    _, _, fused = _run(tmp_path, "float32", fused=True)
    for a in ANALYZERS:
        (_, s_e, _), (_, s_f, _) = read_sums(eager[a]), read_sums(fused[a])
        for k in s_e:
            np.testing.assert_allclose(s_f[k], s_e[k], rtol=1e-6, err_msg=f"{a} {k}")
        m_e, m_f = read_shard(eager[a])[1], read_shard(fused[a])[1]
        assert np.abs(m_f - m_e).max() <= 1e-6 * np.abs(m_e).max(), a


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cuda_job_stores_what_a_cpu_job_stores(tmp_path):
    """Sums on the GPU, maps encoded on the GPU: the same as the CPU job up to the convolutions' round-off."""
    bundle, img, cpu = _run(tmp_path, "float16")
    gpu = {a: tmp_path / "cuda" / a / "0.h5" for a in ANALYZERS}
    bundle.module.cuda()
    attribute_shard(bundle, torch.device("cuda"), img, {a: {} for a in ANALYZERS}, gpu, 3, "float16", False,
                    {"model_checksum": "x"})
    for a in ANALYZERS:
        (_, s_cpu, _), (_, s_gpu, _) = read_sums(cpu[a]), read_sums(gpu[a])
        m_cpu, m_gpu = read_shard(cpu[a])[1], read_shard(gpu[a])[1]
        for k in ("r_in", "r_tot", "s_in", "s_tot", "e_in", "e_tot"):
            np.testing.assert_allclose(s_gpu[k], s_cpu[k], rtol=1e-4, err_msg=f"{a} {k}")
        # ranks and the maximum: round-off may swap near-tied pixels (the flat rule makes many), so a count may
        # move by a few pixels and the GPU's point must be a maximum of the CPU map up to that round-off
        for k in ("rank_in", "topk_in"):
            np.testing.assert_allclose(s_gpu[k], s_cpu[k], atol=0.02 * SIZE * SIZE, err_msg=f"{a} {k}")
        peak = np.abs(m_cpu).max()
        for i, (x, y) in enumerate(zip(s_gpu["point_x"], s_gpu["point_y"])):
            if np.isnan(x):
                assert np.isnan(s_cpu["point_x"][i]), (a, i)
                continue
            assert m_cpu[i, int(y), int(x)] >= m_cpu[i].max() - 2e-3 * peak, (a, i)
        assert np.abs(m_gpu - m_cpu).max() <= 2e-3 * np.abs(m_cpu).max()
