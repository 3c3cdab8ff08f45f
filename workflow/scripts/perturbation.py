import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")  # the lrp package beside the Snakefile

from pathlib import Path

from lrp.pipeline.faithfulness import perturbation
from lrp.pipeline.runner import run

# batch size and device: the rule's resources, not params (RUN_SETTINGS in workflow/rules/common.smk)
maps = {Path(p).parent.name: p for p in snakemake.input.attributions}
run(snakemake, perturbation, model_spec=snakemake.params.model, image_shard_h5=snakemake.input.images,
    attribution_shards=maps, index_csv=snakemake.input.samples, settings=snakemake.params.settings,
    out_h5=snakemake.output[0], batch_size=snakemake.resources.batch_size, device=snakemake.resources.device)
