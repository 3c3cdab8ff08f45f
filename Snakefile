# lrp-bench: the localisation study of Kohlbrenner et al. (IJCNN 2020), Table 1 and Figs. 2-3.
#   snakemake --cores 8 --use-conda                         # the paper's study (config/config.yaml)
#   snakemake --cores 2 --configfile config/demo.yaml       # the embedded demo, CPU, minutes
import sys

from snakemake.utils import min_version

min_version("9.0")

# The `lrp` library lives beside this Snakefile (each thin script adds it to its own path, too).
sys.path.insert(0, workflow.basedir)


# The paper's study unless a config is given (--configfile replaces it rather than merging into it).
if not config:

    configfile: f"{workflow.basedir}/config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/attribution.smk"
include: "workflow/rules/evaluation.smk"
include: "workflow/rules/faithfulness.smk"
include: "workflow/rules/report.smk"


report: "workflow/report/workflow.rst"


rule all:
    default_target: True
    input:
        all_targets(),
