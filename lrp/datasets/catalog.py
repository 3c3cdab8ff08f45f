"""The dataset catalog: class lists and the image (and box) transform per annotation format."""

from __future__ import annotations

RESIZE = {"voc": "warp", "imagenet": "imagenet"}
"""Image (and box) transform per dataset format, as in the paper: PVOC images are rescaled to the input
without cropping; ImageNet's shorter side goes to the input size, then a centre crop. The index builds
its boxes with the same transform, so the two can never disagree."""


def class_list(name_or_list) -> list[str]:
    """Class names of a dataset config: 'voc', 'demo', 'imagenet' or an explicit list."""
    if isinstance(name_or_list, list):
        return name_or_list
    if name_or_list == "voc":
        from lrp.datasets.voc import VOC_CLASSES
        return list(VOC_CLASSES)
    if name_or_list == "demo":
        from lrp.datasets.demo import DEMO_CLASSES
        return list(DEMO_CLASSES)
    if name_or_list == "imagenet":
        from lrp.datasets.imagenet import wnid_index
        return list(wnid_index())
    raise ValueError(f"unknown class list {name_or_list!r}")
