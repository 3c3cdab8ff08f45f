"""Model stages (workflow/rules/model.smk): train the models the config trains, the occlusion check (Fig. 2),
the model card that gates the study on the model's accuracy."""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lrp import __version__
from lrp.datasets.catalog import class_list
from lrp.io import log, write_json
from lrp.models.base import pick_device
from lrp.models.zoo import load_model


def cpu_numerics(threads: int, isa: str) -> dict:
    """What decides a CPU training's bits besides its inputs and seed (docs/reproducibility.md): the thread
    count and oneDNN's ISA cap, recorded in training.json with the CPU and ATen's vector width (which do not
    change them). Raises RuntimeError if the cap `isa` is not in effect (it must be in the environment before
    torch runs its first convolution; the Snakefile sets it)."""
    import platform

    env = os.environ.get("ONEDNN_MAX_CPU_ISA")
    if isa != "ALL" and env != isa:
        raise RuntimeError(f"reproducibility.onednn_max_cpu_isa is {isa!r} but the environment has "
                           f"ONEDNN_MAX_CPU_ISA={env!r}: the Snakefile sets it for every job; outside Snakemake, "
                           f"export ONEDNN_MAX_CPU_ISA={isa} before starting Python")
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return {"threads": threads, "onednn_max_cpu_isa": isa, "cpu": cpu,
            "aten_cpu_capability": torch.backends.cpu.get_cpu_capability()}


def train_model(data_json, spec: dict, out_model, card_json):
    """Train a model the config trains itself, by `spec["recipe"]`; record its training and test accuracy.

    demo_vgg (default) / demo_resnet: the demo VGG / ResNet on the dataset's own train split.
    finetune_alexnet: the PVOC model,
    ImageNet AlexNet fine-tuned multi-label (lrp.training.finetune) on `spec["train_data_json"]`'s images (a
    `training_data` entry) or the dataset's own, scored on the dataset's `eval_split`. Trains with exactly
    `spec["threads"]` threads (another count trains another model), under `spec["onednn_max_cpu_isa"]`.
    """
    from lrp.models.checkpoint import save_bundle, write_model_card
    from lrp.training.demo import evaluate_multilabel, train_demo_model

    root = json.loads(Path(data_json).read_text())["root"]
    classes = class_list(spec["classes"])
    recipe = spec["recipe"]
    if recipe == "finetune_alexnet":
        from lrp.training.finetune import run_finetune

        train_root = json.loads(Path(spec["train_data_json"]).read_text())["root"] \
            if spec.get("train_data_json") else None
        run_finetune(root, classes, {**spec, "train_root": train_root}, out_model, card_json, spec["threads"],
                     log=log)
        return
    if recipe not in ("demo_vgg", "demo_resnet"):
        raise ValueError(f"models.{spec['name']}.train.recipe: unknown recipe {recipe!r} "
                         f"(demo_vgg, demo_resnet, finetune_alexnet)")
    numerics = cpu_numerics(spec["threads"], spec["onednn_max_cpu_isa"])
    # the bundle is named by its architecture (the demo VGG's file, and so its sha256, predate demo_resnet)
    bundle, history = train_demo_model(root, classes, split="train", epochs=spec["epochs"],
                                       batch_size=spec["batch_size"], lr=spec["lr"], seed=spec["seed"],
                                       image_size=spec["input_size"], threads=spec["threads"], log=log,
                                       arch=recipe, name=recipe)
    checksum = save_bundle(bundle, out_model)
    test = evaluate_multilabel(bundle, root, classes, "test")
    log(f"trained model: test mAP {test['mAP']:.3f}")
    write_model_card({"name": bundle.name, "checksum": checksum, "history": history, "metrics": {"test": test},
                      "numerics": numerics, "lrp_version": __version__}, card_json)


def occlusion(model_spec: dict, image_shards: list, out_csv, out_logits, batch_size: int, device: str):
    import h5py

    from lrp.evaluation.occlusion import occlusion_logits
    from lrp.io import atomic_path
    from lrp.storage.images import iter_shard_batches

    dev = pick_device(device)
    bundle = load_model(model_spec, dev)
    rows, all_logits, t0, n = [], [], time.time(), 0
    for path in image_shards:
        for images, masks, cls, ids, _ in iter_shard_batches(path, batch_size):
            x = bundle.preprocessing(torch.from_numpy(images), device=dev)
            full, f, fo, fc = occlusion_logits(bundle.module, x, torch.from_numpy(masks).to(dev),
                                               torch.from_numpy(cls).to(dev))
            frac = masks.reshape(len(masks), -1).mean(1)
            rows.append(pd.DataFrame({"sample_id": ids, "class_index": cls, "box_fraction": frac,
                                      "logit": f.cpu().numpy(), "logit_object_occluded": fo.cpu().numpy(),
                                      "logit_context_occluded": fc.cpu().numpy()}))
            all_logits.append(full.cpu().numpy())
            n += len(ids)
        log(f"occlusion: {n} samples, {n / (time.time() - t0):.1f} samples/s")
    df = pd.concat(rows, ignore_index=True)
    logits = np.concatenate(all_logits)
    from lrp.evaluation.occlusion import target_rank
    df["target_rank"] = target_rank(logits, df["class_index"].to_numpy())
    with atomic_path(out_csv) as tmp:
        df.to_csv(tmp, index=False)
    with atomic_path(out_logits) as tmp, h5py.File(tmp, "w") as h:
        h["logits"] = logits.astype(np.float32)
        h["sample_id"] = df["sample_id"].to_numpy().astype(object)


def model_card(model_spec: dict, index_csv, occlusion_csv, logits_h5, task: str, thresholds: dict, out_json,
               train_card=None):
    """Accuracy of the explained model on the evaluation units; stop the run if it is far off."""
    import h5py

    from lrp.datasets.index import read_index
    from lrp.io import sha256_file

    occ = pd.read_csv(occlusion_csv)
    card = {"model": model_spec.get("arch"), "weights": str(model_spec.get("weights")),
            "checksum": sha256_file(model_spec["weights"]) if model_spec.get("weights") and
            Path(model_spec["weights"]).exists() else None, "n_samples": len(occ), "task": task,
            "lrp_version": __version__}
    if task == "single_label":
        card["top1"] = float((occ["target_rank"] < 1).mean())
        card["top5"] = float((occ["target_rank"] < 5).mean())
    else:
        idx = read_index(index_csv)
        with h5py.File(logits_h5, "r") as h:
            logits, ids = h["logits"][:], h["sample_id"].asstr()[:]
        if len(ids) != len(idx) or not np.array_equal(ids, idx["sample_id"].to_numpy(dtype=str)):
            raise ValueError(f"{logits_h5} and {index_csv} list different samples (or in another order); "
                             "delete both and re-run")
        card.update(_multilabel_map(idx, logits))
    if train_card:
        card["training"] = json.loads(Path(train_card).read_text())
    failures = [f"{k} = {card.get(k)} < required {v}" for k, v in (thresholds or {}).items()
                if card.get(k) is None or card[k] < v]
    card["passed"] = not failures
    write_json(card, out_json)
    if failures:
        raise SystemExit(f"model card {out_json}: the model is far off its expected accuracy "
                         f"({'; '.join(failures)}). Check the weights and preprocessing before trusting any "
                         f"attribution; thresholds are set under models.<name>.min_accuracy in the config.")
    log(f"model card: {json.dumps({k: v for k, v in card.items() if k != 'training'})}")


def _multilabel_map(idx: pd.DataFrame, logits: np.ndarray) -> dict:
    """mAP over images from sample-level logits: one score vector per image, labels = classes present."""
    from lrp.evaluation.classification import average_precision

    first = ~idx["image_id"].duplicated()
    scores = logits[first.to_numpy()]
    images = idx["image_id"][first].to_numpy()
    labels = np.zeros_like(scores, dtype=bool)
    pos = {img: i for i, img in enumerate(images)}
    labels[idx["image_id"].map(pos).to_numpy(), idx["class_index"].to_numpy()] = True
    aps = [average_precision(scores[:, c], labels[:, c]) for c in range(scores.shape[1]) if labels[:, c].any()]
    # average_precision -> (VOC07 11-point, area). Not the VOC07 *protocol*: the images are those with
    # evaluation units and a class with only difficult boxes counts as present (the study's units include
    # difficult boxes); the protocol number of a trained model is in its training.json (metrics.test).
    return {"mAP": float(np.mean([a[0] for a in aps])),
            "mAP_kind": "11-point AP over the evaluated images, classes with a unit = present (difficult included)",
            "mAP_area": float(np.mean([a[1] for a in aps])), "n_images": int(len(images)),
            "n_classes_evaluated": len(aps)}


def training_data(name: str, cfg: dict, out_json) -> dict:
    """A `training_data` entry's images on disk (VOC 2012 for the PVOC model), recorded in its data.json."""
    from lrp.training.finetune import prepare_training_data

    return prepare_training_data(name, cfg, out_json)
