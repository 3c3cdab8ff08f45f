import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")  # the lrp package beside the Snakefile

from lrp.pipeline.data import index
from lrp.pipeline.runner import run

run(snakemake, index, data_json=snakemake.input[0], cfg=snakemake.params.cfg, out_csv=snakemake.output.samples,
    report_json=snakemake.output.report, key=f"datasets.{snakemake.wildcards.dataset}")
