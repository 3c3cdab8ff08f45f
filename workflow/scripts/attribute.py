import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")  # the lrp package beside the Snakefile

from pathlib import Path

from lrp.pipeline.runner import run
from lrp.pipeline.attribution import attribute

# precision, tf32, deterministic: params; batch size, device, threads, fused: where and how it runs, read
# here (RUN_SETTINGS in workflow/rules/common.smk). The maps record both.
settings = {**snakemake.config.get("attribution", {}), **snakemake.params.settings}
outputs = {Path(p).parent.name: p for p in snakemake.output}
run(snakemake, attribute, model_spec=snakemake.params.model, image_shard_h5=snakemake.input.images,
    analyzers=snakemake.params.analyzers, out_paths=outputs, batch_size=settings.get("batch_size", 16),
    device=settings.get("device", "auto"), precision=settings.get("precision", "float32"),
    patterns_h5=snakemake.input.patterns or None, tf32=settings.get("tf32", False),
    fused=settings.get("fused", "auto"), shard=int(snakemake.wildcards.shard),
    deterministic=settings.get("deterministic", False),
    config={"model": snakemake.params.model, "analyzers": snakemake.params.analyzers, "attribution": settings})
