"""Index rows -> HDF5 image shards: uint8 RGB model-input images plus the bool box masks.

Why shards: decoding and resizing 50k JPEGs is the slow, model-independent part; doing it once per shard
lets the attribution jobs of every analyzer run in parallel on the same small files. The image is
transformed with `lrp.datasets.boxes.make_transform`, the same map the index used for the boxes, so mask and image
agree pixel for pixel. Images are stored once per shard (a VOC image with 3 classes is 3 samples but one
image); `image_row` maps samples to images.

Hostile files: an index row's image_file is opened only if it resolves (symlinks included) inside the image
folder (`lrp.datasets.index.resolve_inside`); an image whose header declares more than `max_pixels` pixels,
or whose resized copy would have more, is refused before it is decoded; 16-bit grey images are scaled to 8 bit,
not clipped; modes without a meaningful RGB conversion (32-bit integer or float, LAB) are refused.

Shard layout (HDF5):
  images       uint8 (n_images, size, size, 3), one chunk per image, lzf
  image_file   utf-8 (n_images,);  image_size int32 (n_images, 2), the original (width, height)
  image_row    int32 (n_samples,)
  masks        bool (n_samples, size, size), one chunk per sample, lzf
  sample_id    utf-8 (n_samples,);  class_index int64;  box_fraction float64
  attrs        shard, n_shards, transform, size, row_start, row_stop, source_modes (JSON {mode: count})
"""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Iterator, NamedTuple

import h5py
import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from lrp.datasets.boxes import BoxTransform, make_transform, union_mask
from lrp.datasets.index import resolve_inside
from lrp.io import atomic_path

__all__ = ["ImageDecodeError", "MAX_IMAGE_PIXELS", "shard_ranges", "load_rgb", "write_image_shard",
           "read_image_shard", "read_shard_attrs", "shard_size", "iter_shard_batches", "Batch"]

_STR = h5py.string_dtype("utf-8")
_SAMPLE_KEYS = ("image_row", "masks", "sample_id", "class_index", "box_fraction")

MAX_IMAGE_PIXELS = 89_478_485
"""Default bound on width x height of an image to decode (PIL's own default Image.MAX_IMAGE_PIXELS, about
0.27 GB as RGB), checked from the header before decoding; VOC and ImageNet photographs are far smaller.
PIL's global setting is left alone: PIL itself still refuses images above twice its limit at open, so a
larger `max_pixels` cannot admit those."""

_RGB_MODES = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "HSV"})
"""8-bit modes whose PIL convert("RGB") is meaningful: it drops alpha, expands palettes, and maps CMYK
(which real ImageNet JPEGs use) and YCbCr/HSV by their formulas."""

_WIDE_GREY = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
"""16-bit grey modes (PNG, TIFF, JPEG 2000). PIL's convert("RGB") would clip them at 255."""

_SIXTEEN_BIT_I = frozenset({"PNG", "PPM"})
"""Formats whose "I" (PIL's 32-bit integer mode) holds 16-bit grey, 0..65535: PGM with a maxval above 255
(the decoder scales any maxval to 65535), and 16-bit PNG in Pillow versions before "I;16". Elsewhere
(TIFF, ...) an "I" image may hold 0..255, 0..65535 or any int32, so no 8-bit mapping can be right."""


class ImageDecodeError(ValueError):
    """An image file that cannot be decoded completely (truncated, corrupt, not an image) or that does not
    match its index row. A ValueError: it describes the user's data, not a bug (see lrp.pipeline.runner)."""

    def __init__(self, path, message: str):
        self.path = str(path)
        super().__init__(f"{path}: {message}")


def shard_ranges(n: int, n_shards: int) -> list[tuple[int, int]]:
    """Split range(n) into n_shards contiguous [start, stop) ranges whose sizes differ by at most 1."""
    if int(n_shards) != n_shards or n_shards < 1:
        raise ValueError(f"n_shards must be a positive integer, got {n_shards!r}")
    if int(n) != n or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    q, r = divmod(int(n), int(n_shards))
    stops = np.cumsum([q + (i < r) for i in range(int(n_shards))])
    return [(int(b - (q + (i < r))), int(b)) for i, b in enumerate(stops)]


def load_rgb(path, max_pixels: int | None = MAX_IMAGE_PIXELS) -> tuple[Image.Image, str]:
    """Decode an image fully and return (RGB image, original mode).

    `.load()` forces decoding, so a truncated file fails here rather than yielding grey pixels. Content
    decides the format (a PNG named .JPEG decodes as PNG). EXIF orientation is deliberately ignored: the
    boxes were drawn on the stored pixel grid. Raises ImageDecodeError for an image above `max_pixels`
    (from its header, before decoding; None: no bound but PIL's own) and for one whose mode has no meaningful
    8-bit RGB conversion (see `_to_rgb`).
    """
    return _load_rgb(path, max_pixels)


def _load_rgb(path, max_pixels: int | None, check_header=None) -> tuple[Image.Image, str]:
    """load_rgb, with `check_header(size)` called on the header's (width, height) before decoding."""
    try:
        with Image.open(path) as im:
            _check_pixels(path, im.size, max_pixels)
            if check_header is not None:
                check_header(im.size)
            im.load()
            mode = im.mode
            rgb = _to_rgb(path, im)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: image not found") from None
    except ImageDecodeError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageDecodeError(path, f"cannot decode image: {e}") from None  # the warning: under -W error
    return rgb, mode


_LIMIT_HINT = "(config datasets.<name>.limits.image_pixels; max_pixels in Python)"


def _check_pixels(path, size: tuple[int, int], max_pixels: int | None) -> None:
    """Refuse a decompression bomb from the header's size: decoding it would take size[0] * size[1] * 3 bytes."""
    w, h = size
    if max_pixels is not None and w * h > max_pixels:
        raise ImageDecodeError(path, f"image is {w}x{h} = {w * h:,} pixels, above the limit of {max_pixels:,} "
                                     "(max_pixels); refused before decoding (a decompression bomb?). Shrink the "
                                     f"image, or raise the limit if it is genuine {_LIMIT_HINT}")


def _check_resized(path, size: tuple[int, int], transform: str, t: BoxTransform, max_pixels: int | None) -> None:
    """Refuse an image whose resized copy would exceed `max_pixels`, before decoding it.

    Why: the ImageNet transform scales the short side to the input size, so a 1 x 20000 image (a file of a
    few bytes, within the input bound) would resize to 224 x 4,480,000, about 3 GB of RGB."""
    (w, h), rw, rh = size, t.resized_w, t.resized_h
    if max_pixels is not None and rw * rh > max_pixels:
        raise ImageDecodeError(path, f"image is {w}x{h}, which the {transform!r} transform to {t.size} would resize "
                                     f"to {rw}x{rh} = {rw * rh:,} pixels, above the limit of {max_pixels:,} "
                                     "(max_pixels); refused before decoding (an extreme aspect ratio). Crop the "
                                     f"image, or raise the limit if it is genuine {_LIMIT_HINT}")


def _to_rgb(path, im: Image.Image) -> Image.Image:
    """8-bit RGB of a decoded image; raises ImageDecodeError (naming the file and mode) where no mapping is right.

    The _RGB_MODES convert as PIL does. 16-bit grey ("I;16*", and "I" from _SIXTEEN_BIT_I formats) keeps its
    high byte, value >> 8 (floor(v / 256)): the same mapping PIL's PNG decoder uses for 16-bit RGB(A), so grey
    and colour 16-bit files agree. Refused: "I" from other formats (undefined range: 0..255 would come out
    black), float "F" (undefined range), "LAB" (PIL copies L, a, b as R, G, B: false colours) and any other
    mode."""
    mode = im.mode
    if mode in _RGB_MODES:
        return im.convert("RGB")
    if mode == "F":
        raise ImageDecodeError(path, "32-bit floating-point image (mode F): its value range is undefined, so it "
                                     "has no 8-bit mapping; convert it to an 8-bit RGB or grey image first")
    if mode == "I" and im.format not in _SIXTEEN_BIT_I:
        raise ImageDecodeError(path, f"32-bit integer image (mode I, format {im.format}): its value range is "
                                     "undefined (0..255, 0..65535 or any int32), so it has no 8-bit mapping; "
                                     "convert it to an 8-bit or 16-bit RGB or grey image first")
    if mode == "LAB":
        raise ImageDecodeError(path, "CIELAB image (mode LAB): PIL's RGB conversion would copy L, a, b as R, G, B "
                                     "(false colours); convert it to RGB with a colour-managed tool first")
    if mode not in _WIDE_GREY and mode != "I":
        raise ImageDecodeError(path, f"image mode {mode}: no meaningful conversion to 8-bit RGB; convert it to an "
                                     "8-bit RGB or grey image first")
    a = np.asarray(im)
    if a.size and (a.min() < 0 or a.max() > 65535):
        raise ImageDecodeError(path, f"{mode} image has values {a.min()}..{a.max()}, outside 16-bit 0..65535, "
                                     "so it has no 8-bit mapping; convert it to an 8-bit RGB or grey image first")
    return Image.fromarray((a >> 8).astype(np.uint8)).convert("RGB")


def _prepare(path: Path, width: int, height: int, transform: str, size: int,
             max_pixels: int | None) -> tuple[np.ndarray, str]:
    """The transformed uint8 image of one index row. From the header, before decoding: the image must have the
    index's size, and its resized copy must stay within `max_pixels` (ImageDecodeError otherwise)."""
    def check_header(header_size):
        if header_size != (width, height):
            raise ImageDecodeError(path, f"image is {header_size[0]}x{header_size[1]} but the index says "
                                         f"{width}x{height}")
        _check_resized(path, header_size, transform, make_transform(transform, width, height, size), max_pixels)

    img, mode = _load_rgb(path, max_pixels, check_header)
    if img.size != (width, height):  # pragma: no cover - a decoder whose image differs from its header
        raise ImageDecodeError(path, f"image is {img.size[0]}x{img.size[1]} but the index says {width}x{height}")
    arr = np.asarray(make_transform(transform, width, height, size).apply_image(img), dtype=np.uint8)
    if arr.shape != (size, size, 3):  # pragma: no cover - guards the PIL contract
        raise ImageDecodeError(path, f"transformed image has shape {arr.shape}")
    return arr, mode


def _mask(sample_id: str, boxes_json: str, fraction: float, size: int) -> np.ndarray:
    """The sample's mask from the index boxes, checked against the index's box_fraction."""
    b = np.asarray(json.loads(boxes_json), dtype=np.float64).reshape(-1, 4)
    if b.size and (b.min() < 0 or b.max() > size):
        raise ValueError(f"sample {sample_id}: boxes exceed [0, {size}]; was the index built for size {size}?")
    mask = union_mask(b, size)
    if abs(mask.mean() - float(fraction)) > 1e-9:
        raise ValueError(f"sample {sample_id}: mask fraction {mask.mean():.6f} != index box_fraction {fraction}")
    return mask


def _bounded_map(fn, items, workers: int, window: int) -> Iterator:
    """Ordered map over `items` with at most `window` results in flight (bounded memory)."""
    if workers <= 1:
        yield from map(fn, items)
        return
    items = iter(items)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:  # PIL releases the GIL in decode/resize
        pending = [pool.submit(fn, it) for it in itertools.islice(items, window)]
        while pending:
            fut = pending.pop(0)
            nxt = next(items, None)
            if nxt is not None:
                pending.append(pool.submit(fn, nxt))
            try:
                yield fut.result()
            except BaseException:
                for p in pending:
                    p.cancel()
                raise


def _image_paths(image_dir, files: list[str]) -> dict[str, Path]:
    """{image_file: resolved path} for the shard's files, all checked before any is opened: the folder must
    exist and every file must resolve inside it (UnsafePathError, a ValueError, otherwise)."""
    if image_dir is None or not Path(image_dir).is_dir():
        raise FileNotFoundError(f"{image_dir}: image folder not found; the image shards need the images (the "
                                "index and the baseline do not)")
    return {f: resolve_inside(image_dir, f) for f in files}


def write_image_shard(index_df: pd.DataFrame, shard: int, n_shards: int, image_dir, transform: str,
                      size: int, out_path, workers: int = 4, max_pixels: int | None = MAX_IMAGE_PIXELS) -> dict:
    """Write shard `shard` of `n_shards` (contiguous index rows) to `out_path` (HDF5, atomic).

    Checks every decoded image against the index's width/height, so a wrong image folder or a stale index
    fails loudly, and opens no file outside `image_dir` (see `_image_paths`); `max_pixels` goes to load_rgb.
    Returns a summary {n_samples, n_images, source_modes}.
    """
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard must be in [0, {n_shards}), got {shard}")
    make_transform(transform, 1, 1, size)  # validate the name before any work
    start, stop = shard_ranges(len(index_df), n_shards)[shard]
    rows = index_df.iloc[start:stop]
    files = list(dict.fromkeys(rows["image_file"]))  # unique, first-appearance order
    paths = _image_paths(image_dir, files)
    file_row = {f: i for i, f in enumerate(files)}
    dims = {}
    for f, w, h in zip(rows["image_file"], rows["width"], rows["height"]):
        if dims.setdefault(f, (int(w), int(h))) != (int(w), int(h)):
            raise ValueError(f"index rows disagree on the size of {f}: {dims[f]} vs {(int(w), int(h))}")

    modes = Counter()
    with atomic_path(out_path) as tmp, h5py.File(tmp, "w") as h5:
        shape = (len(files), size, size, 3)
        images = h5.create_dataset("images", shape=shape, maxshape=(None, size, size, 3), dtype=np.uint8,
                                   chunks=(1, size, size, 3), compression="lzf")
        h5.create_dataset("image_file", data=np.array(files, dtype=object), dtype=_STR)
        h5.create_dataset("image_size", data=np.array([dims[f] for f in files], dtype=np.int32).reshape(-1, 2))
        h5.create_dataset("image_row", data=np.array([file_row[f] for f in rows["image_file"]], dtype=np.int32))
        masks = h5.create_dataset("masks", shape=(len(rows), size, size), maxshape=(None, size, size),
                                  dtype=bool, chunks=(1, size, size), compression="lzf")
        for i, (sid, boxes, frac) in enumerate(zip(rows["sample_id"], rows["boxes"], rows["box_fraction"])):
            masks[i] = _mask(sid, boxes, frac, size)  # one at a time: a 50k-sample shard would need 2.5 GB
        h5.create_dataset("sample_id", data=np.array(list(rows["sample_id"]), dtype=object), dtype=_STR)
        h5.create_dataset("class_index", data=rows["class_index"].to_numpy(dtype=np.int64))
        h5.create_dataset("box_fraction", data=rows["box_fraction"].to_numpy(dtype=np.float64))
        h5.attrs.update({"shard": shard, "n_shards": n_shards, "transform": transform, "size": size,
                         "row_start": start, "row_stop": stop})

        def job(f):
            return _prepare(paths[f], *dims[f], transform, size, max_pixels)

        progress = tqdm(total=len(files), desc=f"shard {shard}/{n_shards}", unit="img", file=sys.stderr,
                        mininterval=5)
        with progress:
            for i, (arr, mode) in enumerate(_bounded_map(job, files, workers, window=max(1, 4 * workers))):
                images[i] = arr
                modes[mode] += 1
                progress.update()
        h5.attrs["source_modes"] = json.dumps(dict(sorted(modes.items())))
    return {"n_samples": len(rows), "n_images": len(files), "source_modes": dict(modes)}


def _open(path):
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise OSError(f"{path}: cannot open image shard: {e}") from None


def _check_keys(h5, path, keys):
    missing = [k for k in keys if k not in h5]
    if missing:
        raise ValueError(f"{path}: not an image shard, missing datasets {missing}")


def read_samples(path, sample_ids=None, n_images: int | None = None) -> list[tuple[str, np.ndarray, int]]:
    """[(sample_id, uint8 image, class_index)] of one shard, reading only the image rows needed: the listed
    `sample_ids` that the shard holds, or the first sample of each of the first `n_images` images.

    Why not iter_shard_batches: picking a handful of samples (the report's panels) out of a 50,000-image
    study must not decode every image.
    """
    with _open(path) as h5:
        _check_keys(h5, path, ("images",) + _SAMPLE_KEYS)
        ids = h5["sample_id"].asstr()[:]
        rows = h5["image_row"][:]
        if sample_ids is not None:
            want = set(sample_ids)
            picks = [i for i, sid in enumerate(ids) if sid in want]
        else:
            first = {}
            for i, r in enumerate(rows):
                if len(first) >= (n_images or 0):
                    break
                first.setdefault(int(r), i)
            picks = sorted(first.values())
        cls = h5["class_index"][:]
        return [(str(ids[i]), h5["images"][int(rows[i])], int(cls[i])) for i in picks]


def read_shard_attrs(path) -> dict:
    """The shard's attributes (shard, n_shards, transform, size, row_start, row_stop, source_modes)."""
    with _open(path) as h5:
        return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in h5.attrs.items()}


def read_image_shard(path) -> dict[str, np.ndarray]:
    """Load a whole shard into memory: every dataset as a numpy array (strings as str arrays)."""
    with _open(path) as h5:
        _check_keys(h5, path, ("images", "image_file", "image_size") + _SAMPLE_KEYS)
        out = {}
        for k in ("images", "image_file", "image_size") + _SAMPLE_KEYS:
            ds = h5[k]
            out[k] = np.array(ds.asstr()[:], dtype=str) if ds.dtype == _STR else ds[:]
        return out


class Batch(NamedTuple):
    images: np.ndarray | None  # uint8 (B, H, W, 3); None with load_images=False
    masks: np.ndarray | None  # bool (B, H, W); None with unique_images=True
    class_index: np.ndarray | None  # int64 (B,); None with unique_images=True
    sample_id: np.ndarray | None  # str (B,); None with unique_images=True
    source_size: np.ndarray | None = None  # int32 (B, 2) original (width, height); None with unique_images=True


def shard_size(path) -> tuple[int, np.ndarray, int]:
    """(n_samples, sample_id array, input size) of a shard without reading images or masks."""
    with _open(path) as h5:
        _check_keys(h5, path, ("sample_id", "masks"))
        return len(h5["sample_id"]), np.array(h5["sample_id"].asstr()[:], dtype=str), int(h5["masks"].shape[1])


def iter_shard_batches(path, batch_size: int, unique_images: bool = False,
                       load_images: bool = True) -> Iterator[Batch]:
    """Yield batches reading only one batch at a time.

    Default: per-sample batches, images expanded from image_row (a VOC image with 3 classes appears 3
    times). unique_images=True: each stored image once (e.g. to learn patterns), per-sample fields None.
    load_images=False: per-sample batches without images (masks-only consumers such as the metrics).
    """
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    bs = int(batch_size)
    with _open(path) as h5:
        _check_keys(h5, path, ("images", "image_size") + _SAMPLE_KEYS)
        if unique_images:
            for s in range(0, len(h5["images"]), bs):
                yield Batch(h5["images"][s: s + bs], None, None, None)
            return
        image_row = h5["image_row"][:]
        sizes = h5["image_size"][:]
        if len(sizes) != len(h5["images"]) or (len(image_row) and not 0 <= image_row.min() <= image_row.max()
                                                < len(sizes)):
            raise ValueError(f"{path}: image_row and image_size do not match the {len(h5['images'])} images")
        for s in range(0, len(image_row), bs):
            sl = slice(s, s + bs)
            images = None
            if load_images:
                rows, inverse = np.unique(image_row[sl], return_inverse=True)  # h5py wants increasing indices
                images = h5["images"][rows][inverse]
            yield Batch(images, h5["masks"][sl], h5["class_index"][sl],
                        np.array(h5["sample_id"].asstr()[sl], dtype=str), sizes[image_row[sl]])
