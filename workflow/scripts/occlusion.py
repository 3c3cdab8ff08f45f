import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")  # the lrp package beside the Snakefile

from lrp.runner import run
from lrp.stages import occlusion

run(snakemake, occlusion, model_spec=snakemake.params.model, image_shards=list(snakemake.input.shards),
    out_csv=snakemake.output.csv, out_logits=snakemake.output.logits, batch_size=snakemake.params.batch_size,
    device=snakemake.params.device)
