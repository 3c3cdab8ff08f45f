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
    """Table 1: one row per analyzer, bootstrap 95 % CIs, the paper's numbers beside ours, ties with the best
    marked; the paired differences of mu_w as a CSV and a figure (one job: a job of its own costs a Python start)."""
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
        pairwise_png=report(
            f"{R}/{{dataset}}/fig_pairwise_mu_w.png",
            caption="../report/fig_pairwise.rst",
            category="Figures",
            labels={"figure": "pairwise mu_w", "dataset": "{dataset}"},
        ),
        pairwise_pdf=f"{R}/{{dataset}}/fig_pairwise_mu_w.pdf",
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
    """Table 2: pointing game, rank accuracy, top-k, energy pointing game, with paired-bootstrap CIs; the
    pointing game's paired differences (CSV, figure) and its per-class figure."""
    input:
        unpack(metric_files),
        samples=f"{R}/{{dataset}}/samples.csv",
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
        pairwise_png=report(
            f"{R}/{{dataset}}/fig_pairwise_pointing.png",
            caption="../report/fig_pairwise.rst",
            category="Figures",
            labels={"figure": "pairwise pointing", "dataset": "{dataset}"},
        ),
        pairwise_pdf=f"{R}/{{dataset}}/fig_pairwise_pointing.pdf",
        per_class_png=report(
            f"{R}/{{dataset}}/fig_pointing_per_class.png",
            caption="../report/fig_pointing.rst",
            category="Figures",
            labels={"figure": "pointing per class", "dataset": "{dataset}"},
        ),
        per_class_pdf=f"{R}/{{dataset}}/fig_pointing_per_class.pdf",
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
