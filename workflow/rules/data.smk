# Data: locate / download / generate a dataset, index its evaluation units, image shards.


rule data:
    """Make a dataset available and record where it is: the demo set is generated, VOC is downloaded
    and verified if asked, local paths are checked (clear error naming the config key if missing)."""
    output:
        f"{R}/{{dataset}}/data.json",
    log:
        f"{R}/logs/data/{{dataset}}.log",
    # No Snakemake retries: `retries:` re-runs a job after ANY failure (Snakemake 9.27 takes only an int here,
    # with no per-exit-code rule), and most failures of this job are deterministic (disk full, a corrupt
    # archive, an MD5 mismatch, a missing path) and would fail the same way again. The one failure a retry
    # can cure, the network, is retried inside the job (lrp.datasets.download.download: retries with backoff, resuming
    # the .part file); what survives that exits with lrp.pipeline.runner.EXIT_TRANSIENT (75) and a re-run resumes.
    # 0, not omitted, so that a global `--retries` does not re-run the deterministic failures either.
    retries: 0
    conda:
        ENV
    params:
        cfg=data_cfg,
        code=lrp_sources("pipeline.data:data"),
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
    conda:
        ENV
    params:
        cfg=index_cfg,
        code=lrp_sources("pipeline.data:index"),
    script:
        "../scripts/index.py"


rule baseline:
    """The paper's Baseline row (uniform attribution: mu = box fraction) and the centre pointing game, from the index."""
    input:
        f"{R}/{{dataset}}/samples.csv",
    output:
        f"{R}/{{dataset}}/baseline.csv",
    log:
        f"{R}/logs/baseline/{{dataset}}.log",
    conda:
        ENV
    params:
        tolerance=config["evaluation"]["pointing_tolerance"],
        code=lrp_sources("pipeline.data:baseline"),
    script:
        "../scripts/baseline.py"


rule images:
    """Make the dataset's images available (ImageNet: the val images; VOC and the demo: beside the
    annotations). Only the image shards need them: the index and the Baseline row do not."""
    input:
        f"{R}/{{dataset}}/data.json",
    output:
        f"{R}/{{dataset}}/images.json",
    log:
        f"{R}/logs/images/{{dataset}}.log",
    retries: 0  # as rule `data`
    conda:
        ENV
    params:
        cfg=data_cfg,
        code=lrp_sources("pipeline.data:images"),
    script:
        "../scripts/images.py"


rule image_shard:
    """Decode, resize (the same transform as the boxes) and store images + masks of one shard."""
    input:
        data=f"{R}/{{dataset}}/images.json",
        samples=f"{R}/{{dataset}}/samples.csv",
    output:
        f"{R}/{{dataset}}/images/{{shard}}.h5",
    log:
        f"{R}/logs/image_shard/{{dataset}}_{{shard}}.log",
    conda:
        ENV
    threads: config["preprocess"]["workers"]
    params:
        cfg=index_cfg,
        code=lrp_sources("pipeline.data:image_shard"),
    script:
        "../scripts/image_shard.py"
