import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")  # the lrp package beside the Snakefile

from lrp.pipeline.evaluation import fig_pointing_per_class
from lrp.pipeline.runner import run

metrics = {k: v for k, v in snakemake.input.items() if k != "samples"}
run(snakemake, fig_pointing_per_class, metric_csvs=metrics, samples_csv=snakemake.input.samples,
    out_png=snakemake.output.png, out_pdf=snakemake.output.pdf,
    title=f"Pointing game per class — {snakemake.wildcards.dataset}")
