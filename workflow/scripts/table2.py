import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")  # the lrp package beside the Snakefile

from lrp.evaluation.map_scores import top_k_pixels
from lrp.pipeline.evaluation import table2
from lrp.pipeline.runner import run

ev, p = snakemake.params.evaluation, snakemake.params
run(snakemake, table2, metric_csvs=dict(snakemake.input.items()), out_csv=snakemake.output.csv,
    out_md=snakemake.output.md, out_tex=snakemake.output.tex, out_paired=snakemake.output.paired,
    n_boot=ev["n_boot"], seed=ev["seed"], tolerance=ev["pointing_tolerance"],
    top_k=top_k_pixels(p.input_size, p.top_k), title=f"Table 2 — {snakemake.wildcards.dataset}")
