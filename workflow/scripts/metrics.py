import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")  # the lrp package beside the Snakefile

from lrp.pipeline.evaluation import metrics
from lrp.pipeline.runner import run

run(snakemake, metrics, analyzer=snakemake.wildcards.analyzer, image_shards=list(snakemake.input.images),
    attribution_shards=list(snakemake.input.attributions), out_csv=snakemake.output[0],
    index_csv=snakemake.input.samples, tolerance=snakemake.params.tolerance)
