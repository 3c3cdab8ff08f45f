#!/usr/bin/env bash
# One device session: CUDA tests, the attribution benchmark (ours vs zennit vs a plain gradient; again with
# cudnn.benchmark on for the lrp_cmp analyzers), TF32 error,
# a profile of lrp_cmp_alpha1, the end-to-end shard benchmark and deterministic mode. Writes JSON/logs to ${OUT:-benchmarks/out}.
# Needs zennit and isal (the device image lacks both): pass their wheels in .whl/ (see benchmarks/README.md).
set -uo pipefail
# The device tool returns at most 8 files: every log and JSON goes to a scratch folder, packed into one tarball at the end.
FINAL=${OUT:-benchmarks/out}; mkdir -p "$FINAL"; OUT=$(mktemp -d)
trap 'tar czf "$FINAL/gpu_session.tgz" -C "$OUT" .' EXIT
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONPATH=${PYTHONPATH:-$PWD}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"
timeout 60 python3 -m pytest -q -p no:cacheprovider tests/test_engine_oracles.py tests/test_engine_properties.py tests/test_shards.py tests/test_attribution_job.py -k "cuda or oracle" 2>&1 | tail -5 | tee "$OUT/cuda_tests.txt"
timeout 150 python3 benchmarks/attribution.py --device cuda --batch 64 --repeats 5 --check --json "$OUT/attribution_cuda.json" 2>&1 | tee "$OUT/attribution_cuda.txt"
timeout 60 python3 benchmarks/attribution.py --device cuda --batch 64 --repeats 5 --no-zennit --cudnn-benchmark --only lrp_cmp_alpha1 lrp_cmp_alpha1_flat lrp_cmp_alpha2 lrp_cmp_alpha2_flat --json "$OUT/attribution_cuda_cudnn_benchmark.json" 2>&1 | tee "$OUT/attribution_cuda_cudnn_benchmark.txt"
timeout 30 python3 benchmarks/attribution.py --device cuda --batch 64 --profile lrp_cmp_alpha1 --no-zennit 2>&1 | tee "$OUT/profile_cmp_alpha1.txt"
timeout 40 python3 - <<'PY' 2>&1 | tee "$OUT/tf32.txt"
import torch, torchvision, lrp
torch.manual_seed(0)
m = torchvision.models.vgg16(weights=None).eval().requires_grad_(False).cuda()
x = torch.randn(16, 3, 224, 224, device="cuda"); t = torch.randint(0, 1000, (16,), device="cuda")
names = ["lrp_z", "lrp_cmp_alpha1_flat", "lrp_cmp_alpha2_flat", "lrp_alpha2", "lrp_cam", "guided_backprop", "gradient"]
a = lrp.attribute_many(m, x, t, names, tf32=False); b = lrp.attribute_many(m, x, t, names, tf32=True)
for n in names:
    err = ((a[n] - b[n]).abs().amax((1, 2, 3)) / a[n].abs().amax((1, 2, 3))).max().item()
    print(f"tf32 vs fp32 {n:22s} max |Δ|/max|R| per sample: {err:.2e}")
PY
timeout 110 python3 benchmarks/pipeline.py --device cuda --n 1024 --batch 64 --io-threads 8 --json "$OUT/pipeline_cuda.json" 2>&1 | grep -v "^\[" | tee "$OUT/pipeline_cuda.txt"
timeout 40 python3 - <<'PY' 2>&1 | tee "$OUT/deterministic.txt"
import warnings, torch, torchvision, lrp
from lrp.stages import set_deterministic
set_deterministic(True)  # attribution.deterministic: true
torch.manual_seed(0)
m = torchvision.models.vgg16(weights=None).eval().requires_grad_(False).cuda()
x = torch.randn(8, 3, 224, 224, device="cuda"); t = torch.randint(0, 1000, (8,), device="cuda")
names = lrp.analyzer_names()
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    a = lrp.attribute_many(m, x, t, [n for n in names if n != "pattern_attribution"])
    b = lrp.attribute_many(m, x, t, [n for n in names if n != "pattern_attribution"])
print("bit-identical on re-run:", {n: bool(torch.equal(a[n], b[n])) for n in a})
print("nondeterministic-op warnings:", sorted({str(x.message)[:100] for x in w}))
PY
