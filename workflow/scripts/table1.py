import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")  # the lrp package beside the Snakefile

from lrp.pipeline.evaluation import table1
from lrp.pipeline.runner import run

ev = snakemake.params.evaluation
run(snakemake, table1, metric_csvs=dict(snakemake.input.items()), paper_dataset=snakemake.params.paper,
    out_csv=snakemake.output.csv, out_md=snakemake.output.md, out_tex=snakemake.output.tex,
    n_boot=ev["n_boot"], seed=ev["seed"], title=f"Table 1 — {snakemake.wildcards.dataset}",
    out_paired=snakemake.output.paired)
