"""What does float16 storage do to μ? Plain cast against lrp's per-map power-of-two scale, on real maps.

Reads the float32 attribution shards of a finished run (default: the demo, `make demo`; the trained demo
model at 64²), and scores every analyzer's maps three ways: as computed (float32), cast to float16 as is,
and stored as `lrp.storage.attributions.ShardWriter` stores float16 (divided by a power-of-two scale per map). It
reports the largest and the mean per-sample |Δμ| and |Δμ_w| against float32, the shift of their means (Table 1's
numbers), and how many samples became or stopped being undefined (no positive relevance left).
`--divide` also shrinks the maps first: a 224² VGG-16 spreads the same relevance over 12.25× the pixels of
a 64² map, so its values are about that much smaller, and the plain cast loses more of them.

    python benchmarks/float16_precision.py --results results/demo --divide 1 12.25 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lrp.evaluation.metrics import mu_from_sums, relevance_sums  # noqa: E402
from lrp.storage.attributions import power_of_two_scale, read_attrs, read_shard  # noqa: E402


def scores(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(μ, μ_w) per sample, as the metrics stage computes them."""
    return mu_from_sums(**relevance_sums(maps, masks))


def compare(maps: np.ndarray, masks: np.ndarray) -> dict:
    """|Δ| against float32 per sample (max, mean) and of the mean (Table 1's number), for μ and μ_w; and how
    many samples changed between defined and undefined (NaN: no positive relevance left)."""
    ref = scores(maps, masks)
    plain = maps.astype(np.float16).astype(np.float32)
    scale = power_of_two_scale(maps)[:, None, None]
    scaled = (maps / scale).astype(np.float16).astype(np.float32) * scale
    out = {}
    for label, m in (("plain_float16", plain), ("scaled_float16", scaled)):
        got = scores(m, masks)
        row = {"nan_status_changed": int((np.isnan(got[0]) != np.isnan(ref[0])).sum())}
        for name, a, b in (("mu", got[0], ref[0]), ("mu_w", got[1], ref[1])):
            both = ~np.isnan(a) & ~np.isnan(b)
            d = np.abs(a[both] - b[both])
            row[name] = {"max_abs_diff": float(d.max(initial=0.0)), "mean_abs_diff": float(d.mean()) if d.size else 0.0,
                         "mean_shift": float(abs(a[both].mean() - b[both].mean())) if d.size else 0.0}
        out[label] = row
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default="results/demo", help="a dataset's results directory")
    p.add_argument("--shard", default="1", help="which shard to read (samples of one image shard)")
    p.add_argument("--divide", type=float, nargs="+", default=[1.0, 12.25])
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    root = Path(a.results)
    with h5py.File(root / "images" / f"{a.shard}.h5") as f:
        masks = f["masks"][:]
        image_ids = f["sample_id"].asstr()[:] if "sample_id" in f else None
    res = {"results": str(root), "shard": a.shard, "n": int(len(masks)), "analyzers": {}}
    print(f"{root}, shard {a.shard}: {len(masks)} samples; against float32: max / mean |Δ| per sample, "
          "shift of the mean, samples whose μ became or stopped being undefined")
    for d in sorted((root / "attributions").iterdir()):
        path = d / f"{a.shard}.h5"
        if not path.exists():
            continue
        if read_attrs(path).get("precision") != "float32":
            raise SystemExit(f"{path} is not a float32 shard: nothing to compare float16 against")
        ids, maps = read_shard(path)
        if image_ids is not None and list(ids) != list(image_ids):
            raise SystemExit(f"{path} and its image shard disagree on sample order")
        res["analyzers"][d.name] = {}
        for div in a.divide:
            r = compare(maps / np.float32(div), masks)
            res["analyzers"][d.name][str(div)] = r
            for metric in ("mu", "mu_w"):
                cells = []
                for label in ("plain_float16", "scaled_float16"):
                    x = r[label][metric]
                    cells.append(f"{label.split('_')[0]:6s} {x['max_abs_diff']:.1e} / {x['mean_abs_diff']:.1e} / "
                                 f"{x['mean_shift']:.1e} / {r[label]['nan_status_changed']}")
                print(f"  {d.name:20s} ÷{div:<6g} {metric:4s}  " + "   ".join(cells))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
