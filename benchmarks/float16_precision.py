"""What does float16 storage do to μ? Plain cast against lrp's per-map power-of-two scale, on real maps.

Reads the float32 attribution shards of a finished run (default: the demo, `make demo`; the trained demo
model at 64²), and scores every analyzer's maps three ways: as computed (float32), cast to float16 as is,
and stored as `lrp.shards.ShardWriter` stores float16 (divided by a power-of-two scale per map). It reports
the largest and the mean per-sample |Δμ| against float32, and the shift of the mean μ (Table 1's number).
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

from lrp.metrics import mu_from_sums, relevance_sums  # noqa: E402
from lrp.shards import power_of_two_scale, read_attrs, read_shard  # noqa: E402


def mu_of(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    return mu_from_sums(**relevance_sums(maps, masks))[0]


def compare(maps: np.ndarray, masks: np.ndarray) -> dict:
    mu32 = mu_of(maps, masks)
    plain = maps.astype(np.float16).astype(np.float32)
    scale = power_of_two_scale(maps)[:, None, None]
    scaled = (maps / scale).astype(np.float16).astype(np.float32) * scale
    out = {}
    for label, m in (("plain_float16", plain), ("scaled_float16", scaled)):
        d = np.abs(mu_of(m, masks) - mu32)
        out[label] = {"max_abs_dmu": float(np.nanmax(d)), "mean_abs_dmu": float(np.nanmean(d)),
                      "mean_mu_shift": float(abs(np.nanmean(mu_of(m, masks)) - np.nanmean(mu32)))}
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
    res = {"results": str(root), "shard": a.shard, "n": int(len(masks)), "analyzers": {}}
    print(f"{root}, shard {a.shard}: {len(masks)} samples; |Δμ| against float32 (max / mean / shift of mean μ)")
    for d in sorted((root / "attributions").iterdir()):
        path = d / f"{a.shard}.h5"
        if not path.exists():
            continue
        if read_attrs(path).get("precision") != "float32":
            raise SystemExit(f"{path} is not a float32 shard: nothing to compare float16 against")
        maps = read_shard(path)[1]
        res["analyzers"][d.name] = {}
        for div in a.divide:
            r = compare(maps / np.float32(div), masks)
            res["analyzers"][d.name][str(div)] = r
            p16, s16 = r["plain_float16"], r["scaled_float16"]
            print(f"  {d.name:20s} ÷{div:<6g} plain {p16['max_abs_dmu']:.1e} / {p16['mean_abs_dmu']:.1e} / "
                  f"{p16['mean_mu_shift']:.1e}   scaled {s16['max_abs_dmu']:.1e} / {s16['mean_abs_dmu']:.1e} / "
                  f"{s16['mean_mu_shift']:.1e}")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
