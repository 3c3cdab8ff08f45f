import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")  # the lrp package beside the Snakefile

from lrp.pipeline.evaluation import table1
from lrp.pipeline.runner import run

ev, out, ds = snakemake.params.evaluation, snakemake.output, snakemake.wildcards.dataset
run(snakemake, table1, metric_csvs=dict(snakemake.input.items()), paper_dataset=snakemake.params.paper,
    out_csv=out.csv, out_md=out.md, out_tex=out.tex, n_boot=ev["n_boot"], seed=ev["seed"], title=f"Table 1 — {ds}",
    out_paired=out.paired, out_figure=(out.pairwise_png, out.pairwise_pdf))
