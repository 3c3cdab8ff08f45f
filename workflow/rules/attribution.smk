# Attributions: PatternAttribution patterns, then every analyzer per shard from one forward pass.


rule pattern_index:
    """Index of the images the patterns are learned from (the dataset's training split)."""
    input:
        f"{R}/{{dataset}}/data.json",
    output:
        samples=f"{R}/{{dataset}}/pattern_samples.csv",
        report=f"{R}/{{dataset}}/pattern_index_report.json",
    log:
        f"{R}/logs/pattern_index/{{dataset}}.log",
    conda:
        ENV
    params:
        cfg=pattern_dataset_cfg,
        code=lrp_sources("pipeline.data:index"),
    script:
        "../scripts/index.py"


rule pattern_images:
    input:
        data=f"{R}/{{dataset}}/data.json",
        samples=f"{R}/{{dataset}}/pattern_samples.csv",
    output:
        f"{R}/{{dataset}}/pattern_images.h5",
    log:
        f"{R}/logs/pattern_images/{{dataset}}.log",
    conda:
        ENV
    threads: config["preprocess"]["workers"]
    params:
        cfg=pattern_dataset_cfg,
        code=lrp_sources("pipeline.data:image_shard"),
    script:
        "../scripts/image_shard.py"


rule patterns:
    """PatternAttribution patterns (type relu) learned from training images."""
    input:
        images=f"{R}/{{dataset}}/pattern_images.h5",
        weights=model_weights,
        card=ancient(f"{R}/{{dataset}}/model_card.json"),  # a gate: a passed check, not an input
    output:
        f"{R}/{{dataset}}/patterns.h5",
    log:
        f"{R}/logs/patterns/{{dataset}}.log",
    benchmark:
        f"{R}/benchmarks/patterns/{{dataset}}.tsv"
    conda:
        ENV
    threads: config["attribution"]["threads"]
    resources:
        **run_resources(),
    params:
        model=network_cfg,
        max_images=pattern_max_images,
        code=lrp_sources("pipeline.attribution:patterns"),
    script:
        "../scripts/patterns.py"


# One attribute rule per dataset: its outputs (one file per analyzer) depend on the dataset's analyzers.
for _ds in config["datasets"]:

    rule:
        """All configured analyzers on one image shard (one forward pass per batch), one file per analyzer."""
        name:
            f"attribute_{_ds}"
        input:
            images=f"{R}/{_ds}/images/{{shard}}.h5",
            weights=model_weights_of(_ds),
            card=ancient(f"{R}/{_ds}/model_card.json"),  # a gate: a passed check, not an input to the maps
            patterns=patterns_of(_ds),
        output:
            [f"{R}/{_ds}/attributions/{a}/{{shard}}.h5" for a in computed_analyzers(_ds)],
        log:
            f"{R}/logs/attribute/{_ds}_{{shard}}.log",
        benchmark:
            f"{R}/benchmarks/attribute/{_ds}_{{shard}}.tsv"
        conda:
            ENV
        threads: config["attribution"]["threads"]
        resources:
            **run_resources(),
        params:
            model=model_spec(_ds),
            analyzers=canonical(analyzer_options(_ds)),  # one file each: their order changes nothing
            settings=attribution_settings(),
            code=lrp_sources("pipeline.attribution:attribute", plugins=plugins_of(_ds)),
        script:
            "../scripts/attribute.py"
