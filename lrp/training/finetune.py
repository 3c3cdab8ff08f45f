"""The PVOC model substitute: torchvision AlexNet fine-tuned multi-label on PASCAL VOC, and VOC07 evaluation.

Why a substitute: the paper's PVOC model (a Caffe CaffeNet with the LRP Toolbox's multi-label hinge loss,
data_protocol.md §5.1) cannot be fetched from the project machines. §5.2's recipe is followed instead:
ImageNet AlexNet (`alexnet-owt-7be5be79.pth`, checked like `lrp.models.zoo` checks it), `classifier[6]`
replaced by Linear(4096, n_classes), multi-label loss (sigmoid cross-entropy, or the Toolbox's hinge
Σ_j max(0, 1 − y_j f_j), y ∈ {±1}), difficult-only classes of an image left out of the loss (VOC label 0),
SGD with momentum, head at 10x the body's learning rate, StepLR. Train images: RandomResizedCrop + horizontal
flip; evaluation images are warped to the input size (rescaled, not cropped: the paper's protocol, the same
`lrp.datasets.boxes` transform the pipeline's image shards use). Deviation from the paper: AlexNet (64-192-384-256-256
channels, no LRN, 224 px input) instead of CaffeNet.

Reproducibility: every epoch ends with an atomic checkpoint (model, optimizer, scheduler, epoch, history and
the torch / CUDA / numpy / python / DataLoader-generator RNG states, all as tensors or plain types so that
`torch.load(weights_only=True)` reads it). Re-running after a kill resumes from the last complete epoch; on
CPU a resumed run ends with bit-identical weights. Augmentation draws from a per-(seed, epoch, image) RNG, so
it does not depend on the number of DataLoader workers either.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from lxml import etree
from PIL import Image
from torch import nn
from torch.nn import functional as F

from lrp.evaluation.classification import voc07_ap
from lrp.io import atomic_path, sha256_file
from lrp.models.architectures import ALEXNET_MULTILABEL, alexnet_multilabel
from lrp.models.base import ModelBundle, pick_device

ARCH_NAME = ALEXNET_MULTILABEL
STATE_FORMAT = "lrp-bench-finetune-state/1"
LOSSES = ("bce", "hinge")

#: the finetune_alexnet recipe's keys (models.<name>.train.*): config/schema.yaml documents each and holds
#: its default, so the pipeline always passes all of them.
RECIPE_KEYS = ("splits", "exclude_prefix", "val_split", "eval_split", "init_weights", "loss", "epochs", "batch_size",
               "lr", "head_lr_mult", "momentum", "weight_decay", "lr_step", "lr_gamma", "crop_scale", "seed", "device")


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- architecture




def _init_model(n_classes: int, init_weights, where: str, log) -> tuple[nn.Module, str | None]:
    """(model, sha256 of the init file or None). The head is freshly initialised from the torch RNG."""
    if init_weights is None:
        log("[finetune] WARNING: init_weights is null -> RANDOM initialisation. This is for CI/tests only; "
            "such a model is NOT the study's PVOC model (set init_weights to alexnet-owt-7be5be79.pth)")
        return alexnet_multilabel(n_classes), None
    from lrp.models.zoo import _torchvision_bundle

    path = Path(init_weights)
    if not path.is_file():
        raise FileNotFoundError(f"{where}.init_weights: file not found: {path} (torchvision's ImageNet AlexNet, "
                                "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth)")
    try:
        bundle = _torchvision_bundle("torchvision_alexnet", path)  # sha256-prefix check, weights_only, strict
    except ValueError as e:
        raise ValueError(f"{where}.init_weights: {e}") from None
    model = bundle.module
    model.classifier[6] = nn.Linear(model.classifier[6].in_features, int(n_classes))
    log(f"[finetune] initialised from {path} (sha256 {bundle.checksum[:16]}…, official file: "
        f"{bundle.info.get('official_weights')}); classifier[6] -> Linear(4096, {n_classes})")
    return model, bundle.checksum


# ----------------------------------------------------------------------------- data
def select_ids(root, splits, exclude_prefix: str | None = "2007_") -> tuple[list[str], int]:
    """(image ids of the VOC `splits` in file order, duplicates once, minus ids starting with
    `exclude_prefix`; number excluded). VOC 2012 re-uses VOC 2007 images under 2007_* ids: excluding them
    keeps every VOC 2007 evaluation image out of training."""
    from lrp.datasets.voc import read_image_set

    splits = [splits] if isinstance(splits, str) else list(splits)
    if not splits:
        raise ValueError("at least one split is needed")
    seen: dict[str, None] = {}
    for split in splits:
        seen.update(dict.fromkeys(read_image_set(root, split)))
    ids = [i for i in seen if not (exclude_prefix and i.startswith(exclude_prefix))]
    return ids, len(seen) - len(ids)


def read_voc_labels(root, ids, classes) -> np.ndarray:
    """int8 (N, C) labels from Annotations/<id>.xml: 1 = at least one non-difficult instance, 0 = only
    difficult instances (VOC: ignored for that class), -1 = absent. A missing <difficult> counts as 0."""
    root, classes = Path(root), list(classes)
    col = {c: j for j, c in enumerate(classes)}
    labels = np.full((len(ids), len(classes)), -1, np.int8)
    unknown: dict[str, str] = {}
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    for i, image_id in enumerate(ids):
        path = root / "Annotations" / f"{image_id}.xml"
        try:
            tree = etree.parse(str(path), parser).getroot()
        except OSError as e:
            raise FileNotFoundError(f"{path}: annotation of image {image_id!r} not readable ({e})") from None
        except etree.XMLSyntaxError as e:
            raise ValueError(f"{path}: malformed XML: {e}") from None
        for obj in tree.iterfind("object"):
            name = (obj.findtext("name") or "").strip()
            if name not in col:
                unknown.setdefault(name, str(path))
                continue
            difficult = (obj.findtext("difficult") or "0").strip() not in ("0", "")
            j = col[name]
            labels[i, j] = max(labels[i, j], 0 if difficult else 1)
    if unknown:
        name, path = next(iter(unknown.items()))
        raise ValueError(f"{path}: object class {name!r} is not one of the model's classes {classes} "
                         f"({len(unknown)} unknown name(s): {sorted(unknown)[:10]})")
    return labels


def _rrc_box(w: int, h: int, rng: np.random.Generator, scale, ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """torchvision RandomResizedCrop.get_params, drawing from `rng`: (left, top, right, bottom)."""
    area = w * h
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            return x0, y0, x0 + cw, y0 + ch
    in_ratio = w / h  # fallback: central crop, aspect clamped to `ratio`
    if in_ratio < ratio[0]:
        cw, ch = w, int(round(w / ratio[0]))
    elif in_ratio > ratio[1]:
        cw, ch = int(round(h * ratio[1])), h
    else:
        cw, ch = w, h
    x0, y0 = (w - cw) // 2, (h - ch) // 2
    return x0, y0, x0 + cw, y0 + ch


class VOCImages(torch.utils.data.Dataset):
    """(uint8 HWC image of size x size, int8 labels) per image id; decoding happens in DataLoader workers.

    train: RandomResizedCrop(size, scale=crop_scale) + horizontal flip with p=0.5, from an RNG seeded by
    (seed, epoch, index) — set `.epoch` before each pass. eval: warp to size x size (`lrp.datasets.boxes` "warp").
    """

    def __init__(self, root, ids, labels, size: int, train: bool, seed: int = 0, crop_scale=(0.08, 1.0)):
        self.image_dir = Path(root) / "JPEGImages"
        self.ids, self.labels = list(ids), np.asarray(labels, np.int8)
        self.size, self.train, self.seed = int(size), bool(train), int(seed)
        self.crop_scale = (float(crop_scale[0]), float(crop_scale[1]))
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        from lrp.datasets.boxes import make_transform
        from lrp.storage.images import load_rgb

        img, _ = load_rgb(self.image_dir / f"{self.ids[i]}.jpg")
        s = self.size
        if self.train:
            rng = np.random.default_rng([self.seed, self.epoch, i])
            box = _rrc_box(img.size[0], img.size[1], rng, self.crop_scale)
            img = img.resize((s, s), Image.BILINEAR, box=box)
            if rng.random() < 0.5:
                img = img.transpose(Image.FLIP_LEFT_RIGHT)
        else:
            img = make_transform("warp", img.size[0], img.size[1], s).apply_image(img)
        return torch.from_numpy(np.array(img, dtype=np.uint8)), torch.from_numpy(self.labels[i])


# ----------------------------------------------------------------------------- loss
def multilabel_loss(logits: torch.Tensor, labels: torch.Tensor, kind: str = "bce") -> torch.Tensor:
    """Multi-label loss over VOC labels (1 present, 0 difficult-only = masked out, -1 absent).

    bce: sigmoid cross-entropy, mean over the unmasked (image, class) terms.
    hinge: the LRP Toolbox's HingeLossMultiLabel (L1), Σ_j max(0, 1 − y_j f_j) with y ∈ {±1}, summed over
    the unmasked classes of an image and averaged over the images of the batch.
    """
    mask = (labels != 0).to(logits.dtype)
    y = (labels > 0).to(logits.dtype)
    if kind == "bce":
        per = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
        return (per * mask).sum() / mask.sum().clamp_min(1.0)
    if kind == "hinge":
        per = torch.clamp(1.0 - (2.0 * y - 1.0) * logits, min=0.0)
        return (per * mask).sum() / logits.shape[0]
    raise ValueError(f"unknown loss {kind!r}; expected one of {LOSSES}")


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def predict(module: nn.Module, preprocessing, dataset: VOCImages, device="cpu", batch_size: int = 64,
            num_workers: int = 0) -> np.ndarray:
    """Logits (N, C) of `module` in eval mode over `dataset` (its training mode is restored)."""
    device = torch.device(device)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                         generator=torch.Generator(), pin_memory=device.type == "cuda")
    was_training = module.training
    module.eval()
    try:
        out = [module(preprocessing(xb, device=device)).float().cpu() for xb, _ in loader]
    finally:
        module.train(was_training)
    return torch.cat(out).numpy()


def evaluate_voc(bundle: ModelBundle, root, split: str = "test", classes=None, device="cpu", batch_size: int = 64,
                 num_workers: int = 0) -> dict:
    """`voc07_ap` of `bundle` on VOC split `split` under `root` (labels from the XML annotations, images
    warped to the model's input size)."""
    from lrp.datasets.voc import read_image_set

    classes = list(bundle.class_names if classes is None else classes)
    missing = [c for c in classes if c not in bundle.class_names]
    if missing:
        raise ValueError(f"classes {missing} are not outputs of model {bundle.name!r} ({bundle.class_names})")
    ids = read_image_set(root, split)
    labels = read_voc_labels(root, ids, classes)
    ds = VOCImages(root, ids, labels, bundle.input_size, train=False)
    device = torch.device(device)
    module = bundle.module.to(device)
    logits = predict(module, bundle.preprocessing, ds, device, batch_size, num_workers)
    logits = logits[:, [bundle.class_names.index(c) for c in classes]]
    return {**voc07_ap(logits, labels, classes), "split": split}


# ----------------------------------------------------------------------------- checkpoint / RNG state
def _rng_state(loader_gen: torch.Generator) -> dict:
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": str(np_state[0]), "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": int(py_version), "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss_next": py_gauss},
        "loader": loader_gen.get_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def _set_rng_state(state: dict, loader_gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss_next"]))
    loader_gen.set_state(state["loader"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_state(path) -> dict:
    """A training checkpoint, read with weights_only=True (tensors and plain types only)."""
    from lrp.models.base import WeightFileError, check_torch_archive

    check_torch_archive(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError) as e:  # torch's pickle/zip readers raise these
        raise WeightFileError(f"{path}: not a fine-tuning checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ValueError(f"{path}: not a fine-tuning checkpoint ({STATE_FORMAT})")
    return state


# ----------------------------------------------------------------------------- training
def finetune_alexnet(root, classes, *, state_path=None, splits=("train",), exclude_prefix: str | None = "2007_",
                     val_split: str | None = None, init_weights=None, loss: str = "bce", epochs: int = 30,
                     batch_size: int = 64, lr: float = 1e-3, head_lr_mult: float = 10.0, momentum: float = 0.9,
                     weight_decay: float = 5e-4, lr_step: int = 20, lr_gamma: float = 0.1,
                     crop_scale=(0.08, 1.0), input_size: int = 224, seed: int = 0, threads: int = 2,
                     num_workers: int | None = None, device: str = "auto", name: str = "pvoc_alexnet",
                     where: str | None = None, log=_stderr) -> tuple[ModelBundle, list[dict]]:
    """Fine-tune AlexNet multi-label on the VOC-layout `root` -> (eval-mode CPU bundle, per-epoch history).

    `splits` minus ids starting with `exclude_prefix` are trained on; `val_split` (same root) is scored
    after every epoch. With `state_path`, every epoch ends with an atomic checkpoint there, and an existing
    checkpoint of the same training (same hyper-parameters, images, labels and init file) is resumed from;
    one of a different training is ignored (and overwritten). `num_workers` defaults to `threads` (0 when
    threads < 2). On CPU, deterministic algorithms are used and torch's settings are restored afterwards.
    """
    where = where or f"models.{name}.train"
    classes = list(classes)
    if loss not in LOSSES:
        raise ValueError(f"{where}.loss: unknown loss {loss!r}; expected one of {list(LOSSES)}")
    if not (0 < crop_scale[0] <= crop_scale[1] <= 1):
        raise ValueError(f"{where}.crop_scale: need 0 < min <= max <= 1, got {list(crop_scale)}")
    dev = pick_device(device)
    num_workers = (threads if threads >= 2 else 0) if num_workers is None else int(num_workers)

    ids, n_excluded = select_ids(root, splits, exclude_prefix)
    if not ids:
        raise ValueError(f"{where}: no training images left in {list(splits)} of {root} after excluding "
                         f"{n_excluded} ids starting with {exclude_prefix!r}")
    labels = read_voc_labels(root, ids, classes)
    log(f"[finetune] {len(ids)} images of {list(splits)} in {root} ({n_excluded} ids starting with "
        f"{exclude_prefix!r} excluded); positives per class {(labels == 1).sum(0).tolist()}, difficult-only "
        f"(masked) {(labels == 0).sum(0).tolist()}; device {dev}, {num_workers} loader workers")
    val = None
    if val_split:
        from lrp.datasets.voc import read_image_set

        val_ids = read_image_set(root, val_split)
        val = VOCImages(root, val_ids, read_voc_labels(root, val_ids, classes), input_size, train=False)

    init_sha = None
    if init_weights is not None:
        init_sha = sha256_file(init_weights) if Path(init_weights).is_file() else "missing"
    train_params = dict(splits=list(splits), exclude_prefix=exclude_prefix, val_split=val_split,
                        init_weights=None if init_weights is None else Path(init_weights).name,
                        init_sha256=init_sha, loss=loss, epochs=int(epochs), batch_size=int(batch_size),
                        lr=float(lr), head_lr_mult=float(head_lr_mult), momentum=float(momentum),
                        weight_decay=float(weight_decay), lr_step=int(lr_step), lr_gamma=float(lr_gamma),
                        crop_scale=[float(c) for c in crop_scale], input_size=int(input_size), seed=int(seed),
                        n_images=len(ids), n_excluded=n_excluded)
    fingerprint = json.dumps({**train_params, "classes": classes,
                              "ids": hashlib.sha256("\n".join(ids).encode()).hexdigest(),
                              "labels": hashlib.sha256(labels.tobytes()).hexdigest()}, sort_keys=True)

    prev_threads, prev_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    prev_bench = torch.backends.cudnn.benchmark
    torch.set_num_threads(max(1, int(threads)))
    if dev.type == "cpu":
        torch.use_deterministic_algorithms(True)  # CUDA: adaptive avg-pool backward has no deterministic kernel
    else:
        torch.backends.cudnn.benchmark = True
    try:
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        model, _ = _init_model(len(classes), init_weights, where, log)
        for p in model.parameters():
            p.requires_grad_(True)
        model.to(dev)
        from lrp.models.zoo import TORCHVISION_PREPROCESSING as pre

        head = list(model.classifier[6].parameters())
        head_ids = {id(p) for p in head}
        body = [p for p in model.parameters() if id(p) not in head_ids]
        opt = torch.optim.SGD([{"params": body, "lr": lr}, {"params": head, "lr": lr * head_lr_mult}],
                              lr=lr, momentum=momentum, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=lr_step, gamma=lr_gamma)
        gen = torch.Generator().manual_seed(seed)
        data = VOCImages(root, ids, labels, input_size, train=True, seed=seed, crop_scale=crop_scale)
        loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=True, generator=gen,
                                             num_workers=num_workers, pin_memory=dev.type == "cuda")
        history: list[dict] = []
        start = 1
        if state_path is not None and Path(state_path).is_file():
            state = load_state(state_path)
            if state["fingerprint"] != fingerprint:
                log(f"[finetune] {state_path}: checkpoint of a DIFFERENT training (config, images or init "
                    f"weights changed): ignored, training from scratch")
            else:
                model.load_state_dict(state["model"])
                opt.load_state_dict(state["optimizer"])
                sched.load_state_dict(state["scheduler"])
                history = list(state["history"])
                start = int(state["epoch"]) + 1
                _set_rng_state(state["rng"], gen)
                log(f"[finetune] resumed from {state_path} after epoch {state['epoch']}/{epochs}")

        for epoch in range(start, epochs + 1):
            t0, c0 = time.perf_counter(), time.process_time()
            data.epoch = epoch
            model.train()
            lr_now = opt.param_groups[0]["lr"]
            total, seen = 0.0, 0
            for xb, yb in loader:
                x = pre(xb, device=dev)
                y = yb.to(dev, non_blocking=True)
                batch_loss = multilabel_loss(model(x), y, loss)
                opt.zero_grad(set_to_none=True)
                batch_loss.backward()
                opt.step()
                total += float(batch_loss.detach()) * len(xb)
                seen += len(xb)
            sched.step()
            dt, cpu = time.perf_counter() - t0, time.process_time() - c0
            entry = {"epoch": epoch, "loss": total / seen, "lr": lr_now, "images_per_s": round(seen / dt, 2),
                     "seconds": round(dt, 3), "cpu_seconds": round(cpu, 3)}
            if start > 1 and epoch == start:
                entry["resumed"] = True
            msg = f"[finetune] epoch {epoch}/{epochs} loss {entry['loss']:.4f} lr {lr_now:g} " \
                  f"{entry['images_per_s']:.1f} img/s ({dt:.1f}s)"
            if val is not None:
                v = voc07_ap(predict(model, pre, val, dev, batch_size, num_workers), val.labels, classes)
                entry.update(val_mAP=v["mAP"], val_mAP_area=v["mAP_area"])
                msg += f", {val_split} mAP {v['mAP']:.4f} (area {v['mAP_area']:.4f})"
            history.append(entry)
            if state_path is not None:
                state = {"format": STATE_FORMAT, "fingerprint": fingerprint, "epoch": epoch,
                         "model": model.state_dict(), "optimizer": opt.state_dict(),
                         "scheduler": sched.state_dict(), "history": history, "rng": _rng_state(gen)}
                with atomic_path(state_path) as tmp, open(tmp, "wb") as f:
                    torch.save(state, f)
            log(msg)
    finally:
        torch.set_num_threads(prev_threads)
        torch.use_deterministic_algorithms(prev_det)
        torch.backends.cudnn.benchmark = prev_bench
    model = model.cpu().eval()
    log(f"[finetune] done: {epochs} epochs, final loss {history[-1]['loss']:.4f}" if history else
        "[finetune] done (no epoch to run)")
    info = {"arch": {"name": ARCH_NAME, "kwargs": {"n_classes": len(classes)}},
            "train": {"recipe": "finetune_alexnet", **train_params}}  # no timings: same training, same file
    bundle = ModelBundle(module=model, preprocessing=pre, input_size=int(input_size), class_names=classes,
                         name=name, info=info)
    return bundle, history


# ----------------------------------------------------------------------------- pipeline glue
def run_finetune(root, classes, spec: dict, out_model, card_json, threads: int, log=_stderr) -> dict:
    """The `finetune_alexnet` recipe of the train_model stage: train (resuming from
    `<out_model dir>/finetune_state.pt`), save the bundle, score it on `eval_split`, write the training card,
    then drop the training checkpoint. `root` is the evaluated dataset's VOC root; training images come from
    `spec["train_root"]` when given (a `training_data` entry), else from `root`. Returns the card."""
    from lrp import __version__
    from lrp.models.checkpoint import save_bundle, write_model_card

    missing = [k for k in RECIPE_KEYS if k not in spec]
    if missing:
        raise ValueError(f"finetune_alexnet spec lacks {', '.join(missing)} (the schema's defaults fill them: "
                         f"lrp.pipeline.config.validate)")
    opts = {k: spec[k] for k in RECIPE_KEYS}
    name = spec["name"]
    train_root = spec.get("train_root") or root
    state_path = Path(out_model).with_name("finetune_state.pt")
    device = pick_device(opts.pop("device"))
    eval_split = opts.pop("eval_split")
    bundle, history = finetune_alexnet(train_root, classes, state_path=state_path,
                                       input_size=spec["input_size"], threads=threads, device=str(device),
                                       name=name, where=f"models.{name}.train", log=log, **opts)
    checksum = save_bundle(bundle, out_model)
    metrics = {}
    if eval_split:
        metrics["test"] = evaluate_voc(bundle, root, eval_split, device=device, batch_size=opts["batch_size"],
                                       num_workers=threads if threads >= 2 else 0)
        bundle.module.cpu()
        log(f"[finetune] {eval_split} of {root}: mAP {metrics['test']['mAP']:.4f} (VOC07 11-point), "
            f"area {metrics['test']['mAP_area']:.4f}")
    card = write_model_card({"name": bundle.name, "checksum": checksum, "recipe": "finetune_alexnet",
                             "train": bundle.info["train"], "train_root": str(train_root), "history": history,
                             "metrics": metrics, "device": str(device), "lrp_version": __version__}, card_json)
    state_path.unlink(missing_ok=True)
    return card


def prepare_training_data(name: str, cfg: dict, out_json) -> dict:
    """Make a `training_data.<name>` entry available (VOC: extracted, or downloaded + MD5-checked via the
    `voc<year>_trainval` registry entry) and record its root in `out_json`."""
    from lrp.datasets.acquire import prepare_voc

    if cfg["format"] != "voc":
        raise ValueError(f"training_data.{name}.format: only 'voc' is supported, got {cfg['format']!r}")
    year = str(cfg["year"])
    root = prepare_voc(cfg["root"], download=cfg["source"] == "download",
                       key=f"training_data.{name}.root", year=year)
    info = {"root": str(root), "year": year, "annotations": str(root), "images": str(Path(root) / "JPEGImages")}
    with atomic_path(out_json) as tmp:
        Path(tmp).write_text(json.dumps(info, indent=2) + "\n")
    _stderr(f"training data {name}: {info}")
    return info
