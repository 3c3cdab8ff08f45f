from lrp.runner import run
from lrp.stages import data

run(snakemake, data, name=snakemake.wildcards.dataset, cfg=snakemake.params.cfg, results=snakemake.params.results,
    out_json=snakemake.output[0])
