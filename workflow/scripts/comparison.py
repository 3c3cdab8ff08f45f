import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")  # the lrp package beside the Snakefile

from lrp.pipeline.report import comparison
from lrp.pipeline.runner import run

p, out = snakemake.params, snakemake.output
inputs = {d: {k: snakemake.input[f"{k}_{d}"] for k in ("samples", "table1", "table2", "table3")} for d in p.datasets}
metrics = {d: {a: snakemake.input[f"metrics_{d}_{i}"] for i, a in enumerate(p.analyzers)} for d in p.datasets}
run(snakemake, comparison, name=snakemake.wildcards.name, inputs=inputs, models=p.models, metrics=metrics,
    n_boot=p.evaluation["n_boot"], seed=p.evaluation["seed"], min_count=p.min_count,
    out={"csv": out.csv, "md": out.md, "tex": out.tex, "png": out.png, "pdf": out.pdf, "pairs": out.pairs,
         "fig3_png": out.fig3_png, "fig3_pdf": out.fig3_pdf})
