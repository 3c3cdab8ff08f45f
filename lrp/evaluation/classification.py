"""Classification accuracy of the explained models: per-class average precision and the VOC07 protocol."""

from __future__ import annotations

import math

import numpy as np


def average_precision(scores, positive, ignore=None) -> tuple[float, float]:
    """(VOC07 11-point AP, area AP) for one class; NaN when there is no positive.

    `ignore` marks samples left out entirely (VOC: images whose instances are all difficult). Ties in the
    score keep input order (stable sort), as the VOC devkit's MATLAB sort does. Area AP = area under the
    monotone precision envelope (VOC2010+); 11-point AP = mean envelope at recall 0, 0.1, …, 1 (VOC2007).
    """
    scores = np.asarray(scores, np.float64).ravel()
    positive = np.asarray(positive, bool).ravel()
    if scores.shape != positive.shape:
        raise ValueError(f"scores {scores.shape} and labels {positive.shape} differ in shape")
    if ignore is not None:
        keep = ~np.asarray(ignore, bool).ravel()
        scores, positive = scores[keep], positive[keep]
    n_pos = int(positive.sum())
    if n_pos == 0:
        return float("nan"), float("nan")
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(positive[order])
    fp = np.cumsum(~positive[order])
    rec = tp / n_pos
    prec = tp / np.maximum(tp + fp, 1)
    # 11-point: max precision at recall >= t
    # thresholds i/10 exactly as the devkit's MATLAB 0:0.1:1 (np.linspace gives 0.6000000000000001, which
    # misses a recall of exactly 3/5)
    ap11 = float(np.mean([prec[rec >= t].max() if (rec >= t).any() else 0.0 for t in np.arange(11) / 10]))
    mrec = np.concatenate([[0.0], rec, [1.0]])
    mpre = np.concatenate([[0.0], prec, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    step = np.flatnonzero(mrec[1:] != mrec[:-1])
    ap_area = float(np.sum((mrec[step + 1] - mrec[step]) * mpre[step + 1]))
    return ap11, ap_area


def voc07_ap(scores, labels, classes) -> dict:
    """Per-class AP with the VOC07 protocol from scores (N, C) and VOC labels (N, C) in {1, 0, -1}.

    For class c, images whose c-instances are all difficult (label 0) are ignored. `mAP` is the mean
    VOC2007 11-point AP (the paper's 72.12 for its CaffeNet), `mAP_area` the area AP (VOC2010+); classes
    without a positive image are NaN and left out of the means.
    """
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels)
    if scores.shape != labels.shape or scores.shape[1] != len(classes):
        raise ValueError(f"scores {scores.shape}, labels {labels.shape} and {len(classes)} classes disagree")
    ap11, area = {}, {}
    for j, c in enumerate(classes):
        ap11[c], area[c] = average_precision(scores[:, j], labels[:, j] == 1, ignore=labels[:, j] == 0)
    evaluated = [c for c in classes if not math.isnan(ap11[c])]
    valid = labels != 0
    return {
        "mAP": float(np.mean([ap11[c] for c in evaluated])) if evaluated else float("nan"),
        "mAP_kind": "VOC07 11-point",
        "mAP_area": float(np.mean([area[c] for c in evaluated])) if evaluated else float("nan"),
        "per_class_ap": ap11,
        "per_class_ap_area": area,
        "accuracy_at_0": float(((scores > 0) == (labels == 1))[valid].mean()) if valid.any() else float("nan"),
        "n_images": int(len(scores)),
        "n_classes_evaluated": len(evaluated),
    }
