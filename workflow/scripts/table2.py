import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")  # the lrp package beside the Snakefile

from lrp.evaluation.map_scores import top_k_pixels
from lrp.pipeline.evaluation import table2
from lrp.pipeline.runner import run

ev, p, out, ds = snakemake.params.evaluation, snakemake.params, snakemake.output, snakemake.wildcards.dataset
metrics = {k: v for k, v in snakemake.input.items() if k != "samples"}
run(snakemake, table2, metric_csvs=metrics, out_csv=out.csv, out_md=out.md, out_tex=out.tex, out_paired=out.paired,
    n_boot=ev["n_boot"], seed=ev["seed"], tolerance=ev["pointing_tolerance"],
    top_k=top_k_pixels(p.input_size, p.top_k), title=f"Table 2 — {ds}", samples_csv=snakemake.input.samples,
    out_figures={"pairwise": (out.pairwise_png, out.pairwise_pdf), "per_class": (out.per_class_png, out.per_class_pdf)})
