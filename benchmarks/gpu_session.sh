#!/usr/bin/env bash
# One device session for issue #3's open targets: CUDA tests (fused kernels included), the attribution benchmark
# (ours vs zennit vs a plain gradient) with the eager and with the fused elementwise kernels, and a profile of
# lrp_cmp_alpha1 with fused kernels. About 5 minutes on an H100. `pipeline` as first argument runs instead the
# end-to-end shard benchmark (eager and fused; `pipeline --fused`: fused only); `pair`: the αβ pair's stacked vs split
# transposed convolution (issue #3, 2026-11-27); `faithfulness`: the region-perturbation throughput (issue #22). Writes everything into one tarball ${OUT:-benchmarks/out}/gpu_session.tgz.
# Needs zennit and isal (the device image lacks both): pass their wheels in .whl/ (see benchmarks/README.md).
# The TF32 and deterministic-mode checks of the 2026-11-27 session: benchmarks/README.md (their code is in git history).
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
python3 -c "import torch, triton; print('torch', torch.__version__, torch.cuda.get_device_name(), 'triton', triton.__version__)" 2>&1 | tee -a "$OUT/gpu.txt"
if [ "${1:-}" = pipeline ]; then  # `pipeline --fused` runs one kind only
  kinds=("${@:2}"); [ ${#kinds[@]} -gt 0 ] || kinds=(--eager --fused)
  for f in "${kinds[@]}"; do
    timeout 150 python3 benchmarks/pipeline.py --device cuda --n 1024 --batch 64 --io-threads 8 $f --json "$OUT/pipeline_cuda${f/--/_}.json" 2>&1 | grep -v "^\[" | tee "$OUT/pipeline_cuda${f/--/_}.txt"
  done
  exit 0
fi
if [ "${1:-}" = pair ]; then  # the αβ pair's transposed convolution on CUDA: stacked vs split (lrp.rules.STACKED_PAIR_DEVICES)
  CMP="lrp_alpha2 lrp_cmp_alpha1 lrp_cmp_alpha2 lrp_cmp_alpha1_flat lrp_cmp_alpha2_flat"
  for p in split stacked; do
    timeout 70 python3 benchmarks/attribution.py --device cuda --batch 64 --repeats 5 --no-zennit --fused --alphabeta-pair $p --only $CMP --json "$OUT/attribution_cuda_fused_$p.json" 2>&1 | tee "$OUT/attribution_cuda_fused_$p.txt"
  done
  timeout 180 python3 benchmarks/attribution.py --device cuda --batch 64 --repeats 5 --check --fused --json "$OUT/attribution_cuda_fused.json" 2>&1 | tee "$OUT/attribution_cuda_fused.txt"
  timeout 70 python3 benchmarks/attribution.py --device cuda --batch 64 --repeats 5 --no-zennit --eager --only $CMP --json "$OUT/attribution_cuda_eager.json" 2>&1 | tee "$OUT/attribution_cuda_eager.txt"
  timeout 60 python3 -m pytest -q -p no:cacheprovider tests/engine/test_engine_oracles.py tests/engine/test_engine_properties.py -k "cuda or oracle" 2>&1 | tail -3 | tee "$OUT/cuda_tests.txt"
  timeout 45 python3 benchmarks/attribution.py --device cuda --batch 64 --profile lrp_cmp_alpha2 --fused --no-zennit 2>&1 | tee "$OUT/profile_cmp_alpha2_fused.txt"
  exit 0
fi
if [ "${1:-}" = faithfulness ]; then  # issue #22: region-perturbation throughput on the GPU, VGG-16 and ResNet-50 at 224²
  for m in vgg16 resnet50; do
    timeout 120 python3 benchmarks/perturbation.py --device cuda --model $m --size 224 --units 64 --steps 100 --batch 256 --quantus-units 0 --study 1000 12 2 --json "$OUT/perturbation_cuda_$m.json" 2>&1 | tee "$OUT/perturbation_cuda_$m.txt"
  done
  timeout 120 python3 -m pytest -q -p no:cacheprovider tests/evaluation/test_perturbation.py tests/pipeline/test_faithfulness.py 2>&1 | tail -3 | tee "$OUT/faithfulness_tests.txt"
  exit 0
fi
# Most important first: the fused engine with zennit and --check (the candidate), then the eager engine on the αβ analyzers.
CMP="lrp_alpha1 lrp_alpha2 lrp_cmp_alpha1 lrp_cmp_alpha2 lrp_cmp_alpha1_flat lrp_cmp_alpha2_flat"
timeout 200 python3 benchmarks/attribution.py --device cuda --batch 64 --repeats 5 --check --fused --json "$OUT/attribution_cuda_fused.json" 2>&1 | tee "$OUT/attribution_cuda_fused.txt"
timeout 90 python3 benchmarks/attribution.py --device cuda --batch 64 --repeats 5 --no-zennit --eager --only $CMP --json "$OUT/attribution_cuda_eager.json" 2>&1 | tee "$OUT/attribution_cuda_eager.txt"
timeout 100 python3 -m pytest -q -p no:cacheprovider tests/engine/test_kernels.py tests/engine/test_engine_oracles.py tests/engine/test_engine_properties.py tests/pipeline/test_attribution_job.py -k "cuda or oracle" 2>&1 | tail -5 | tee "$OUT/cuda_tests.txt"
timeout 60 python3 benchmarks/attribution.py --device cuda --batch 64 --repeats 5 --no-zennit --fused --cudnn-benchmark --only $CMP --json "$OUT/attribution_cuda_fused_cudnn_benchmark.json" 2>&1 | tee "$OUT/attribution_cuda_fused_cudnn_benchmark.txt"
timeout 45 python3 benchmarks/attribution.py --device cuda --batch 64 --profile lrp_cmp_alpha1 --fused --no-zennit 2>&1 | tee "$OUT/profile_cmp_alpha1_fused.txt"
