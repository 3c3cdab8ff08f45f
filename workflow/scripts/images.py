import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")  # the lrp package beside the Snakefile

from lrp.pipeline.data import images
from lrp.pipeline.runner import run

run(snakemake, images, name=snakemake.wildcards.dataset, cfg=snakemake.params.cfg,
    data_json=snakemake.input[0], out_json=snakemake.output[0])
