"""Training a demo model (lrp.models.architectures.DemoVGG or DemoResNet) multi-label on the procedural demo set,
and its evaluation on a split (VOC07 11-point and area AP per class).

Outputs are logits of a multi-label classifier (one sigmoid per class in the loss, like the paper's PVOC model);
there is no softmax to strip."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from lrp.evaluation.classification import average_precision
from lrp.models.architectures import DEMO_ARCHS, DEMO_STD, DemoResNet, DemoVGG
from lrp.models.base import ModelBundle, Preprocessing


# ----------------------------------------------------------------------------- data
def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _read_ids(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing VOC image set file")
    return [ln.split()[0] for ln in path.read_text().splitlines() if ln.strip()]


def _read_split(voc_root, classes, split: str, image_size: int):
    """(ids, uint8 images (N, S, S, 3), labels int8 (N, C) in VOC's {1, 0 = only difficult, -1}).

    Labels come from ImageSets/Main/<class>_<split>.txt (no XML needed). Images that are not S x S are
    warped to it (VOC style: rescaled, not cropped).
    """
    root = Path(voc_root)
    sets = root / "ImageSets" / "Main"
    ids = _read_ids(sets / f"{split}.txt")
    if not ids:
        raise ValueError(f"{sets / f'{split}.txt'}: split {split!r} is empty")
    pos = {i: k for k, i in enumerate(ids)}
    labels = np.full((len(ids), len(classes)), 2, np.int8)  # 2 = not listed yet
    for j, c in enumerate(classes):
        path = sets / f"{c}_{split}.txt"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing per-class image set file for class {c!r}")
        for ln_no, ln in enumerate(path.read_text().splitlines(), 1):
            parts = ln.split()
            if not parts:
                continue
            if len(parts) != 2 or parts[1] not in ("1", "0", "-1") or parts[0] not in pos:
                raise ValueError(f"{path}:{ln_no}: expected '<id in {split}.txt> 1|0|-1', got {ln!r}")
            labels[pos[parts[0]], j] = int(parts[1])
    missing = np.argwhere(labels == 2)
    if len(missing):
        i, j = missing[0]
        raise ValueError(f"{sets / f'{classes[j]}_{split}.txt'}: no label for image {ids[i]}")
    images = np.empty((len(ids), image_size, image_size, 3), np.uint8)
    for k, i in enumerate(ids):
        path = root / "JPEGImages" / f"{i}.jpg"
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (image_size, image_size):
                im = im.resize((image_size, image_size), Image.BILINEAR)
            images[k] = np.asarray(im)
    return ids, images, labels


# ----------------------------------------------------------------------------- training
def train_demo_model(voc_root, classes, split: str = "train", epochs: int = 30, batch_size: int = 32,
                     lr: float = 1e-3, seed: int = 0, image_size: int = 64, threads: int = 2, log=_stderr,
                     width: int = 16, hidden: int = 128, dropout: float = 0.3, weight_decay: float = 1e-4,
                     name: str = "demo_vgg", arch: str = "demo_vgg"):
    """Train a demo net multi-label (BCE-with-logits, Adam, one-cycle LR, random h/v flips) -> (bundle, history).

    `arch`: "demo_vgg" (DemoVGG with `width`, `hidden`, `dropout`) or "demo_resnet" (DemoResNet with `width`;
    its BatchNorms learn their running statistics here and are frozen by the final `eval()`). Raises ValueError
    for another name.

    Targets: class present (label 1 or 0 — a difficult instance is still the class). Preprocessing mean is
    the per-channel training-set mean (so "occlude with the training mean" is 0 in input space). Seeded and
    run with deterministic algorithms; torch's thread count and determinism flag are restored afterwards.
    """
    classes = list(classes)
    if arch not in DEMO_ARCHS:
        raise ValueError(f"unknown demo architecture {arch!r} ({', '.join(DEMO_ARCHS)})")
    ids, images, labels = _read_split(voc_root, classes, split, image_size)
    mean = tuple(float(m) for m in images.reshape(-1, 3).astype(np.float64).mean(0))
    pre = Preprocessing(mean=mean, std=DEMO_STD, channel_order="RGB")
    x_all = pre(torch.from_numpy(images))
    y_all = torch.from_numpy((labels != -1).astype(np.float32))
    log(f"[train] {len(ids)} images of {split!r}, {len(classes)} classes, positives per class "
        f"{y_all.sum(0).int().tolist()}, mean RGB {tuple(round(m, 1) for m in mean)}")

    prev_threads, prev_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        if arch == "demo_resnet":
            model = DemoResNet(len(classes), width=width, image_size=image_size)
        else:
            model = DemoVGG(len(classes), width=width, image_size=image_size, hidden=hidden, dropout=dropout)
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        steps_per_epoch = -(-len(ids) // batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch,
                                                    pct_start=0.15)
        loss_fn = nn.BCEWithLogitsLoss()
        history = []
        model.train()
        for epoch in range(1, epochs + 1):
            t0, c0 = time.perf_counter(), time.process_time()
            perm = torch.randperm(len(ids), generator=gen)
            total, seen = 0.0, 0
            for start in range(0, len(ids), batch_size):
                idx = perm[start:start + batch_size]
                xb, yb = x_all[idx], y_all[idx]
                flip = torch.rand(2, len(idx), generator=gen) < 0.5
                xb = torch.where(flip[0].view(-1, 1, 1, 1), xb.flip(3), xb)
                xb = torch.where(flip[1].view(-1, 1, 1, 1), xb.flip(2), xb)
                loss = loss_fn(model(xb), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach()) * len(idx)
                seen += len(idx)
            dt, cpu = time.perf_counter() - t0, time.process_time() - c0
            # wall and CPU seconds: on a shared machine CPU/threads is the uncontended wall time
            history.append({"epoch": epoch, "loss": total / seen, "seconds": round(dt, 3),
                            "cpu_seconds": round(cpu, 3)})
            log(f"[train] epoch {epoch}/{epochs} loss {total / seen:.4f} ({dt:.1f}s wall, {cpu:.1f}s cpu)")
    finally:
        torch.set_num_threads(prev_threads)
        torch.use_deterministic_algorithms(prev_det)
    model.eval()
    log(f"[train] done: {epochs} epochs in {sum(h['seconds'] for h in history):.1f}s, "
        f"final loss {history[-1]['loss']:.4f}")
    info = {"arch": model.arch_spec, "train": dict(split=split, n_images=len(ids), epochs=epochs,
                                                    batch_size=batch_size, lr=lr, seed=seed, threads=threads,
                                                    weight_decay=weight_decay)}  # no timings: same training, same file
    bundle = ModelBundle(module=model, preprocessing=pre, input_size=image_size, class_names=classes,
                         name=name, info=info)
    return bundle, history


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def predict_logits(bundle: ModelBundle, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits (N, C) for uint8 RGB images (N, S, S, 3), in eval mode."""
    was_training = bundle.module.training
    bundle.module.eval()
    try:
        out = [bundle.module(bundle.preprocessing(torch.from_numpy(images[i:i + batch_size])))
               for i in range(0, len(images), batch_size)]
    finally:
        bundle.module.train(was_training)
    return torch.cat(out).numpy()


def evaluate_multilabel(bundle: ModelBundle, voc_root, classes=None, split: str = "test") -> dict:
    """Per-class AP on a VOC-layout split. `mAP` is the VOC07 11-point mean (`mAP_area` the area one).

    VOC protocol: for class c, images whose c-instances are all difficult (label 0) are ignored.
    `accuracy_at_0`: share of the non-ignored (image, class) decisions where `logit > 0` equals presence.
    """
    classes = list(bundle.class_names if classes is None else classes)
    missing = [c for c in classes if c not in bundle.class_names]
    if missing:
        raise ValueError(f"classes {missing} are not outputs of model {bundle.name!r} ({bundle.class_names})")
    ids, images, labels = _read_split(voc_root, classes, split, bundle.input_size)
    logits = predict_logits(bundle, images)[:, [bundle.class_names.index(c) for c in classes]]
    ap11, ap_area = {}, {}
    for j, c in enumerate(classes):
        ap11[c], ap_area[c] = average_precision(logits[:, j], labels[:, j] == 1, ignore=labels[:, j] == 0)
    valid = labels != 0
    correct = (logits > 0) == (labels == 1)
    return {
        "mAP": float(np.nanmean(list(ap11.values()))),
        "mAP_kind": "VOC07 11-point",
        "mAP_area": float(np.nanmean(list(ap_area.values()))),
        "per_class_ap": ap11,
        "per_class_ap_area": ap_area,
        "accuracy_at_0": float(correct[valid].mean()),
        "n_images": len(ids),
        "split": split,
    }
