# Models: train the models the config trains itself; check every model's accuracy before anything is explained.


rule training_data:
    """A data set used only to train a model (config `training_data`, e.g. VOC 2012 for the PVOC model):
    located, or downloaded and MD5-checked. Kept apart from `datasets` so that it is never evaluated."""
    output:
        f"{R}/training_data/{{name}}/data.json",
    log:
        f"{R}/logs/training_data/{{name}}.log",
    wildcard_constraints:
        name="[a-z][a-z0-9_]*",
    # Not retried by Snakemake, for the reason given at rule `data`: network failures retry inside the job.
    retries: 0
    conda:
        ENV
    params:
        cfg=training_data_cfg,
        code=lrp_sources("pipeline.model:training_data"),
    script:
        "../scripts/training_data.py"


rule train_model:
    """Train a model that the config trains itself (`models.<model>.train`), by recipe: demo_vgg / demo_resnet = the
    demo VGG / ResNet on its dataset's train split (CPU); finetune_alexnet = the PVOC model, ImageNet AlexNet fine-tuned
    multi-label (GPU; resumes from results/models/<model>/finetune_state.pt after a kill)."""
    input:
        train_data,
    output:
        model=f"{R}/models/{{model}}/model.pt",
        card=f"{R}/models/{{model}}/training.json",
    log:
        f"{R}/logs/train_model/{{model}}.log",
    benchmark:
        f"{R}/benchmarks/train_model/{{model}}.tsv"
    conda:
        ENV
    threads: train_threads
    resources:
        gpu=train_gpus,
        device=train_device,
    params:
        spec=model_train_spec,
        code=lrp_sources("pipeline.model:train_model"),
    script:
        "../scripts/train_model.py"


rule occlusion:
    """Fig. 2 data: target logit with the object region or the context replaced by the training mean."""
    input:
        shards=image_shards,
        weights=model_weights,
    output:
        csv=f"{R}/{{dataset}}/occlusion.csv",
        logits=f"{R}/{{dataset}}/logits.h5",
    log:
        f"{R}/logs/occlusion/{{dataset}}.log",
    benchmark:
        f"{R}/benchmarks/occlusion/{{dataset}}.tsv"
    conda:
        ENV
    threads: config["attribution"]["threads"]
    resources:
        **run_resources(batch_size=config["occlusion"]["batch_size"]),
    params:
        model=network_cfg,
        code=lrp_sources("pipeline.model:occlusion"),
    script:
        "../scripts/occlusion.py"


rule model_card:
    """Accuracy of the explained model on the evaluation units; the run stops if it is far off."""
    input:
        samples=f"{R}/{{dataset}}/samples.csv",
        occlusion=f"{R}/{{dataset}}/occlusion.csv",
        logits=f"{R}/{{dataset}}/logits.h5",
        training=train_card,
    output:
        f"{R}/{{dataset}}/model_card.json",
    log:
        f"{R}/logs/model_card/{{dataset}}.log",
    conda:
        ENV
    params:
        model=network_cfg,
        task=dataset_task,
        thresholds=model_thresholds,
        code=lrp_sources("pipeline.model:model_card"),
    script:
        "../scripts/model_card.py"
