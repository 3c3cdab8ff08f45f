import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")  # the lrp package beside the Snakefile

from lrp.pipeline.evaluation import fig_pairwise
from lrp.pipeline.runner import run

what = {"mu_w": "μ_w", "pointing": "pointing game"}[snakemake.wildcards.measure]
run(snakemake, fig_pairwise, paired_csv=snakemake.input.paired, table_csv=snakemake.input.table,
    out_png=snakemake.output.png, out_pdf=snakemake.output.pdf, what=what,
    title=f"Paired differences of {what} — {snakemake.wildcards.dataset}")
