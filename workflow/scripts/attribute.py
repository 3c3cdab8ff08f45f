import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")  # the lrp package beside the Snakefile

from pathlib import Path

from lrp.pipeline.attribution import attribute
from lrp.pipeline.runner import run

# precision, tf32, deterministic: params (they change the maps); batch size, device, fused, threads: where
# and how it runs, from the rule's resources and threads (RUN_SETTINGS in workflow/rules/common.smk). The
# maps record both.
res = snakemake.resources
run_settings = {"batch_size": res.batch_size, "device": res.device, "threads": snakemake.threads,
                "fused": {"true": True, "false": False}.get(res.fused, res.fused)}
settings = {**snakemake.params.settings, **run_settings}
outputs = {Path(p).parent.name: p for p in snakemake.output}
run(snakemake, attribute, model_spec=snakemake.params.model, image_shard_h5=snakemake.input.images,
    analyzers=snakemake.params.analyzers, out_paths=outputs, batch_size=settings["batch_size"],
    device=settings["device"], precision=settings["precision"], patterns_h5=snakemake.input.patterns or None,
    tf32=settings["tf32"], fused=settings["fused"], shard=int(snakemake.wildcards.shard),
    deterministic=settings["deterministic"], top_k=settings["top_k"],
    config={"model": snakemake.params.model, "analyzers": snakemake.params.analyzers, "attribution": settings})
