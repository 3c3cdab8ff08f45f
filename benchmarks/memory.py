"""Peak memory per image of explaining a batch: the analyzer suite from one forward pass, one analyzer, and a
plain gradient pass, on torchvision ResNet-50 (or VGG-16), CPU or CUDA.

Why a marginal figure: what limits the batch size is the memory each further image costs. Each contender runs
in a fresh process per batch size (CPU: the peak resident set, `ru_maxrss`, only grows), after one warm-up
call at batch 1 (the engine's one-off trace and check; cuDNN's workspaces), so

    per image = (peak(b₂) − peak(b₁)) / (b₂ − b₁)

counts the activations the forward pass records, the relevance maps in flight and the maps returned, and not
the model's weights. On CPU glibc keeps freed memory for reuse, as every pipeline job does (`lrp.allocator`),
so the resident peak is the allocation peak. On CUDA the figure is `torch.cuda.max_memory_allocated`.
The model is built as in `benchmarks/attribution.py` (random weights, non-trivial BatchNorm statistics).

    python -m benchmarks.memory --model resnet50 --device cpu --threads 2 --batches 1 4 \
        --json benchmarks/results/memory_cpu_resnet50.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lrp  # noqa: E402
import lrp.allocator  # noqa: E402
from benchmarks import attribution as bench  # noqa: E402

CONTENDERS = ("gradient_pass", "suite", "lrp_cmp_alpha2_flat")


def _peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def child(model_name: str, device_name: str, contender: str, batch: int, size: int, threads: int) -> dict:
    """One measurement in this process: warm-up at batch 1, then the contender at `batch`."""
    device = torch.device(device_name)
    torch.set_num_threads(threads)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if device.type == "cpu":
        lrp.allocator.retain_freed_memory()
    model, x, targets, patterns = bench.build(device, batch, size, model_name=model_name)
    names = lrp.analyzer_names() if model_name == "vgg16" else bench.STUDY_ANALYZERS

    def run(xb, tb):
        if contender == "gradient_pass":
            return bench.gradient_pass(model, xb, tb)
        if contender == "suite":
            spec = {n: ({"patterns": patterns} if n == "pattern_attribution" else {}) for n in names}
            return lrp.attribute_many(model, xb, tb, spec, bias="toolbox")
        return lrp.attribute(model, xb, tb, contender, bias="toolbox")

    out = run(x[:1], targets[:1])
    del out
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    before = _peak_bytes(device) if device.type == "cpu" else torch.cuda.memory_allocated(device)
    out = run(x, targets)
    peak = _peak_bytes(device)
    del out
    return {"contender": contender, "batch": batch, "peak_bytes": peak, "before_bytes": before}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=sorted(bench.MODEL_TARGETS), default="resnet50")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--batches", type=int, nargs=2, default=None, metavar=("B1", "B2"),
                   help="two batch sizes (default: 1 4 on CPU, 16 64 on CUDA)")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS))
    p.add_argument("--json", default=None)
    p.add_argument("--child", nargs=2, metavar=("CONTENDER", "BATCH"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.model, a.device, a.child[0], int(a.child[1]), a.size, a.threads)))
        return 0
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but CUDA is not available")
    b1, b2 = a.batches or ((1, 4) if a.device == "cpu" else (16, 64))
    if not 0 < b1 < b2:
        p.error(f"--batches needs 0 < B1 < B2, got {b1} {b2}")
    rows = {}
    for contender in a.contenders:
        peaks = {}
        for b in (b1, b2):
            cmd = [sys.executable, "-m", "benchmarks.memory", "--model", a.model, "--device", a.device, "--size",
                   str(a.size), "--threads", str(a.threads), "--child", contender, str(b)]
            done = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
            if done.returncode:
                print(done.stderr, file=sys.stderr)
                return done.returncode
            peaks[b] = json.loads(done.stdout.strip().splitlines()[-1])
        per_image = (peaks[b2]["peak_bytes"] - peaks[b1]["peak_bytes"]) / (b2 - b1)
        rows[contender] = {"per_image_bytes": per_image, "runs": peaks}
        print(f"{contender:22s} {per_image / 2**20:9.1f} MiB per image  (peak at batch {b2}: "
              f"{peaks[b2]['peak_bytes'] / 2**20:.0f} MiB)", flush=True)
    grad = rows["gradient_pass"]["per_image_bytes"] if "gradient_pass" in rows else 0
    for r in rows.values():
        r["ratio_to_gradient"] = r["per_image_bytes"] / grad if grad > 0 else None
    info = {"device": bench.device_name(torch.device(a.device)), "device_type": a.device, "model": a.model,
            "size": a.size, "threads": a.threads, "batches": [b1, b2], "torch": torch.__version__,
            "suite": lrp.analyzer_names() if a.model == "vgg16" else bench.STUDY_ANALYZERS}
    print(" | ".join(f"{k}={v}" for k, v in info.items() if k != "suite"))
    for n, r in rows.items():
        ratio = f"{r['ratio_to_gradient']:.2f}× gradient" if r["ratio_to_gradient"] is not None else ""
        print(f"| {n} | {r['per_image_bytes'] / 2**20:.1f} MiB | {ratio} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"info": info, "contenders": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
