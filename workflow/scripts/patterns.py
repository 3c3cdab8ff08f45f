import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")  # the lrp package beside the Snakefile

from lrp.runner import run
from lrp.stages import patterns

run(snakemake, patterns, model_spec=snakemake.params.model, image_shards=[snakemake.input.images],
    out_h5=snakemake.output[0], batch_size=snakemake.params.batch_size, device=snakemake.params.device,
    max_images=snakemake.params.max_images)
