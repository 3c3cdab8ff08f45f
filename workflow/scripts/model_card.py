import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")  # the lrp package beside the Snakefile

from lrp.pipeline.model import model_card
from lrp.pipeline.runner import run

run(snakemake, model_card, model_spec=snakemake.params.model, index_csv=snakemake.input.samples,
    occlusion_csv=snakemake.input.occlusion, logits_h5=snakemake.input.logits,
    task=snakemake.params.task, thresholds=snakemake.params.thresholds,
    out_json=snakemake.output[0], train_card=snakemake.input.training or None)
