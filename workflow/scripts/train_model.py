import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")  # the lrp package beside the Snakefile

from lrp.pipeline.model import train_model
from lrp.pipeline.runner import run

spec = {**snakemake.params.spec, "device": snakemake.resources.device}  # a resource: not a re-run trigger
run(snakemake, train_model, data_json=snakemake.input[0], spec=spec,
    out_model=snakemake.output.model, card_json=snakemake.output.card)
