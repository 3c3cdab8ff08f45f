# Faithfulness beside localisation: region perturbation of the stored maps, Table 3, the sanity check.


rule perturbation:
    """Region perturbation (MoRF, LeRF) of every analyzer's maps and a random map on one shard's selected units."""
    input:
        images=f"{R}/{{dataset}}/images/{{shard}}.h5",
        attributions=shard_attributions,
        samples=f"{R}/{{dataset}}/samples.csv",
        weights=model_weights,
        card=ancient(f"{R}/{{dataset}}/model_card.json"),  # a gate: a passed check, not an input
    output:
        f"{R}/{{dataset}}/perturbation/{{shard}}.h5",
    log:
        f"{R}/logs/perturbation/{{dataset}}_{{shard}}.log",
    benchmark:
        f"{R}/benchmarks/perturbation/{{dataset}}_{{shard}}.tsv"
    conda:
        ENV
    threads: config["attribution"]["threads"]
    resources:
        **run_resources(batch_size=config["faithfulness"]["batch_size"]),
    params:
        model=network_cfg,
        settings=faithfulness_settings,
        code=lrp_sources("pipeline.faithfulness:perturbation"),
    script:
        "../scripts/perturbation.py"


rule faithfulness:
    """Table 3: AOPC MoRF, LeRF and their difference per analyzer with paired-bootstrap CIs; the mean curves
    and the scatter of faithfulness against mu_w."""
    input:
        shards=perturbation_shards,
        table1=f"{R}/{{dataset}}/table1.csv",
    output:
        csv=report(
            f"{R}/{{dataset}}/table3.csv",
            caption="../report/table3.rst",
            category="Data (CSV)",
            labels={"dataset": "{dataset}"},
        ),
        md=f"{R}/{{dataset}}/table3.md",
        tex=f"{R}/{{dataset}}/table3.tex",
        curves_png=report(
            f"{R}/{{dataset}}/fig_perturbation_curves.png",
            caption="../report/fig_perturbation.rst",
            category="Figures",
            labels={"figure": "perturbation curves", "dataset": "{dataset}"},
        ),
        curves_pdf=f"{R}/{{dataset}}/fig_perturbation_curves.pdf",
        scatter_png=report(
            f"{R}/{{dataset}}/fig_faithfulness_vs_mu_w.png",
            caption="../report/fig_faithfulness_scatter.rst",
            category="Figures",
            labels={"figure": "faithfulness vs mu_w", "dataset": "{dataset}"},
        ),
        scatter_pdf=f"{R}/{{dataset}}/fig_faithfulness_vs_mu_w.pdf",
    log:
        f"{R}/logs/faithfulness/{{dataset}}.log",
    conda:
        ENV
    params:
        evaluation=evaluation_cfg("pointing_tolerance"),
        code=lrp_sources("pipeline.faithfulness:faithfulness"),
    script:
        "../scripts/faithfulness.py"


rule sanity:
    """Cascading model-parameter randomisation (Adebayo et al. 2018): rank correlation of each analyzer's maps
    on the trained and the progressively randomised model, on the first shard's first units."""
    input:
        images=f"{R}/{{dataset}}/images/0.h5",
        weights=model_weights,
        card=ancient(f"{R}/{{dataset}}/model_card.json"),
        patterns=dataset_patterns,
    output:
        csv=f"{R}/{{dataset}}/sanity.csv",
        png=report(
            f"{R}/{{dataset}}/fig_sanity.png",
            caption="../report/fig_sanity.rst",
            category="Figures",
            labels={"figure": "sanity check", "dataset": "{dataset}"},
        ),
        pdf=f"{R}/{{dataset}}/fig_sanity.pdf",
    log:
        f"{R}/logs/sanity/{{dataset}}.log",
    benchmark:
        f"{R}/benchmarks/sanity/{{dataset}}.tsv"
    conda:
        ENV
    threads: config["attribution"]["threads"]
    resources:
        **run_resources(),
    params:
        model=model_cfg,
        analyzers=sorted_analyzer_options,
        n_units=config["faithfulness"]["sanity_units"],
        seed=config["faithfulness"]["seed"],
        code=dataset_code("pipeline.faithfulness:sanity"),
    script:
        "../scripts/sanity.py"
