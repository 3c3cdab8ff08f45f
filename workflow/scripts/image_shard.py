import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")  # the lrp package beside the Snakefile

from lrp.pipeline.data import image_shard
from lrp.pipeline.runner import run

run(snakemake, image_shard, data_json=snakemake.input.data, index_csv=snakemake.input.samples,
    cfg=snakemake.params.cfg, shard=int(snakemake.wildcards.get("shard", 0)),
    n_shards=snakemake.params.cfg["n_shards"] if "shard" in snakemake.wildcards.keys() else 1,
    out_h5=snakemake.output[0], workers=snakemake.threads)
