# Report: Fig. 1-style panels, a summary page per dataset, and the provenance manifest.
#   snakemake --report report.html   (after the study ran) collects everything marked report() below.


rule panel:
    """Fig. 1-style panels: every analyzer on a few images; the flat rule on the first n = 1..all convs."""
    input:
        shards=image_shards,
        weights=model_weights,
        card=ancient(f"{R}/{{dataset}}/model_card.json"),  # a gate: a passed check
        patterns=dataset_patterns,
    output:
        analyzers_png=report(
            f"{R}/{{dataset}}/fig1_analyzers.png",
            caption="../report/fig1_analyzers.rst",
            category="Figures",
            labels={"figure": "Fig. 1 (analyzers)", "dataset": "{dataset}"},
        ),
        analyzers_pdf=f"{R}/{{dataset}}/fig1_analyzers.pdf",
        flat_png=report(
            f"{R}/{{dataset}}/fig1_flat_layers.png",
            caption="../report/fig1_flat_layers.rst",
            category="Figures",
            labels={"figure": "Fig. 1 (flat layers)", "dataset": "{dataset}"},
        ),
        flat_pdf=f"{R}/{{dataset}}/fig1_flat_layers.pdf",
    log:
        f"{R}/logs/panel/{{dataset}}.log",
    conda:
        ENV
    threads: config["attribution"]["threads"]
    resources:
        **run_resources(),
    params:
        model=model_cfg,
        analyzers=dataset_analyzer_options,
        panel=panel_settings,
        code=dataset_code("pipeline.report:panel"),
    script:
        "../scripts/panel.py"


rule summary:
    """The page a reader opens first: model card, baseline check vs the paper, Table 1 with Kendall τ."""
    input:
        table=f"{R}/{{dataset}}/table1.csv",
        table2=f"{R}/{{dataset}}/table2.csv",
        table3=f"{R}/{{dataset}}/table3.csv",
        sanity=f"{R}/{{dataset}}/sanity.csv",
        baseline=f"{R}/{{dataset}}/baseline.csv",
        card=f"{R}/{{dataset}}/model_card.json",
        spread=seed_spread_of,
    output:
        report(
            f"{R}/{{dataset}}/summary.html",
            caption="../report/summary.rst",
            category="Summary",
            labels={"dataset": "{dataset}"},
        ),
    log:
        f"{R}/logs/summary/{{dataset}}.log",
    conda:
        ENV
    params:
        paper=paper_of,
        config=config,
        code=dataset_code("pipeline.report:summary"),
    script:
        "../scripts/summary.py"


rule provenance:
    """Versions, the configuration and the sha256 of every output of a dataset."""
    input:
        manifest_files,
    output:
        report(
            f"{R}/{{dataset}}/provenance.json",
            caption="../report/provenance.rst",
            category="Provenance",
            labels={"dataset": "{dataset}"},
        ),
    log:
        f"{R}/logs/provenance/{{dataset}}.log",
    conda:
        ENV
    params:
        config=config,
        plugins=dataset_plugins,
        code=dataset_code("pipeline.report:provenance"),
    script:
        "../scripts/provenance.py"


rule comparison:
    """Which method, on which model: the datasets of `comparisons.<name>` (the same units, one model each) side
    by side (Tables 1-3 with ranks, Kendall's tau between the models' rankings, each analyzer's paired
    difference of mu_w between the models, Fig. 3 across models)."""
    input:
        unpack(comparison_inputs),
    output:
        csv=report(
            f"{R}/comparisons/{{name}}.csv",
            caption="../report/comparison.rst",
            category="Data (CSV)",
            labels={"comparison": "{name}", "table": "model comparison"},
        ),
        md=f"{R}/comparisons/{{name}}.md",
        tex=f"{R}/comparisons/{{name}}.tex",
        png=report(
            f"{R}/comparisons/{{name}}.png",
            caption="../report/comparison.rst",
            category="Figures",
            labels={"comparison": "{name}", "figure": "model comparison"},
        ),
        pdf=f"{R}/comparisons/{{name}}.pdf",
        pairs=f"{R}/comparisons/{{name}}_pairs.csv",
        fig3_png=report(
            f"{R}/comparisons/{{name}}_fig3.png",
            caption="../report/comparison_fig3.rst",
            category="Figures",
            labels={"comparison": "{name}", "figure": "Fig. 3 across models"},
        ),
        fig3_pdf=f"{R}/comparisons/{{name}}_fig3.pdf",
    log:
        f"{R}/logs/comparison/{{name}}.log",
    conda:
        ENV
    params:
        datasets=comparison_datasets,
        models=comparison_models,
        analyzers=comparison_analyzers,
        evaluation=evaluation_cfg("pointing_tolerance"),
        min_count=config["evaluation"]["min_bin_count"],
        code=lrp_sources("pipeline.report:comparison"),
    script:
        "../scripts/comparison.py"
