import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")  # the lrp package beside the Snakefile

from lrp.pipeline.report import panel
from lrp.pipeline.runner import run

p = snakemake.params.panel
# where it runs: the rule's resources, not params (RUN_SETTINGS in workflow/rules/common.smk)
run(snakemake, panel, model_spec=snakemake.params.model, image_shards=list(snakemake.input.shards),
    analyzers=snakemake.params.analyzers, patterns_h5=snakemake.input.patterns or None,
    sample_ids=p["sample_ids"], n_images=p["n_images"], flat_analyzer=p["flat_analyzer"],
    device=snakemake.resources.device, out=dict(snakemake.output.items()),
    title=f"{snakemake.wildcards.dataset}")
