import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")  # the lrp package beside the Snakefile

from lrp.pipeline.model import training_data
from lrp.pipeline.runner import run

run(snakemake, training_data, name=snakemake.wildcards.name, cfg=snakemake.params.cfg,
    out_json=snakemake.output[0])
