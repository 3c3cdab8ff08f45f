import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")  # the lrp package beside the Snakefile

from lrp.pipeline.faithfulness import sanity
from lrp.pipeline.runner import run

p, out = snakemake.params, snakemake.output
run(snakemake, sanity, model_spec=p.model, image_shard_h5=snakemake.input.images, analyzers=p.analyzers,
    patterns_h5=snakemake.input.patterns or None, out_csv=out.csv, out_png=out.png, out_pdf=out.pdf,
    n_units=p.n_units, seed=p.seed, device=snakemake.resources.device,
    title=f"Cascading randomisation — {snakemake.wildcards.dataset}")
