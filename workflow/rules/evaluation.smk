# Evaluation: mu / mu_w per sample, Table 1 beside the paper, Figs. 2 and 3.


rule metrics:
    """mu and mu_w per evaluation unit for one analyzer (baseline: analytic, from the masks)."""
    input:
        images=image_shards,
        attributions=attribution_shards,
    output:
        f"{R}/{{dataset}}/metrics/{{analyzer}}.csv",
    log:
        f"{R}/logs/metrics/{{dataset}}_{{analyzer}}.log",
    conda:
        ENV
    params:
        code=lrp_sources("pipeline.evaluation:metrics"),
    script:
        "../scripts/metrics.py"


rule table1:
    """Table 1: one row per analyzer, bootstrap 95 % CIs, the paper's numbers beside ours."""
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
    log:
        f"{R}/logs/table1/{{dataset}}.log",
    conda:
        ENV
    params:
        paper=paper_of,
        evaluation=evaluation_cfg(),
        code=dataset_code("pipeline.evaluation:table1"),
    script:
        "../scripts/table1.py"


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
