import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")  # the lrp package beside the Snakefile

from lrp.pipeline.runner import run
from lrp.pipeline.attribution import patterns

# where and in what slices it runs: read here, not params (RUN_SETTINGS in workflow/rules/common.smk)
att = snakemake.config.get("attribution", {})
run(snakemake, patterns, model_spec=snakemake.params.model, image_shards=[snakemake.input.images],
    out_h5=snakemake.output[0], batch_size=att.get("batch_size", 16), device=att.get("device", "auto"),
    max_images=snakemake.params.max_images)
