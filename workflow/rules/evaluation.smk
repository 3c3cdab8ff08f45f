# Evaluation: mu / mu_w per sample, Table 1 beside the paper, Figs. 2 and 3.


rule metrics:
    """Localisation per evaluation unit for one analyzer: mu, mu_w, rank accuracy, top-k, energy, pointing game."""
    input:
        images=image_shards,
        attributions=attribution_shards,
        samples=f"{R}/{{dataset}}/samples.csv",
    output:
        f"{R}/{{dataset}}/metrics/{{analyzer}}.csv",
    log:
        f"{R}/logs/metrics/{{dataset}}_{{analyzer}}.log",
    conda:
        ENV
    params:
        tolerance=config["evaluation"]["pointing_tolerance"],
        code=lrp_sources("pipeline.evaluation:metrics"),
    script:
        "../scripts/metrics.py"


rule table1:
    """Table 1: one row per analyzer, bootstrap 95 % CIs, the paper's numbers beside ours, ties with the best marked."""
    input:
        unpack(metric_files),
    output:
        csv=report(
            f"{R}/{{dataset}}/table1.csv",
            caption="../report/table1.rst",
            category="Data (CSV)",
            labels={"dataset": "{dataset}"},
        ),
        md=f"{R}/{{dataset}}/table1.md",
        tex=f"{R}/{{dataset}}/table1.tex",
        paired=f"{R}/{{dataset}}/paired_mu_w.csv",
    log:
        f"{R}/logs/table1/{{dataset}}.log",
    conda:
        ENV
    params:
        paper=paper_of,
        evaluation=evaluation_cfg("pointing_tolerance"),
        code=dataset_code("pipeline.evaluation:table1"),
    script:
        "../scripts/table1.py"


rule table2:
    """Table 2: pointing game, rank accuracy, top-k, energy pointing game, with paired-bootstrap CIs."""
    input:
        unpack(metric_files),
    output:
        csv=report(
            f"{R}/{{dataset}}/table2.csv",
            caption="../report/table2.rst",
            category="Data (CSV)",
            labels={"dataset": "{dataset}"},
        ),
        md=f"{R}/{{dataset}}/table2.md",
        tex=f"{R}/{{dataset}}/table2.tex",
        paired=f"{R}/{{dataset}}/paired_pointing.csv",
    log:
        f"{R}/logs/table2/{{dataset}}.log",
    conda:
        ENV
    params:
        evaluation=evaluation_cfg(),
        top_k=config["attribution"]["top_k"],
        input_size=lambda wildcards: dataset(wildcards.dataset)["input_size"],
        code=dataset_code("pipeline.evaluation:table2"),
    script:
        "../scripts/table2.py"


rule fig_pairwise:
    """The paired-bootstrap matrices: every analyzer-vs-analyzer difference, Holm-significant ones marked."""
    input:
        paired=f"{R}/{{dataset}}/paired_{{measure}}.csv",
        table=lambda wildcards: f"{R}/{wildcards.dataset}/{PAIRED_TABLE[wildcards.measure]}.csv",
    output:
        png=report(
            f"{R}/{{dataset}}/fig_pairwise_{{measure}}.png",
            caption="../report/fig_pairwise.rst",
            category="Figures",
            labels={"figure": "pairwise {measure}", "dataset": "{dataset}"},
        ),
        pdf=f"{R}/{{dataset}}/fig_pairwise_{{measure}}.pdf",
    log:
        f"{R}/logs/fig_pairwise/{{dataset}}_{{measure}}.log",
    wildcard_constraints:
        measure="|".join(PAIRED_TABLE),
    conda:
        ENV
    params:
        code=dataset_code("pipeline.evaluation:fig_pairwise"),
    script:
        "../scripts/fig_pairwise.py"


rule fig_pointing:
    """The pointing game per class and analyzer."""
    input:
        unpack(metric_files),
        samples=f"{R}/{{dataset}}/samples.csv",
    output:
        png=report(
            f"{R}/{{dataset}}/fig_pointing_per_class.png",
            caption="../report/fig_pointing.rst",
            category="Figures",
            labels={"figure": "pointing per class", "dataset": "{dataset}"},
        ),
        pdf=f"{R}/{{dataset}}/fig_pointing_per_class.pdf",
    log:
        f"{R}/logs/fig_pointing/{{dataset}}.log",
    conda:
        ENV
    params:
        code=dataset_code("pipeline.evaluation:fig_pointing_per_class"),
    script:
        "../scripts/fig_pointing.py"


rule fig3:
    """Fig. 3: mean mu per box-size bin (100 bins) per analyzer, with the uniform baseline."""
    input:
        unpack(metric_files),
    output:
        png=report(
            f"{R}/{{dataset}}/fig3_mu_by_box_size.png",
            caption="../report/fig3.rst",
            category="Figures",
            labels={"figure": "Fig. 3", "dataset": "{dataset}"},
        ),
        pdf=f"{R}/{{dataset}}/fig3_mu_by_box_size.pdf",
    log:
        f"{R}/logs/fig3/{{dataset}}.log",
    conda:
        ENV
    params:
        min_count=config["evaluation"]["min_bin_count"],
        code=dataset_code("pipeline.evaluation:fig3"),
    script:
        "../scripts/fig3.py"


rule fig2:
    """Fig. 2: logit change when occluding the object vs the context, by occluded area."""
    input:
        f"{R}/{{dataset}}/occlusion.csv",
    output:
        png=report(
            f"{R}/{{dataset}}/fig2_occlusion.png",
            caption="../report/fig2.rst",
            category="Figures",
            labels={"figure": "Fig. 2", "dataset": "{dataset}"},
        ),
        pdf=f"{R}/{{dataset}}/fig2_occlusion.pdf",
    log:
        f"{R}/logs/fig2/{{dataset}}.log",
    conda:
        ENV
    params:
        code=lrp_sources("pipeline.evaluation:fig2"),
    script:
        "../scripts/fig2.py"
