import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")  # the lrp package beside the Snakefile

from lrp.pipeline.runner import run
from lrp.pipeline.data import baseline

run(snakemake, baseline, index_csv=snakemake.input[0], out_csv=snakemake.output[0])
