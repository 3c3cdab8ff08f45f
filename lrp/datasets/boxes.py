"""Box geometry: original-image boxes -> model-input boxes -> union masks.

Why one module: the localisation metric is only meaningful if the mask is built with exactly the map that
produced the network input. `BoxTransform` therefore transforms both the boxes (`apply`) and the PIL image
(`apply_image`), and the index builders and the shard writer obtain it from the same factory
(`make_transform`).

Boxes are half-open float rectangles `[x0, y0, x1, y1)` (docs/architecture.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

_DECIMALS = 6

__all__ = ["BoxTransform", "imagenet_transform", "warp_transform", "make_transform", "TRANSFORMS", "union_mask",
           "ROUNDINGS"]

ROUNDINGS = ("outward", "nearest")
"""How a box's edges become whole input pixels (the per-dataset `box_rounding`, docs/architecture.md):

- "outward": the transformed half-open box [x0, x1) covers every pixel it touches (floor of the scaled
  minimum, ceil of the scaled maximum). ImageNet's default: the paper's ImageNet Baseline row is 0.547, and
  outward gives 0.544; smaller masks could only move it further away (docs/metrics.md).
- "nearest": the 0-based indices of the box's first and last pixel are scaled and rounded to the nearest
  pixel (half to even), both included. VOC's default: on the full VOC 2007 annotation set it gives the paper's
  Baseline row 0.322 / 0.100 / 0.186 to the printed digits, where outward gives 0.325 / 0.100 / 0.187.
"""


@dataclass(frozen=True)
class BoxTransform:
    """Affine map original image -> square model input: resize to (resized_w, resized_h), then crop.

    input_x = x * scale_x - offset_x (same for y), followed by clipping to [0, size]. `scale_x` is
    `resized_w / width` (not the nominal size/short_side) so that boxes follow the resized pixel grid
    exactly, even after rounding the resized size.
    """

    scale_x: float
    scale_y: float
    offset_x: int
    offset_y: int
    resized_w: int
    resized_h: int
    size: int

    @property
    def source_size(self) -> tuple[int, int]:
        """The (width, height) of the original image this transform was built for."""
        return round(self.resized_w / self.scale_x), round(self.resized_h / self.scale_y)

    def apply(self, boxes, rounding: str = "outward") -> np.ndarray:
        """Map (k, 4) half-open original-image boxes to half-open input boxes, clipped to [0, size].

        rounding "outward" (see ROUNDINGS) returns the scaled float box, which `union_mask` rounds outward;
        "nearest" returns whole-pixel boxes: first and last pixel index scaled and rounded, both included.
        Raises ValueError for non-finite boxes or an unknown rounding.
        """
        if rounding not in ROUNDINGS:
            raise ValueError(f"unknown box rounding {rounding!r}; expected one of {list(ROUNDINGS)}")
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if not np.isfinite(b).all():
            raise ValueError(f"boxes must be finite, got {b.tolist()}")
        if rounding == "nearest":
            b = b.copy()
            b[:, 2:] -= 1  # half-open end -> index of the last pixel
        out = np.empty_like(b)
        out[:, [0, 2]] = b[:, [0, 2]] * self.scale_x - self.offset_x
        out[:, [1, 3]] = b[:, [1, 3]] * self.scale_y - self.offset_y
        # Snap float noise: 41 * (224/328) is 28.000000000000004, whose ceil would add a pixel column.
        # Exact coordinates are multiples of 1/width (>= 1e-5 apart for any real image), so 6 decimals lose nothing.
        out = np.round(out, _DECIMALS)
        if rounding == "nearest":
            out = np.round(out)  # half to even, as numpy rounds
            out[:, 2:] += 1  # the last pixel is included
        return np.clip(out, 0.0, float(self.size))

    def source_region(self) -> tuple[int, int, int, int]:
        """(left, top, width, height) of the original-image rectangle the model input shows, in whole pixels:
        where a map is placed when it is brought back to the original resolution (the pointing game). Exact
        for "warp" (the whole image); a centre crop's edges are rounded to the nearest pixel (±½ px)."""
        return (round(self.offset_x / self.scale_x), round(self.offset_y / self.scale_y),
                round(self.size / self.scale_x), round(self.size / self.scale_y))

    def apply_image(self, image: Image.Image) -> Image.Image:
        """Resize (bilinear) and crop a PIL image to size x size with the map used for the boxes."""
        if image.size != self.source_size:
            raise ValueError(
                f"image is {image.size[0]}x{image.size[1]} but the transform was built for "
                f"{self.source_size[0]}x{self.source_size[1]}"
            )
        resized = image.resize((self.resized_w, self.resized_h), Image.BILINEAR)
        box = (self.offset_x, self.offset_y, self.offset_x + self.size, self.offset_y + self.size)
        return resized.crop(box)


def _check_dims(width: int, height: int, size: int) -> None:
    for name, v in (("width", width), ("height", height), ("size", size)):
        if int(v) != v or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")


def imagenet_transform(width: int, height: int, size: int = 224) -> BoxTransform:
    """Paper/Keras ImageNet preprocessing: shorter side -> `size`, then centre crop size x size.

    s = size / min(w, h); resized = (round(w s), round(h s)); crop offset ((W' - size)//2, (H' - size)//2)
    (data_protocol.md §2.6).
    """
    _check_dims(width, height, size)
    s = size / min(width, height)
    rw, rh = max(size, round(width * s)), max(size, round(height * s))
    return BoxTransform(rw / width, rh / height, (rw - size) // 2, (rh - size) // 2, rw, rh, size)


def warp_transform(width: int, height: int, size: int) -> BoxTransform:
    """VOC/CaffeNet preprocessing: rescale to size x size without keeping the aspect ratio, no crop."""
    _check_dims(width, height, size)
    return BoxTransform(size / width, size / height, 0, 0, size, size, size)


TRANSFORMS = {"imagenet": imagenet_transform, "warp": warp_transform}


def make_transform(kind: str, width: int, height: int, size: int) -> BoxTransform:
    """The transform named `kind` ("imagenet" or "warp"); the single entry point for index and shards."""
    try:
        factory = TRANSFORMS[kind]
    except KeyError:
        raise ValueError(f"unknown transform {kind!r}; expected one of {sorted(TRANSFORMS)}") from None
    return factory(width, height, size)


def union_mask(boxes, size: int) -> np.ndarray:
    """Rasterise the union of half-open boxes into a bool (size, size) mask (rows = y, cols = x).

    A pixel is inside if the box touches it: columns floor(x0) .. ceil(x1) - 1, likewise rows. Empty or
    degenerate boxes (x1 <= x0) give no pixels. Overlaps count once (union, never a sum of areas).
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if not np.isfinite(b).all():
        raise ValueError(f"boxes must be finite, got {b.tolist()}")
    grid = np.arange(size)
    lo, hi = np.floor(b[:, :2]), np.ceil(b[:, 2:])
    in_x = (grid >= lo[:, 0:1]) & (grid < hi[:, 0:1])  # (k, size)
    in_y = (grid >= lo[:, 1:2]) & (grid < hi[:, 1:2])  # (k, size)
    # (size, k) @ (k, size): pixel (y, x) counts the boxes covering it.
    return (in_y.T.astype(np.int32) @ in_x.astype(np.int32)) > 0
