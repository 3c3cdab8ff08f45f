import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")  # the lrp package beside the Snakefile

from lrp.pipeline.model import occlusion
from lrp.pipeline.runner import run

# where and in what slices it runs: the rule's resources, not params (RUN_SETTINGS in workflow/rules/common.smk)
run(snakemake, occlusion, model_spec=snakemake.params.model, image_shards=list(snakemake.input.shards),
    out_csv=snakemake.output.csv, out_logits=snakemake.output.logits, batch_size=snakemake.resources.batch_size,
    device=snakemake.resources.device)
