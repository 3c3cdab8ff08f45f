import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")  # the lrp package beside the Snakefile

from lrp.pipeline.report import summary
from lrp.pipeline.runner import run

run(snakemake, summary, dataset=snakemake.wildcards.dataset, table_csv=snakemake.input.table,
    baseline_csv=snakemake.input.baseline, model_card_json=snakemake.input.card, paper_dataset=snakemake.params.paper,
    config=snakemake.params.config, out_html=snakemake.output[0], seed_spread_csv=snakemake.input.spread or None,
    table2_csv=snakemake.input.table2, table3_csv=snakemake.input.table3,
    sanity_csv=snakemake.input.sanity)
