import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")  # the lrp package beside the Snakefile

from lrp.pipeline.faithfulness import faithfulness
from lrp.pipeline.runner import run

ev, out = snakemake.params.evaluation, snakemake.output
run(snakemake, faithfulness, perturbation_shards=list(snakemake.input.shards), table1_csv=snakemake.input.table1,
    out={"csv": out.csv, "md": out.md, "tex": out.tex, "curves": (out.curves_png, out.curves_pdf),
         "scatter": (out.scatter_png, out.scatter_pdf)},
    n_boot=ev["n_boot"], seed=ev["seed"], title=f"Table 3 — {snakemake.wildcards.dataset}")
