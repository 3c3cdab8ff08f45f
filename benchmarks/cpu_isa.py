"""What the reproducibility pin costs: oneDNN capped at AVX2 (the pipeline's default,
`reproducibility.onednn_max_cpu_isa: AVX2`) against no cap, on this CPU, for the demo's two CPU workloads:
training the demo VGG (64², Adam, batch 32) and explaining it (all built-in analyzers of the demo study from
one forward pass, batch 32), each in a fresh process per setting (the cap is read when oneDNN starts).

    python benchmarks/cpu_isa.py [--images 512] [--threads 2] [--repeats 3] [--json out.json]

Prints seconds per setting (best of --repeats) and the ratio capped / uncapped, with the plain gradient's time
in the same process as the unit the attribution suite is measured in elsewhere (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ANALYZERS = ["lrp_cmp_alpha2_flat", "lrp_cmp_alpha2", "lrp_cmp_alpha1", "lrp_cmp_alpha1_flat", "lrp_alpha2",
             "lrp_alpha1", "lrp_z", "lrp_epsilon", "lrp_cam", "guided_backprop", "gradient"]


def worker(images: int, threads: int, repeats: int) -> dict:
    import torch

    import lrp
    from lrp.models.architectures import DemoVGG

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(images, 3, 64, 64, generator=g)
    y = (torch.rand(images, 6, generator=g) > 0.7).float()
    out = {"train_s": [], "attribute_s": [], "gradient_s": []}
    for _ in range(repeats):
        torch.manual_seed(0)
        model = DemoVGG(6)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        t0 = time.perf_counter()
        for i in range(0, images, 32):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x[i:i + 32]), y[i:i + 32])
            opt.zero_grad()
            loss.backward()
            opt.step()
        out["train_s"].append(time.perf_counter() - t0)
        model.eval()
        t = torch.zeros(32, dtype=torch.long)
        for key, names in (("attribute_s", ANALYZERS), ("gradient_s", ["gradient"])):
            t0 = time.perf_counter()
            for i in range(0, images, 32):
                lrp.attribute_many(model, x[i:i + 32], t, names)
            out[key].append(time.perf_counter() - t0)
    return {k: min(v) for k, v in out.items()} | {"capability": torch.backends.cpu.get_cpu_capability()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        print(json.dumps(worker(a.images, a.threads, a.repeats)))
        return
    res = {}
    for isa in ("ALL", "AVX2"):
        env = {**os.environ, "ONEDNN_MAX_CPU_ISA": isa, "PYTHONPATH": str(ROOT)}
        cmd = [sys.executable, __file__, "--worker", "--images", str(a.images), "--threads", str(a.threads),
               "--repeats", str(a.repeats)]
        res[isa] = json.loads(subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?") if Path("/proc/cpuinfo").exists() else "?"
    print(f"{cpu}; ATen {res['ALL']['capability']}; {a.threads} threads; {a.images} images 64², best of {a.repeats}")
    for key, what in (("train_s", "train 1 epoch"), ("attribute_s", f"{len(ANALYZERS)} analyzers"),
                      ("gradient_s", "gradient")):
        native, pinned = res["ALL"][key], res["AVX2"][key]
        print(f"  {what:16s} uncapped {native:7.2f} s   AVX2 cap {pinned:7.2f} s   ratio {pinned / native:.2f}")
    for isa in res:
        res[isa]["suite_over_gradient"] = res[isa]["attribute_s"] / res[isa]["gradient_s"]
    print(f"  suite / gradient: uncapped {res['ALL']['suite_over_gradient']:.2f}×, "
          f"AVX2 cap {res['AVX2']['suite_over_gradient']:.2f}×")
    if a.json:
        Path(a.json).write_text(json.dumps({"cpu": cpu, "threads": a.threads, "images": a.images, **res}, indent=2))


if __name__ == "__main__":
    main()
