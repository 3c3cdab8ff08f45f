import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")  # the lrp package beside the Snakefile

from lrp.pipeline.runner import run
from lrp.pipeline.evaluation import metrics

run(snakemake, metrics, analyzer=snakemake.wildcards.analyzer, image_shards=list(snakemake.input.images),
    attribution_shards=list(snakemake.input.attributions), out_csv=snakemake.output[0])
