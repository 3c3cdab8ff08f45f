import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")  # the lrp package beside the Snakefile

from lrp.pipeline.evaluation import fig3
from lrp.pipeline.runner import run

run(snakemake, fig3, metric_csvs=dict(snakemake.input.items()), out_png=snakemake.output.png,
    out_pdf=snakemake.output.pdf, min_count=snakemake.params.min_count, title=f"Fig. 3 — {snakemake.wildcards.dataset}")
