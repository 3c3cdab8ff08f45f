"""The dataset catalog: class lists and the image (and box) transform per annotation format.

Why a module of its own: the parsers (voc, imagenet), the index, the demo generator and the model loaders
all need the class lists, and none of them should have to import another (or pandas, PIL, lxml) to get
them. This module imports only the standard library.
"""

from __future__ import annotations

import functools
import importlib.resources

__all__ = ["RESIZE", "VOC_CLASSES", "DEMO_CLASSES", "load_synsets", "wnid_index", "class_list"]

RESIZE = {"voc": "warp", "imagenet": "imagenet"}
"""Image (and box) transform per dataset format, as in the paper: PVOC images are rescaled to the input
without cropping; ImageNet's shorter side goes to the input size, then a centre crop. The index builds
its boxes with the same transform, so the two can never disagree."""

# Canonical order of the devkit (VOCcode/VOCinit.m); class_index = position here.
VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)

# The procedural demo's classes (lrp.datasets.demo): each class = a shape + a texture; colours are random so
# colour alone never identifies a class.
DEMO_CLASSES: tuple[str, ...] = ("disc", "square", "triangle", "cross", "ring", "star")


@functools.cache
def load_synsets() -> tuple[tuple[str, str], ...]:
    """The 1000 ImageNet (wnid, names) pairs in class-index (sorted-WNID) order, from lrp/data/imagenet_synsets.txt.

    Class names elsewhere are the WNIDs (`[w for w, _ in load_synsets()]`): unique, unlike the human names
    ('crane' occurs twice). Immutable because it is cached. Raises ValueError (`path:line: ...`) if the
    packaged file is damaged: a broken installation, not bad user data.
    """
    res = importlib.resources.files("lrp") / "data" / "imagenet_synsets.txt"
    pairs = []
    for lineno, line in enumerate(res.read_text(encoding="utf-8").splitlines(), 1):
        wnid, _, names = line.partition(" ")
        if not (wnid.startswith("n") and len(wnid) == 9 and names):
            raise ValueError(f"{res}:{lineno}: expected '<wnid> <names>', got {line!r}")
        pairs.append((wnid, names))
    wnids = [w for w, _ in pairs]
    if len(pairs) != 1000 or wnids != sorted(set(wnids)):
        raise ValueError(f"{res}: expected 1000 distinct WNIDs in sorted order")
    return tuple(pairs)


@functools.cache
def _wnid_index() -> dict[str, int]:
    return {w: i for i, (w, _) in enumerate(load_synsets())}


def wnid_index() -> dict[str, int]:
    """{ImageNet wnid: class index} (a fresh dict; callers may modify it)."""
    return dict(_wnid_index())


def class_list(name_or_list) -> list[str]:
    """Class names of a dataset config: 'voc', 'demo', 'imagenet' (the WNIDs) or an explicit list.

    Raises ValueError for any other name."""
    if isinstance(name_or_list, list):
        return name_or_list
    if name_or_list == "voc":
        return list(VOC_CLASSES)
    if name_or_list == "demo":
        return list(DEMO_CLASSES)
    if name_or_list == "imagenet":
        return list(wnid_index())
    raise ValueError(f"unknown class list {name_or_list!r}")
