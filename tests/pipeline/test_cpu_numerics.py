"""Other CPUs on one machine: PyTorch, oneDNN and MKL pick their kernels by the CPU's instruction set, and the
environment can make this CPU take the paths another would (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA,
MKL_ENABLE_INSTRUCTIONS). cpu_probe.py runs a few training steps of the demo VGG and one attribution batch in
a fresh process under each setting; what must not change is compared bit for bit (docs/reproducibility.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
PROBE = Path(__file__).with_name("cpu_probe.py")
SWITCHES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR", "JSIMD_FORCENONE",
            "JSIMD_FORCESSE2")


def probe(threads: int = 2, *args, **env) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in SWITCHES}
    out = subprocess.run([sys.executable, str(PROBE), *(args or [str(threads)])], capture_output=True, text=True,
                         env={**clean, **env, "PYTHONPATH": str(ROOT)}, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def pinned():
    """The pipeline's setting (reproducibility.onednn_max_cpu_isa: AVX2), on this CPU's own ATen path."""
    return probe(ONEDNN_MAX_CPU_ISA="AVX2")


def _has(capability: str) -> bool:
    order = ["DEFAULT", "AVX2", "AVX512"]
    return order.index(torch.backends.cpu.get_cpu_capability()) >= order.index(capability)


@pytest.mark.skipif(not _has("AVX2"), reason="this CPU has no AVX2")
@pytest.mark.parametrize("env", [
    {"ATEN_CPU_CAPABILITY": "avx2"},  # an AVX2-only CPU (e.g. the AMD EPYC of issue #18) ...
    {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},  # ... with its BLAS path too
    {"MKL_ENABLE_INSTRUCTIONS": "AVX2"},
], ids=["aten-avx2", "aten-mkl-avx2", "mkl-avx2"])
def test_under_the_pin_other_cpus_train_and_explain_the_same_bits(pinned, env):
    """With oneDNN capped at AVX2, the weights after training and the maps of the trained net do not depend
    on ATen's or MKL's vector width: an AVX-512 and an AVX2 machine compute the same bits."""
    other = probe(ONEDNN_MAX_CPU_ISA="AVX2", **env)
    assert (other["weights"], other["maps"]) == (pinned["weights"], pinned["maps"]), (env, other, pinned)


@pytest.mark.skipif(not _has("AVX2"), reason="this CPU has no AVX2")
def test_under_the_pin_the_demo_resnet_trains_the_same_bits_on_other_cpus():
    """The demo's second model adds BatchNorm (its batch statistics are ATen reductions, vectorised by the CPU's
    width) and a global average pool: under the pin, still the same weights and maps on an AVX2-only CPU."""
    pinned = probe(2, "2", "resnet", ONEDNN_MAX_CPU_ISA="AVX2")
    other = probe(2, "2", "resnet", ONEDNN_MAX_CPU_ISA="AVX2", ATEN_CPU_CAPABILITY="avx2",
                  MKL_ENABLE_INSTRUCTIONS="AVX2")
    assert (other["weights"], other["maps"]) == (pinned["weights"], pinned["maps"]), (other, pinned)


@pytest.mark.skipif(not _has("AVX512"), reason="needs an AVX-512 CPU to take both oneDNN paths")
def test_without_the_pin_avx512_and_avx2_cpus_train_different_models(pinned):
    """Why the pin exists: oneDNN's AVX-512 convolutions sum in another order than its AVX2 ones, and a
    training amplifies that (issue #18: another model, Table 1 moved by up to 26 %). If this ever passes equal,
    the pin costs speed for nothing: docs/reproducibility.md says how to re-measure."""
    native = probe(ONEDNN_MAX_CPU_ISA="ALL")
    assert native["weights"] != pinned["weights"]


def test_the_thread_count_is_part_of_the_result(pinned):
    """The CPU's reductions are split by thread: another count trains another model. Hence the training uses
    exactly `train.threads` (a param: changing it re-trains), not the cores Snakemake happens to grant."""
    assert probe(threads=1, ONEDNN_MAX_CPU_ISA="AVX2")["weights"] != pinned["weights"]
    assert probe(threads=2, ONEDNN_MAX_CPU_ISA="AVX2") == pinned  # and a re-run is bit-identical


def test_the_stage_refuses_to_train_without_the_pin(monkeypatch):
    from lrp.pipeline.model import cpu_numerics

    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    with pytest.raises(RuntimeError, match="ONEDNN_MAX_CPU_ISA=None.*export ONEDNN_MAX_CPU_ISA=AVX2"):
        cpu_numerics(2, "AVX2")
    assert cpu_numerics(2, "ALL")["onednn_max_cpu_isa"] == "ALL"  # no cap asked: nothing to check
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    numerics = cpu_numerics(3, "AVX2")
    assert numerics["threads"] == 3 and numerics["aten_cpu_capability"] == torch.backends.cpu.get_cpu_capability()


@pytest.mark.parametrize("env", [{"JSIMD_FORCENONE": "1"}, {"JSIMD_FORCESSE2": "1"}], ids=["no-simd", "sse2"])
def test_demo_images_do_not_depend_on_libjpeg_turbos_simd(tmp_path, env):
    """The demo's JPEGs are written and read by libjpeg-turbo (inside Pillow), whose SIMD path is chosen by
    CPU: its integer DCT gives the same bytes and pixels on every path."""
    native = probe(0, "demo-images", str(tmp_path / "a"))
    assert probe(0, "demo-images", str(tmp_path / "b"), **env) == native
