"""How much does Table 1 move when the model is retrained with another seed? The bootstrap CIs cover only the
sampling of evaluation units; the seed-to-seed spread of the model is what decides whether two analyzers
really differ on a model trained by the pipeline (the demo).

    python -m lrp.pipeline.seeds --configfile config/demo.yaml --seeds 0 1 2 3 [--cores 2] [--out results/seeds]

Runs the study once per seed (the config with `models.<m>.train.seed` set, results under <out>/seed<k>; a
finished seed is not recomputed, Snakemake decides), then writes <out>/<dataset>_seed_spread.csv and .md:
per analyzer, μ_w and μ for each seed, their mean, standard deviation and range, and the median bootstrap
CI half-width beside it.
"""

from __future__ import annotations

import argparse
import copy
import subprocess
import sys
from pathlib import Path

from lrp.io import atomic_path, log

ROOT = Path(__file__).resolve().parents[2]


def seed_config(config: dict, seed: int, out) -> dict:
    """`config` with every trained model's seed set to `seed` and its results under `out`/seed<seed>."""
    cfg = copy.deepcopy(config)
    cfg["results"] = str(Path(out) / f"seed{seed}")
    trained = [m for m, spec in cfg["models"].items() if "train" in spec]
    if not trained:
        raise ValueError("the config trains no model (models.<name>.train): there is no seed to vary")
    for m in trained:
        cfg["models"][m]["train"]["seed"] = seed
    return cfg


def spread(tables: dict):
    """{seed: Table 1 DataFrame} -> one row per analyzer: μ_w / μ per seed, mean, sd, min, max, and the
    median over seeds of the bootstrap CI half-width."""
    import pandas as pd

    rows = []
    first = next(iter(tables.values()))
    indexed = {s: t.set_index("analyzer") for s, t in tables.items()}
    for analyzer, label in zip(first["analyzer"], first["label"]):
        row = {"analyzer": analyzer, "label": label}
        for col in ("mu_w", "mu"):
            vals = {s: float(t.loc[analyzer, col]) for s, t in indexed.items()}
            half = [float((t.loc[analyzer, f"{col}_hi"] - t.loc[analyzer, f"{col}_lo"]) / 2) for t in indexed.values()]
            series = pd.Series(vals)  # a seed without a value (NaN) makes the spread NaN: never fewer seeds
            row.update({f"{col}_seed{s}": v for s, v in vals.items()})
            row.update({f"{col}_mean": series.mean(skipna=False), f"{col}_sd": series.std(ddof=1, skipna=False),
                        f"{col}_min": series.min(skipna=False), f"{col}_max": series.max(skipna=False),
                        f"{col}_ci_halfwidth": float(pd.Series(half).median(skipna=False))})
        rows.append(row)
    return pd.DataFrame(rows)


def markdown(df, seeds) -> str:
    head = "| Analyzer | " + " | ".join(f"μ_w seed {s}" for s in seeds) + " | mean ± sd | range | CI ± (bootstrap) |"
    lines = [head, "|:---|" + "---:|" * (len(seeds) + 3)]
    for _, r in df.iterrows():
        per = " | ".join(f"{r[f'mu_w_seed{s}']:.3f}" for s in seeds)
        lines.append(f"| {r['label']} | {per} | {r['mu_w_mean']:.3f} ± {r['mu_w_sd']:.3f} | "
                     f"{r['mu_w_min']:.3f}–{r['mu_w_max']:.3f} | ±{r['mu_w_ci_halfwidth']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    import pandas as pd
    import yaml

    p = argparse.ArgumentParser(prog="python -m lrp.pipeline.seeds", description=__doc__.split("\n")[0])
    p.add_argument("--configfile", required=True)
    p.add_argument("--seeds", type=int, nargs="+", required=True)
    p.add_argument("--cores", default="2")
    p.add_argument("--out", default="results/seeds")
    a = p.parse_args(argv)
    if len(set(a.seeds)) < 2 or len(set(a.seeds)) < len(a.seeds):
        p.error("give at least two different seeds, each once: a spread needs more than one model")
    config = yaml.safe_load(Path(a.configfile).read_text())
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    tables: dict[str, dict] = {}
    for seed in a.seeds:
        cfg_path = out / f"seed{seed}.yaml"
        cfg_path.write_text(yaml.safe_dump(seed_config(config, seed, out), sort_keys=False))
        targets = [f"{out}/seed{seed}/{d}/table1.csv" for d in config["datasets"]]
        log(f"seed {seed}: {' '.join(targets)}")
        # targets before --configfile, which takes several values
        subprocess.run([sys.executable, "-m", "snakemake", *targets, "-s", str(ROOT / "Snakefile"),
                        "--cores", a.cores, "--configfile", str(cfg_path)], check=True)
        for d in config["datasets"]:
            tables.setdefault(d, {})[seed] = pd.read_csv(out / f"seed{seed}" / d / "table1.csv")
    for d, per_seed in tables.items():
        df = spread(per_seed)
        with atomic_path(out / f"{d}_seed_spread.csv") as tmp:
            df.to_csv(tmp, index=False)
        with atomic_path(out / f"{d}_seed_spread.md") as tmp:
            Path(tmp).write_text(markdown(df, a.seeds))
        print(markdown(df, a.seeds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
