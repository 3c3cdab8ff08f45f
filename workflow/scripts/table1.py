import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")  # the lrp package beside the Snakefile

from lrp.pipeline.runner import run
from lrp.pipeline.evaluation import table1

ev = snakemake.params.evaluation
run(snakemake, table1, metric_csvs=dict(snakemake.input.items()), paper_dataset=snakemake.params.paper,
    out_csv=snakemake.output.csv, out_md=snakemake.output.md, out_tex=snakemake.output.tex,
    n_boot=ev.get("n_boot", 1000), seed=ev.get("seed", 0), title=f"Table 1 — {snakemake.wildcards.dataset}")
