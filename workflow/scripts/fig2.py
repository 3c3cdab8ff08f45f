import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")  # the lrp package beside the Snakefile

from lrp.pipeline.evaluation import fig2
from lrp.pipeline.runner import run

run(snakemake, fig2, occlusion_csv=snakemake.input[0], out_png=snakemake.output.png, out_pdf=snakemake.output.pdf,
    title=f"Fig. 2 — {snakemake.wildcards.dataset}")
