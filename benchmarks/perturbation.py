"""Region-perturbation throughput: perturbed images per second of `lrp.evaluation.region_perturbation` beside a
plain forward pass of the same rows (the floor: the model's own cost) and Quantus 0.6.0's `RegionPerturbation`
(the peer, one sample at a time in numpy), measured in the same run; and what the study's faithfulness stage costs
at the configured settings.

    python -m benchmarks.perturbation --model demo_vgg --size 64 --threads 2 \
        --json benchmarks/results/perturbation_cpu_demo.json
    python -m benchmarks.perturbation --model vgg16 --size 224 --units 4 --steps 20 --threads 2

"Images" are forward rows: every unit costs steps + 1 of them per map and order. Timings are medians of
`--repeats` paired rounds (each round times the plain forward first). The cost lines multiply the measured rate
out: units × (analyzers + 1 random map) × orders × (steps + 1) rows.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lrp.evaluation.perturbation import region_perturbation, region_size  # noqa: E402


def build(model_name: str, size: int, units: int, seed: int = 0, device: str = "cpu"):
    """The model (random seeded weights), inputs, targets and a signed map per unit."""
    torch.manual_seed(seed)
    if model_name == "demo_vgg":
        from lrp.training.demo import DemoVGG

        model = DemoVGG(n_classes=6, image_size=size)
    else:
        import torchvision

        model = getattr(torchvision.models, model_name)(weights=None)
    model = model.eval().requires_grad_(False)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(units, 3, size, size, generator=g)
    with torch.no_grad():
        targets = model(x).argmax(1)
    relevance = torch.randn(units, size, size, generator=g)
    dev = torch.device(device)
    return model.to(dev), x.to(dev), targets.to(dev), relevance.to(dev)


def plain_forward(model, x, rows: int, batch: int):
    """`rows` forward rows of the inputs in batches of `batch`: what any perturbation method must pay."""
    with torch.no_grad():
        for start in range(0, rows, batch):
            n = min(batch, rows - start)
            model(x[torch.arange(start, start + n) % len(x)])


def quantus_run(model, x, targets, relevance, region: int, steps: int):
    import quantus

    metric = quantus.RegionPerturbation(patch_size=region, regions_evaluation=steps, order="morf", abs=False,
                                        normalise=False, perturb_baseline=0.0, disable_warnings=True,
                                        display_progressbar=False)
    return metric(model=model, x_batch=x.numpy(), y_batch=targets.numpy(), a_batch=relevance[:, None].numpy(),
                  device="cpu", softmax=False, channel_first=True, batch_size=len(x))  # noqa: F841


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="demo_vgg", help="demo_vgg or a torchvision classifier (vgg16, resnet50)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--units", type=int, default=16)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--region", type=int, default=9, help="region side at 224 px, scaled to --size")
    ap.add_argument("--batch", type=int, default=256, help="forward rows per batch")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (Quantus runs on the CPU only: skipped on cuda)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quantus-units", type=int, default=2, help="units for Quantus (0: skip it)")
    ap.add_argument("--study", type=int, nargs=3, default=[1000, 11, 2], metavar=("UNITS", "ANALYZERS", "ORDERS"),
                    help="the faithfulness stage to cost: max_units, computed analyzers, orders")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    region = region_size(a.size, a.region)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # the study's fp32
    model, x, targets, relevance = build(a.model, a.size, a.units, device=a.device)
    cuda = x.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    rows = a.units * (a.steps + 1)
    fns = {"plain_forward": lambda: plain_forward(model, x, rows, a.batch),
           "region_perturbation": lambda: region_perturbation(model, x, targets, relevance, region=region,
                                                              steps=a.steps, batch_size=a.batch)}
    for f in fns.values():  # warm-up
        f()
    times = {k: [] for k in fns}
    for _ in range(a.repeats):
        for k, f in fns.items():
            sync()
            tic = time.perf_counter()
            f()
            sync()
            times[k].append(time.perf_counter() - tic)
    med = {k: statistics.median(v) for k, v in times.items()}
    res = {"info": {"model": a.model, "size": a.size, "region": region, "steps": a.steps, "units": a.units,
                    "batch": a.batch, "threads": a.threads, "repeats": a.repeats, "torch": torch.__version__,
                    "device": torch.cuda.get_device_name(x.device) if cuda else "cpu",
                    "cpu": platform.processor() or platform.machine(),
                    "cpu_capability": torch.backends.cpu.get_cpu_capability()},
           "images_per_s": {k: rows / v for k, v in med.items()},
           "ratio_to_plain_forward": med["region_perturbation"] / med["plain_forward"]}
    if a.quantus_units and not cuda:
        try:
            import quantus  # noqa: F401
        except ImportError:
            res["quantus"] = "not installed"
        else:
            q = slice(0, a.quantus_units)
            tic = time.perf_counter()
            quantus_run(model, x[q], targets[q], relevance[q], region, a.steps)
            t = time.perf_counter() - tic
            res["images_per_s"]["quantus_region_perturbation"] = a.quantus_units * (a.steps + 1) / t
            res["speedup_vs_quantus"] = res["images_per_s"]["region_perturbation"] / (
                a.quantus_units * (a.steps + 1) / t)
    units, analyzers, orders = a.study
    study_rows = units * (analyzers + 1) * orders * (a.steps + 1)
    res["study"] = {"units": units, "analyzers": analyzers, "orders": orders, "rows": study_rows,
                    "seconds": study_rows / res["images_per_s"]["region_perturbation"]}
    rate = res["images_per_s"]
    where = res["info"]["device"] if cuda else f"{a.threads} threads, {res['info']['cpu_capability']}"
    print(f"region perturbation, {a.model} at {a.size}² ({region}² regions, {a.steps} steps, {a.units} units, "
          f"batch {a.batch}, {where}):")
    print(f"  plain forward        {rate['plain_forward']:9.0f} images/s")
    print(f"  region_perturbation  {rate['region_perturbation']:9.0f} images/s "
          f"({res['ratio_to_plain_forward']:.2f}× the plain forward's time)")
    if "quantus_region_perturbation" in rate:
        print(f"  Quantus 0.6.0        {rate['quantus_region_perturbation']:9.0f} images/s "
              f"(ours {res['speedup_vs_quantus']:.1f}× faster)")
    print(f"  study cost: {units} units × {analyzers + 1} maps × {orders} orders × {a.steps + 1} = {study_rows:,} "
          f"images → {res['study']['seconds'] / 60:.1f} min")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(res, indent=2) + "\n")
    return res


if __name__ == "__main__":
    main()
