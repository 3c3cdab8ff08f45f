import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")  # the lrp package beside the Snakefile

from pathlib import Path

from lrp.pipeline.report import provenance
from lrp.pipeline.runner import run

run(snakemake, provenance, files=list(snakemake.input), config=snakemake.params.config,
    out_json=snakemake.output[0], root=Path(snakemake.output[0]).parent.parent,  # paths relative to results/
    plugins=snakemake.params.plugins)
