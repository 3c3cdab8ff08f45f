import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")  # the lrp package beside the Snakefile

from lrp.pipeline.attribution import patterns
from lrp.pipeline.runner import run

# where and in what slices it runs: the rule's resources, not params (RUN_SETTINGS in workflow/rules/common.smk)
run(snakemake, patterns, model_spec=snakemake.params.model, image_shards=[snakemake.input.images],
    out_h5=snakemake.output[0], batch_size=snakemake.resources.batch_size, device=snakemake.resources.device,
    max_images=snakemake.params.max_images)
