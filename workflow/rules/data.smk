# Data: locate / download / generate a dataset, index its evaluation units, image shards.


rule data:
    """Make a dataset available and record where it is: the demo set is generated, VOC is downloaded
    and verified if asked, local paths are checked (clear error naming the config key if missing)."""
    output:
        f"{R}/{{dataset}}/data.json",
    log:
        f"{R}/logs/data/{{dataset}}.log",
    params:
        cfg=data_cfg,
        code=lrp_sources("stages:data"),
    conda:
        ENV
    retries: 2
    script:
        "../scripts/data.py"


rule index:
    """One row per evaluation unit (image x class) from the annotation files alone."""
    input:
        f"{R}/{{dataset}}/data.json",
    output:
        samples=f"{R}/{{dataset}}/samples.csv",
        report=f"{R}/{{dataset}}/index_report.json",
    log:
        f"{R}/logs/index/{{dataset}}.log",
    params:
        cfg=index_cfg,
        code=lrp_sources("stages:index"),
    conda:
        ENV
    script:
        "../scripts/index.py"


rule baseline:
    """Uniform-attribution baseline (mu = box fraction): the paper's Baseline row, from the index."""
    input:
        f"{R}/{{dataset}}/samples.csv",
    output:
        f"{R}/{{dataset}}/baseline.csv",
    log:
        f"{R}/logs/baseline/{{dataset}}.log",
    params:
        code=lrp_sources("stages:baseline"),
    conda:
        ENV
    script:
        "../scripts/baseline.py"


rule image_shard:
    """Decode, resize (the same transform as the boxes) and store images + masks of one shard."""
    input:
        data=f"{R}/{{dataset}}/data.json",
        samples=f"{R}/{{dataset}}/samples.csv",
    output:
        f"{R}/{{dataset}}/images/{{shard}}.h5",
    log:
        f"{R}/logs/image_shard/{{dataset}}_{{shard}}.log",
    params:
        cfg=index_cfg,
        code=lrp_sources("stages:image_shard"),
    threads: config.get("preprocess", {}).get("workers", 4)
    conda:
        ENV
    script:
        "../scripts/image_shard.py"
