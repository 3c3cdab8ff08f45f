import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")  # the lrp package beside the Snakefile

from lrp.models.finetune import prepare_training_data
from lrp.runner import run

run(snakemake, prepare_training_data, name=snakemake.wildcards.name, cfg=snakemake.params.cfg,
    out_json=snakemake.output[0])
