import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")  # the lrp package beside the Snakefile

from lrp.pipeline.data import baseline
from lrp.pipeline.runner import run

run(snakemake, baseline, index_csv=snakemake.input[0], out_csv=snakemake.output[0],
    tolerance=snakemake.params.tolerance)
