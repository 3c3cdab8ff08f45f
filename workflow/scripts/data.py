import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")  # the lrp package beside the Snakefile

from lrp.pipeline.data import data
from lrp.pipeline.runner import run

run(snakemake, data, name=snakemake.wildcards.dataset, cfg=snakemake.params.cfg, out_json=snakemake.output[0])
