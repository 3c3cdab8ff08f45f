"""Speed of the LRP engine on torchvision VGG-16 or ResNet-50, against a plain gradient pass and against zennit.

All timings come from ONE process and the same inputs. Each figure is the median over `--repeats` runs,
taken after one warm-up run; on CUDA, torch.cuda.synchronize() is called before each clock read.
  (a) gradient pass: forward + autograd backward to the input, with the parameters frozen;
  (b) each analyzer alone: lrp.attribute;
  (c) the whole suite: lrp.attribute_many over all 13 built-in analyzers. pattern_attribution gets random
      patterns of the weight shapes, keyed by qualified layer name;
  (d) zennit 0.5.1, one analyzer at a time: the native composites used in tests/engine/test_engine_zennit.py
      (on ResNet-50 with zennit's ResNetCanonizer, as tests/engine/test_engine_graph_zennit.py).
      PatternAttribution and the baseline have no zennit equivalent (n/a); zennit's plain gradient is
      its Gradient attributor without a composite.
`--model resnet50`: torchvision ResNet-50 with random weights and non-trivial BatchNorm statistics (eps = 0,
so that zennit's canonized "identity" norm, x/√(1 + eps), explains the same function as the merged one); the
suite is then the 11 analyzers of the ImageNet study (config/config.yaml), and the targets are #20's.
On CPU, glibc keeps freed memory for reuse (`lrp.allocator`, as in every pipeline job) unless
`--malloc default`; this is process-wide, so it applies to every contender alike.
Every αβ analyzer runs with bias="toolbox", the convention zennit uses. The iNNvestigate convention costs
the same. TF32 is switched off for every contender, because our engine disables it for exactness.

`--check` compares each of our maps with zennit's on the benchmark input. It reports the per-sample
max|Δ| / max|R|, so a speed figure can never come from a wrong map.

    python -m benchmarks.attribution --device cpu --threads 2 --batch 4 --size 224 --repeats 3 --check \
        --json benchmarks/results_cpu.json
    python -m benchmarks.attribution --device cuda --batch 64 --repeats 5 --check
    python -m benchmarks.attribution --model resnet50 --device cpu --threads 2 --batch 4 --repeats 3 --check \
        --check-dtype float64
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
import torchvision
from torch import nn

if __package__ in (None, ""):  # run as `python benchmarks/attribution.py`: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lrp  # noqa: E402
import lrp.allocator  # noqa: E402
import lrp.kernels  # noqa: E402
import lrp.rules  # noqa: E402

TARGETS = {  # the targets, as ratios to the gradient pass of the same run
    "lrp_cmp_alpha1": 1.6, "lrp_cmp_alpha1_flat": 1.6, "lrp_cmp_alpha2": 2.2, "lrp_cmp_alpha2_flat": 2.2,
}
SUITE_TARGET, ZENNIT_SPEEDUP_TARGET = 12.0, 2.5
MODEL_TARGETS = {  # per model: (per-analyzer targets, suite target in gradient passes, speed-up over zennit)
    "vgg16": (TARGETS, SUITE_TARGET, ZENNIT_SPEEDUP_TARGET),
    "resnet50": ({"lrp_cmp_alpha1_flat": 1.6}, 7.0, 3.0),
}
STUDY_ANALYZERS = ["lrp_cmp_alpha2_flat", "lrp_cmp_alpha2", "lrp_cmp_alpha1", "lrp_cmp_alpha1_flat", "lrp_alpha2",
                   "lrp_alpha1", "lrp_z", "lrp_cam", "guided_backprop", "pattern_attribution", "baseline"]
"""The ImageNet study's analyzers (config/config.yaml `analyzers`): the suite timed on ResNet-50."""


def stab(z: torch.Tensor) -> torch.Tensor:
    """Our safe_divide as a zennit stabiliser: exact zeros -> 1e-7."""
    return z + (z == 0).to(z) * 1e-7


def zennit_composites(model_name: str = "vgg16"):
    """analyzer -> factory of the equivalent zennit composite (None: plain gradient); PA/baseline: absent.
    ResNet-50: every composite with zennit's ResNetCanonizer (BatchNorm merged, its residual Sum made a module)."""
    from zennit import composites as zc
    from zennit import rules as zr
    from zennit.torchvision import ResNetCanonizer
    from zennit.types import Activation, AvgPool, Convolution

    canon = (lambda: [ResNetCanonizer()]) if model_name == "resnet50" else (lambda: None)
    sum_rule = [] if model_name != "resnet50" else [(_zennit_sum_type(), zr.Norm(stabilizer=stab))]

    def layer_map(conv, dense):
        return zc.LayerMapComposite([(Activation, zr.Pass()), (AvgPool, zr.Norm(stabilizer=stab)), *sum_rule,
                                     (Convolution, conv), (nn.Linear, dense)], canonizers=canon())

    return {
        "lrp_z": lambda: layer_map(zr.Epsilon(epsilon=stab), zr.Epsilon(epsilon=stab)),
        "lrp_epsilon": lambda: layer_map(zr.Epsilon(epsilon=1e-7), zr.Epsilon(epsilon=1e-7)),
        "lrp_alpha1": lambda: layer_map(zr.AlphaBeta(1.0, 0.0, stabilizer=stab),
                                        zr.AlphaBeta(1.0, 0.0, stabilizer=stab)),
        "lrp_alpha2": lambda: layer_map(zr.AlphaBeta(2.0, 1.0, stabilizer=stab),
                                        zr.AlphaBeta(2.0, 1.0, stabilizer=stab)),
        "lrp_cmp_alpha1": lambda: zc.EpsilonPlus(epsilon=0.1, stabilizer=stab, canonizers=canon()),
        "lrp_cmp_alpha2": lambda: zc.EpsilonAlpha2Beta1(epsilon=0.1, stabilizer=stab, canonizers=canon()),
        "lrp_cmp_alpha1_flat": lambda: zc.EpsilonPlusFlat(epsilon=0.1, stabilizer=stab, canonizers=canon()),
        "lrp_cmp_alpha2_flat": lambda: zc.EpsilonAlpha2Beta1Flat(epsilon=0.1, stabilizer=stab, canonizers=canon()),
        "lrp_cam": lambda: layer_map(zr.Flat(stabilizer=stab), zr.Epsilon(epsilon=stab)),
        "guided_backprop": lambda: zc.GuidedBackprop(canonizers=canon()),
        "gradient": lambda: None,
    }


def _zennit_sum_type():
    from zennit.layer import Sum

    return Sum


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def build(device, batch, size, seed=0, model_name="vgg16"):
    """torchvision VGG-16 or ResNet-50, random weights and (non-zero, so the bias convention is exercised)
    biases; ResNet-50's BatchNorms with non-trivial statistics and affine parameters."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models, model_name)(weights=None)
    g = torch.Generator().manual_seed(seed + 2)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                m.bias.normal_(0.0, 0.1)
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.2)
                m.eps = 0.0  # zennit's merged "identity" norm divides by √(1 + eps): 0 keeps both the same function
    model = model.eval().requires_grad_(False).to(device)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(batch, 3, size, size, generator=g).to(device)
    with torch.no_grad():
        logits = model(x)
    targets = logits.argmax(1)  # positive logits: GB_ours = logit · GB_zennit holds
    assert (logits.gather(1, targets[:, None]) > 0).all()
    patterns = {layer.name: torch.rand_like(layer.module.weight) for layer in lrp.graph.layers_of(model)
                if layer.kind in ("conv", "linear")}  # keyed as the canonized graph names its layers
    return model, x, targets, patterns


def paired(fns: dict, repeats: int, device):
    """Time each of `fns` (name -> callable) after one warm-up each, `repeats` rounds, each round running the
    gradient pass (key 'gradient_pass', which must be in `fns`) first and then the others.

    Why paired: a ratio to the gradient pass is taken per round (t_f / t_grad of the same round) and the median
    of those is reported, so a machine whose load drifts during the run (shared CPUs) biases the ratios far
    less than two medians taken minutes apart. Returns ({name: [seconds]}, {name: last output}).
    """
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    outs = {}
    for name, fn in fns.items():  # warm-up: cuDNN algorithm choice, our engine's one-off model check
        outs[name] = fn()
        sync()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            outs[name] = None
            sync()
            t0 = time.perf_counter()
            outs[name] = fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    return times, outs


def med_ratio(num, den):
    return statistics.median(a / b for a, b in zip(num, den))


def gradient_pass(model, x, targets):
    xg = x.detach().clone().requires_grad_(True)
    out = model(xg)
    (g,) = torch.autograd.grad(out, xg, torch.zeros_like(out).scatter_(1, targets[:, None], 1.0))
    return g


def zennit_run(model, x, targets, analyzer, make):
    from zennit.attribution import Gradient

    composite = make()
    xg = x.detach().clone().requires_grad_(True)

    def start(out):
        onehot = torch.zeros_like(out).scatter_(1, targets[:, None], 1.0)
        return onehot if analyzer in ("gradient", "guided_backprop") else onehot * out

    with Gradient(model=model, composite=composite) as attributor:
        _, R = attributor(xg, start)
    return R


def as_ours(model, x, targets, analyzer, Rz):
    """zennit's map in our convention: our GB starts from the logit, zennit's (timed) run from the one-hot, so
    its map is scaled by the (positive, see `build`) target logit; every other map is compared as it is."""
    if analyzer != "guided_backprop":
        return Rz
    with torch.no_grad():
        return Rz * model(x).gather(1, targets[:, None]).view(-1, 1, 1, 1)


def rel_diff(ours, ref):
    """max over samples of max|Δ| / max|ref| per sample."""
    d = (ours - ref).flatten(1).abs().amax(1) / ref.flatten(1).abs().amax(1).clamp_min(1e-30)
    return float(d.max())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=sorted(MODEL_TARGETS), default="vgg16")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--batch", type=int, default=None, help="default: 4 on CPU, 64 on CUDA")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: 2 on CPU)")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--quick", action="store_true", help="smoke run: batch 2, 64×64, 1 repeat")
    p.add_argument("--check", action="store_true", help="compare every map with zennit's (max rel. diff)")
    p.add_argument("--check-tol", type=float, default=1e-4,
                   help="fail (exit 1) if a map differs from zennit's by more (fp32 default 1e-4)")
    p.add_argument("--check-dtype", choices=["float32", "float64"], default="float32",
                   help="float64: --check runs on a float64 copy of the model and batch, after the (float32) timings. "
                        "Why: on random-weight ResNet-50, LRP_CAM (♭ through residual sums whose z-rule divides by "
                        "cancelling summands), LRP-z and GB are ill-conditioned in float32, so two correct engines "
                        "differ there by far more than 1e-4")
    p.add_argument("--no-zennit", action="store_true", help="skip (d)")
    p.add_argument("--only", nargs="*", default=None, help="time only these analyzers in (b)/(d)")
    p.add_argument("--profile", default=None, metavar="ANALYZER",
                   help="print a torch.profiler table of one lrp.attribute call of ANALYZER")
    p.add_argument("--malloc", choices=["retain", "default"], default="retain",
                   help="retain: glibc keeps freed memory for reuse, as every pipeline job does (lrp.allocator); "
                        "default: glibc's own behaviour. Applies to every contender of the run")
    p.add_argument("--cudnn-benchmark", action="store_true",
                   help="let cuDNN time its algorithms per shape (torch.backends.cudnn.benchmark) for every contender; "
                        "the warm-up run absorbs the tuning")
    kinds = p.add_mutually_exclusive_group()
    kinds.add_argument("--fused", dest="kernels", action="store_const", const=True,
                       help="fused elementwise kernels (attribute_many(..., fused=True), lrp.kernels) on any device; "
                            "the warm-up run absorbs the compilation")
    kinds.add_argument("--eager", dest="kernels", action="store_const", const=False,
                       help="eager elementwise steps on any device. Default: the library's (fused on CUDA only)")
    p.add_argument("--alphabeta-pair", choices=["auto", "stacked", "split"], default="auto",
                   help="αβ (β ≠ 0) after a ReLU: one stacked transposed convolution or two "
                        "(lrp.rules.STACKED_PAIR_DEVICES; auto: the library's choice for the device)")
    a = p.parse_args(argv)
    fused = lrp.kernels.resolve(a.kernels, a.device)
    if a.alphabeta_pair != "auto":
        lrp.rules.STACKED_PAIR_DEVICES = {a.device} if a.alphabeta_pair == "stacked" else set()
    stacked_pair = a.device in lrp.rules.STACKED_PAIR_DEVICES
    malloc = lrp.allocator.retain_freed_memory() if a.malloc == "retain" else "glibc defaults"

    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but CUDA is not available")
    batch = a.batch or (64 if device.type == "cuda" else 4)
    size, repeats = a.size, a.repeats
    if a.quick:
        batch, size, repeats = min(batch, 2), 64, 1
    threads = a.threads or (2 if device.type == "cpu" else torch.get_num_threads())
    torch.set_num_threads(threads)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = a.cudnn_benchmark

    model, x, targets, patterns = build(device, batch, size, model_name=a.model)
    per_analyzer_targets, suite_target, zennit_target = MODEL_TARGETS[a.model]
    names = lrp.analyzer_names() if a.model == "vgg16" else STUDY_ANALYZERS
    selected = names if a.only is None else [n for n in names if n in a.only]
    try:
        zmap = {} if a.no_zennit else zennit_composites(a.model)
    except ImportError:
        if a.check:
            p.error("--check needs zennit (pure Python: pip install zennit==0.5.1, or put its package on PYTHONPATH)")
        print("zennit is not installed: skipping (d)", file=sys.stderr)
        zmap = {}

    def ours_one(name):
        extra = {"patterns": patterns} if name == "pattern_attribution" else {}
        return lambda: lrp.attribute(model, x, targets, name, bias="toolbox", fused=fused, **extra)

    def suite():
        return lrp.attribute_many(model, x, targets,
                                  {n: ({"patterns": patterns} if n == "pattern_attribution" else {}) for n in names},
                                  bias="toolbox", fused=fused)

    info = {"device": device_name(device), "device_type": device.type, "torch": torch.__version__,
            "torchvision": torchvision.__version__, "threads": threads, "batch": batch, "size": size,
            "repeats": repeats,
            "model": f"torchvision {a.model} (random weights, random biases"
                     f"{', random BatchNorm statistics, eps 0' if a.model == 'resnet50' else ''}), float32, TF32 off",
            "python": sys.version.split()[0], "malloc": malloc,
            "cudnn_benchmark": bool(a.cudnn_benchmark and device.type == "cuda"), "fused": fused,
            "alphabeta_pair": "stacked" if stacked_pair else "split",
            "check_dtype": a.check_dtype if a.check else None}
    try:
        import zennit
        info["zennit"] = getattr(zennit, "__version__", "0.5.1")
    except ImportError:
        info["zennit"] = None
    print(" | ".join(f"{k}={v}" for k, v in info.items()), flush=True)

    if a.profile:
        ours_one(a.profile)()  # warm-up
        from torch.profiler import ProfilerActivity, profile
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=acts) as prof:
            ours_one(a.profile)()
            if device.type == "cuda":
                torch.cuda.synchronize()
        key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=20))
        return 0

    rows, zennit_maps, grad_times = {}, {}, []
    grad = lambda: gradient_pass(model, x, targets)  # noqa: E731
    for name in selected:
        fns = {"gradient_pass": grad, "ours": ours_one(name)}
        if name in zmap and not a.no_zennit:
            fns["zennit"] = (lambda n: lambda: zennit_run(model, x, targets, n, zmap[n]))(name)
        times, outs = paired(fns, repeats, device)
        grad_times += times["gradient_pass"]
        t, tg = statistics.median(times["ours"]), times["gradient_pass"]
        rows[name] = {"ours_s": t, "ours_times": times["ours"], "paired_gradient_times": tg,
                      "ours_ratio_to_gradient": med_ratio(times["ours"], tg)}
        line = f"ours   {name:22s} {t:9.4f} s  {rows[name]['ours_ratio_to_gradient']:6.2f}× grad"
        if "zennit" in times:
            tz = statistics.median(times["zennit"])
            rows[name].update(zennit_s=tz, zennit_times=times["zennit"],
                              zennit_ratio_to_gradient=med_ratio(times["zennit"], tg),
                              zennit_over_ours=med_ratio(times["zennit"], times["ours"]))
            line += (f" | zennit {tz:9.4f} s  {rows[name]['zennit_ratio_to_gradient']:6.2f}× grad  "
                     f"zennit/ours {rows[name]['zennit_over_ours']:5.2f}")
            if a.check and a.check_dtype == "float32":
                Rz = as_ours(model, x, targets, name, outs["zennit"])
                rows[name]["check_rel_diff"] = rel_diff(outs["ours"], Rz)
                zennit_maps[name] = Rz
                line += f"  check {rows[name]['check_rel_diff']:.1e}"
        del outs
        print(line, flush=True)

    times, outs = paired({"gradient_pass": grad, "suite": suite}, repeats, device)
    grad_times += times["gradient_pass"]
    t_suite, maps = statistics.median(times["suite"]), outs["suite"]
    suite_ratio = med_ratio(times["suite"], times["gradient_pass"])
    t_grad = statistics.median(grad_times)
    if a.check and a.check_dtype == "float32":  # the suite's maps must match zennit's too
        for name, Rz in zennit_maps.items():
            rows[name]["suite_check_rel_diff"] = rel_diff(maps[name], Rz)
    del maps, zennit_maps, outs
    if a.check and a.check_dtype == "float64":
        check_in_float64(model, x, targets, patterns, names, [n for n in selected if n in zmap], zmap, rows)
    zennit_names = [n for n in selected if "zennit_s" in rows[n]]
    z_total = sum(rows[n]["zennit_s"] for n in zennit_names)
    z_norm = sum(rows[n]["zennit_ratio_to_gradient"] for n in zennit_names)
    ours_total_matching = sum(rows[n]["ours_s"] for n in zennit_names)
    summary = {
        "gradient_s": t_grad, "gradient_times": grad_times,
        "suite_s": t_suite, "suite_times": times["suite"], "suite_paired_gradient_times": times["gradient_pass"],
        "suite_ratio_to_gradient": suite_ratio,
        "suite_analyzers": len(names),
        "ours_one_by_one_total_s": sum(rows[n]["ours_s"] for n in selected),
        "zennit_one_by_one_total_s": z_total if zennit_names else None,
        "zennit_analyzers": zennit_names,
        "ours_one_by_one_total_same_analyzers_s": ours_total_matching,
        "zennit_total_over_suite": (z_total / t_suite) if zennit_names else None,
        # load-robust version: both sides in units of their paired gradient passes
        "zennit_total_ratio_to_gradient": z_norm if zennit_names else None,
        "zennit_total_over_suite_paired": (z_norm / suite_ratio) if zennit_names else None,
    }
    targets_met = {n: rows[n]["ours_ratio_to_gradient"] <= lim for n, lim in per_analyzer_targets.items()
                   if n in rows}
    if len(selected) == len(names):
        targets_met[f"suite_le_{suite_target:g}x_gradient"] = suite_ratio <= suite_target
        if zennit_names:
            targets_met[f"suite_{zennit_target:g}x_faster_than_zennit"] = z_norm / suite_ratio >= zennit_target
    summary["targets_met"] = targets_met

    print()
    print(table(rows, summary, selected, a.check))
    bad = {n: r.get("check_rel_diff") for n, r in rows.items()
           if max(r.get("check_rel_diff", 0.0), r.get("suite_check_rel_diff", 0.0)) > a.check_tol}
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"info": info, "analyzers": rows, "summary": summary, "check_failures": bad}, f, indent=1)
    if bad:
        print(f"CHECK FAILED (> {a.check_tol:g}): {bad}", file=sys.stderr)
        return 1
    return 0


def check_in_float64(model, x, targets, patterns, names, checked, zmap, rows):
    """--check-dtype float64: our maps (one by one and from the suite) against zennit's on float64 copies."""
    import copy

    model64, x64 = copy.deepcopy(model).double(), x.double()
    spec = {n: ({"patterns": {k: v.double() for k, v in patterns.items()}} if n == "pattern_attribution" else {})
            for n in names}
    suite = lrp.attribute_many(model64, x64, targets, spec, bias="toolbox")
    for name in checked:
        Rz = as_ours(model64, x64, targets, name, zennit_run(model64, x64, targets, name, zmap[name]))
        one = lrp.attribute(model64, x64, targets, name, bias="toolbox")
        rows[name]["check_rel_diff"] = rel_diff(one, Rz)
        rows[name]["suite_check_rel_diff"] = rel_diff(suite[name], Rz)
        print(f"check (float64) {name:22s} {rows[name]['check_rel_diff']:.1e}", flush=True)


def table(rows, s, names, check):
    g = s["gradient_s"]
    head = "| analyzer | ours (s) | ours / gradient | zennit (s) | zennit / gradient | zennit / ours |"
    sep = "|---|---:|---:|---:|---:|---:|"
    if check:
        head += " max rel. diff vs zennit |"
        sep += "---:|"
    out = [head, sep, f"| gradient pass (autograd) | {g:.3f} | 1.00 | | | |" + (" |" if check else "")]
    for n in names:
        r = rows[n]
        z = (f"{r['zennit_s']:.3f} | {r['zennit_ratio_to_gradient']:.2f} | {r['zennit_over_ours']:.2f}"
             if "zennit_s" in r else "n/a | | ")
        line = f"| {n} | {r['ours_s']:.3f} | {r['ours_ratio_to_gradient']:.2f} | {z} |"
        if check:
            line += f" {r['check_rel_diff']:.1e} |" if "check_rel_diff" in r else " |"
        out.append(line)
    out.append(f"| **suite: attribute_many, all {s['suite_analyzers']}** | {s['suite_s']:.3f} | "
               f"{s['suite_ratio_to_gradient']:.2f} | | | |" + (" |" if check else ""))
    if s["zennit_one_by_one_total_s"]:
        out.append(f"| zennit one by one ({len(s['zennit_analyzers'])} analyzers) vs our suite | | | "
                   f"{s['zennit_one_by_one_total_s']:.3f} | {s['zennit_total_ratio_to_gradient']:.2f} | "
                   f"{s['zennit_total_over_suite_paired']:.2f} |" + (" |" if check else ""))
    out.append("")
    out.append("targets: " + ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in s["targets_met"].items()))
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
