"""The benchmark scripts run (smoke size) and their outputs say what they measured.

Why in CI: a device session has minutes, not hours; a benchmark that broke since it last ran would waste
it. Timings are not checked (benchmarks/README.md holds measured figures), but the maps are: --check
fails if any map differs from zennit's.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from lrp.allocator import glibc

from compiling import compile_problem

ROOT = Path(__file__).resolve().parents[2]


def run(*args):
    out = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def test_attribution_benchmark_smoke(tmp_path):
    js = tmp_path / "a.json"
    fused = [] if compile_problem() else ["--fused"]  # the fused kernels' maps, where torch.compile works
    stdout = run("benchmarks/attribution.py", "--quick", "--check", "--threads", "1", *fused,
                 "--only", "lrp_cmp_alpha1", "lrp_cmp_alpha2_flat", "gradient", "--json", js)
    res = json.loads(js.read_text())
    assert res["info"]["fused"] is bool(fused)
    assert set(res["analyzers"]) == {"lrp_cmp_alpha1", "lrp_cmp_alpha2_flat", "gradient"}
    assert res["check_failures"] == {}
    for row in res["analyzers"].values():
        assert row["check_rel_diff"] <= 1e-4 and row["suite_check_rel_diff"] <= 1e-4
        assert row["ours_ratio_to_gradient"] > 0
    assert res["summary"]["suite_analyzers"] == 13
    if glibc() is not None and "LRP_RETAIN_FREED_MEMORY" not in os.environ and "LD_PRELOAD" not in os.environ:
        assert res["info"]["malloc"].startswith("glibc malloc keeps freed memory")
    assert "| lrp_cmp_alpha1 |" in stdout


def test_resnet50_benchmark_smoke(tmp_path):
    """The graph engine's benchmark: ResNet-50 with zennit's canonizer, checked on float64 copies."""
    js = tmp_path / "r.json"
    run("benchmarks/attribution.py", "--model", "resnet50", "--quick", "--check", "--check-dtype", "float64",
        "--threads", "1", "--only", "lrp_cmp_alpha1_flat", "lrp_cam", "--json", js)
    res = json.loads(js.read_text())
    assert res["info"]["check_dtype"] == "float64" and "resnet50" in res["info"]["model"]
    assert res["summary"]["suite_analyzers"] == 11 and res["check_failures"] == {}
    for row in res["analyzers"].values():
        assert row["check_rel_diff"] <= 1e-6 and row["suite_check_rel_diff"] <= 1e-6


def test_memory_benchmark_smoke(tmp_path):
    js = tmp_path / "m.json"
    stdout = run("benchmarks/memory.py", "--model", "resnet50", "--size", "64", "--threads", "1", "--batches", "1",
                 "3", "--contenders", "suite", "--json", js)
    res = json.loads(js.read_text())
    assert set(res["contenders"]) == {"suite"}
    assert res["contenders"]["suite"]["runs"]["3"]["peak_bytes"] > 0
    assert "MiB per image" in stdout


def test_pipeline_benchmark_smoke(tmp_path):
    js = tmp_path / "p.json"
    stdout = run("benchmarks/pipeline.py", "--device", "cpu", "--n", "4", "--batch", "2", "--size", "64",
                 "--metric-jobs", "1", "--json", js)
    res = json.loads(js.read_text())
    assert res["n"] == 4 and res["analyzers"] == 11
    for phase in ("load_wait", "h2d", "attribute", "d2h", "write_wait", "metrics", "total_attribute_job"):
        assert res["timings_s"][phase] >= 0, phase
    assert res["timings_s"]["attribute"] > 0 and res["images_per_s"] > 0
    assert res["timings_s"]["writer_busy"] > 0 and res["writer_images_per_s"] > 0
    assert res["metric_jobs"] >= 1 and res["timings_s"]["metrics_startup"] > 0
    assert "overhead" in stdout and "shard writer alone sustains" in stdout


def test_shard_writer_benchmark_smoke(tmp_path):
    js = tmp_path / "w.json"
    stdout = run("benchmarks/shard_writer.py", "--quick", "--threads", "0", "2", "--json", js)
    res = json.loads(js.read_text())
    assert set(res["maps_per_s"]) == {"hdf5-filters", "ShardWriter, 0 threads", "ShardWriter, 2 threads",
                                      "write_encoded, 0 threads", "write_encoded, 2 threads"}
    assert all(v > 0 for v in res["maps_per_s"].values())
    assert res["analyzers"] == 11 and res["maps_per_run"] == 1 * 4 * 11
    assert "images/s" in stdout


def test_float16_precision_benchmark_smoke(tmp_path):
    """On maps of a small magnitude the plain float16 cast must come out worse than the scaled one."""
    import h5py
    import numpy as np

    from lrp.storage.attributions import ShardWriter

    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    masks = np.zeros((6, 32, 32), bool)
    masks[:, 4:20, 8:30] = True
    with h5py.File(tmp_path / "images" / "1.h5", "w") as f:
        f["masks"] = masks
    maps = (rng.standard_normal((6, 32, 32)) * 3e-6).astype(np.float32)
    w = ShardWriter(tmp_path / "attributions" / "lrp_z" / "1.h5", 6, (32, 32), list("abcdef"), precision="float32")
    w.write(maps)
    w.close()
    js = tmp_path / "f.json"
    stdout = run("benchmarks/float16_precision.py", "--results", tmp_path, "--divide", "1", "--json", js)
    r = json.loads(js.read_text())["analyzers"]["lrp_z"]["1.0"]
    for metric in ("mu", "mu_w"):
        assert r["plain_float16"][metric]["max_abs_diff"] > 10 * r["scaled_float16"][metric]["max_abs_diff"]
    assert r["scaled_float16"]["nan_status_changed"] == 0
    assert "lrp_z" in stdout


def test_perturbation_benchmark_smoke(tmp_path):
    js = tmp_path / "f.json"
    stdout = run("benchmarks/perturbation.py", "--units", "2", "--steps", "5", "--size", "32", "--repeats", "1",
                 "--threads", "1", "--quantus-units", "1", "--json", js)
    res = json.loads(js.read_text())
    assert res["images_per_s"]["region_perturbation"] > 0 and res["images_per_s"]["plain_forward"] > 0
    assert res["images_per_s"]["quantus_region_perturbation"] > 0 and res["study"]["rows"] == 1000 * 12 * 2 * 6
    assert "study cost" in stdout
