"""Procedural demo data set, written in the real PASCAL VOC 2007 on-disk layout.

Why: the pipeline must run end to end on any machine without downloads, and the demo has to exercise
what real VOC exercises: several classes per image, distractors, occlusion, `difficult`/`truncated`
flags, 1-based inclusive integer boxes, and object sizes spanning 0–100 % of the image so that every
one of the 100 box-fraction bins of Fig. 3 gets samples. `root` plays the role of `VOCdevkit/VOC2007`.

Each image is drawn from its own RNG stream (seed, image number), so an image does not depend on the
split sizes and re-runs are byte-identical (PIL's JPEG encoder is deterministic for fixed settings).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from lxml import etree
from PIL import Image

from lrp.datasets.catalog import DEMO_CLASSES
from lrp.io import atomic_dir

SPLITS = ("train", "val", "trainval", "test")
_MIN_VISIBLE_PX = 6  # an object with fewer visible pixels is not annotated (nobody could see it)
_DIFFICULT_VISIBLE = 0.4  # visible share below which an object is marked difficult (heavily occluded)
_REPEAT_CLASS = 0.35  # chance that a further object repeats a class already in the image


# ----------------------------------------------------------------------------- shapes and textures
def _shape_mask(cls: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Membership in normalised object coordinates (the unrotated shape spans [-1, 1]²)."""
    r2 = u * u + v * v
    if cls == "disc":
        return r2 <= 1.0
    if cls == "ring":
        return (r2 <= 1.0) & (r2 >= 0.52**2)
    if cls == "square":
        return (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)
    if cls == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= 1.0) & (av <= 0.3)) | ((au <= 0.3) & (av <= 1.0))
    if cls == "triangle":  # apex up, base down
        return (v <= 1.0) & (np.abs(u) <= (v + 1.0) / 2.0)
    if cls == "star":  # five points: radius follows a triangular wave in the angle
        t = (np.arctan2(u, -v) / (2 * np.pi) * 5.0) % 1.0
        return np.sqrt(r2) <= 0.42 + 0.58 * (1.0 - 2.0 * np.abs(t - 0.5)) ** 1.5
    raise ValueError(f"unknown demo class {cls!r}; known: {DEMO_CLASSES}")


def _texture(cls: str, x, y, u, v, phase: int, orient: int) -> np.ndarray:
    """Weight in [0, 1] of the second (texture) colour; pixel-periodic so small objects keep it."""
    if cls == "disc":  # shaded ball
        return np.clip(0.8 * (u * u + v * v), 0, 1)
    if cls == "square":  # stripes, period 4 px
        return (((y if orient else x) + phase) // 2 % 2).astype(np.float32)
    if cls == "triangle":  # checkerboard, 2 px cells
        return (((x + phase) // 2 + (y + phase) // 2) % 2).astype(np.float32)
    if cls == "star":  # diagonal stripes
        return (((x + (y if orient else -y)) + phase) // 2 % 2).astype(np.float32)
    return np.zeros_like(u)  # cross, ring: flat


# ----------------------------------------------------------------------------- drawing helpers
def _upsample(grid: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling of a small (k, k, C) grid to (size, size, C): smooth colour fields."""
    k = grid.shape[0]
    t = (np.arange(size) + 0.5) / size * (k - 1)
    i0 = np.clip(np.floor(t).astype(int), 0, k - 2)
    w = (t - i0)[:, None]
    rows = grid[i0] * (1 - w[..., None]) + grid[i0 + 1] * w[..., None]  # (size, k, C)
    cols = rows[:, i0] * (1 - w.T[..., None]) + rows[:, i0 + 1] * w.T[..., None]
    return cols


def _background(rng: np.random.Generator, S: int, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Gradient + low-frequency colour noise + soft blobs + thin lines: clutter that is not an object."""
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    ang = rng.uniform(0, 2 * np.pi)
    t = (np.cos(ang) * X + np.sin(ang) * Y) / S
    t = (t - t.min()) / max(np.ptp(t), 1e-6)
    img = c0 + (c1 - c0) * t[..., None]
    k = int(rng.integers(3, 7))
    img += _upsample(rng.normal(0, 35, (k, k, 3)), S)
    for _ in range(int(rng.integers(1, 6))):  # soft blobs: gaussian edges, unlike the hard-edged objects
        cx, cy = rng.uniform(0, S, 2)
        sx, sy = rng.uniform(0.04, 0.3, 2) * S
        a = 0.85 * np.exp(-0.5 * (((X - cx) / sx) ** 2 + ((Y - cy) / sy) ** 2))
        img += a[..., None] * (rng.uniform(0, 255, 3) - img)
    for _ in range(int(rng.integers(0, 5))):  # thin straight lines / wires
        p = rng.uniform(0, S, 2)
        d = rng.normal(size=2)
        d /= np.linalg.norm(d) + 1e-12
        dist = np.abs((X - p[0]) * d[1] - (Y - p[1]) * d[0])
        on = dist <= rng.uniform(0.4, 1.1)
        img[on] = rng.uniform(0, 255, 3)
    return img


def _contrasting_colour(rng: np.random.Generator, ref: np.ndarray) -> np.ndarray:
    """A random colour clearly different from `ref` (the local background), so objects stay visible."""
    for _ in range(20):
        c = rng.uniform(0, 255, 3)
        if np.linalg.norm(c - ref) > 110:
            return c
    return np.where(ref > 127, 20.0, 235.0) + rng.uniform(-15, 15, 3)


def _sample_size(rng: np.random.Generator) -> float:
    """Target box area as a fraction of the image: many small, a flat tail up to (truncated) > 1."""
    r = rng.random()
    if r < 0.45:
        return float(np.exp(rng.uniform(np.log(0.004), np.log(0.12))))
    return float(rng.uniform(0.08, 1.15))


def _draw_image(rng: np.random.Generator, S: int, classes, max_objects: int):
    """Draw one image. Returns (uint8 HxWx3, list of object dicts with 1-based inclusive boxes)."""
    # grid with a one-pixel frame outside the image: shape pixels in the frame mean "truncated"
    Y, X = np.mgrid[-1:S + 1, -1:S + 1].astype(np.float32)
    Xc, Yc = X + 0.5, Y + 0.5  # pixel centres
    Xi, Yi = X.astype(np.int64), Y.astype(np.int64)
    inner = (slice(1, S + 1), slice(1, S + 1))
    img = _background(rng, S, Xc[inner], Yc[inner])
    n = int(rng.integers(1, max_objects + 1))
    specs = []
    for j in range(n):
        # repeat a class already in the image now and then: groups of instances, whose box unions also
        # reach the box fractions no single integer box can have (e.g. [0.97, 0.98) at 64 px)
        if j and rng.random() < _REPEAT_CLASS:
            cls = specs[int(rng.integers(j))][1]
        else:
            cls = classes[int(rng.integers(len(classes)))]
        f = _sample_size(rng)
        fa = min(f, 1.0)
        lo, hi = max(fa, 0.5), min(1.0 / fa, 2.0)
        aspect = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        w, h = np.sqrt(f * aspect) * S, np.sqrt(f / aspect) * S
        specs.append((f, cls, w, h))
    specs.sort(key=lambda s: -s[0])  # big objects behind small ones, as in natural scenes
    owner = np.full((S, S), -1, np.int64)
    objects = []
    for k, (f, cls, w, h) in enumerate(specs):
        if cls in ("triangle", "star"):
            theta = rng.uniform(-np.pi, np.pi)
        elif cls in ("square", "cross"):
            theta = rng.uniform(-0.35, 0.35)
        else:
            theta = 0.0
        ct, st = np.cos(theta), np.sin(theta)
        ex, ey = abs(w / 2 * ct) + abs(h / 2 * st), abs(w / 2 * st) + abs(h / 2 * ct)
        if f > 1.0 or rng.random() < 0.15:  # may stick out of the image -> truncated
            cx, cy = rng.uniform(0.15 * S, 0.85 * S, 2) if f > 1.0 else rng.uniform(0, S, 2)
        else:
            cx = rng.uniform(min(ex, S / 2), max(S - ex, S / 2))
            cy = rng.uniform(min(ey, S / 2), max(S - ey, S / 2))
        dx, dy = Xc - cx, Yc - cy
        u = (ct * dx + st * dy) / (w / 2)
        v = (-st * dx + ct * dy) / (h / 2)
        m_ext = _shape_mask(cls, u, v)
        m = m_ext[inner]
        if m.sum() < _MIN_VISIBLE_PX:
            continue
        truncated = bool(m_ext.sum() > m.sum())  # the shape continues beyond the image border
        fg = _contrasting_colour(rng, img[m].mean(0))
        sign = np.where(fg > 127, -1.0, 1.0)
        tex_col = np.clip(fg + sign * rng.uniform(70, 130, 3), 0, 255)
        a = _texture(cls, Xi, Yi, u, v, int(rng.integers(4)), int(rng.integers(2)))[inner][..., None]
        img[m] = (fg * (1 - a) + tex_col * a)[m]
        owner[m] = k
        objects.append(dict(name=cls, area=int(m.sum()), truncated=truncated, k=k))
    annotated = []
    for o in objects:
        vis = owner == o["k"]
        nvis = int(vis.sum())
        if nvis < _MIN_VISIBLE_PX:
            continue
        rows, cols = np.flatnonzero(vis.any(1)), np.flatnonzero(vis.any(0))
        # VOC boxes the visible extent, 1-based inclusive
        box = (int(cols[0]) + 1, int(rows[0]) + 1, int(cols[-1]) + 1, int(rows[-1]) + 1)
        difficult = nvis / o["area"] < _DIFFICULT_VISIBLE
        annotated.append(dict(name=o["name"], box=box, truncated=int(o["truncated"]), difficult=int(difficult)))
    img += rng.normal(0, rng.uniform(3, 12), img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), annotated


# ----------------------------------------------------------------------------- writers
def _annotation_xml(image_id: str, S: int, objects: list[dict]) -> bytes:
    ann = etree.Element("annotation")
    etree.SubElement(ann, "folder").text = "VOC2007"
    etree.SubElement(ann, "filename").text = f"{image_id}.jpg"
    src = etree.SubElement(ann, "source")
    etree.SubElement(src, "database").text = "lrp-bench procedural demo"
    etree.SubElement(src, "annotation").text = "lrp.datasets.demo"
    etree.SubElement(src, "image").text = "procedural"
    size = etree.SubElement(ann, "size")
    for tag, val in (("width", S), ("height", S), ("depth", 3)):
        etree.SubElement(size, tag).text = str(val)
    etree.SubElement(ann, "segmented").text = "0"
    for o in objects:
        ob = etree.SubElement(ann, "object")
        etree.SubElement(ob, "name").text = o["name"]
        etree.SubElement(ob, "pose").text = "Unspecified"
        etree.SubElement(ob, "truncated").text = str(o["truncated"])
        etree.SubElement(ob, "difficult").text = str(o["difficult"])
        bb = etree.SubElement(ob, "bndbox")
        for tag, val in zip(("xmin", "ymin", "xmax", "ymax"), o["box"]):
            etree.SubElement(bb, tag).text = str(val)
    return etree.tostring(ann, pretty_print=True, encoding="utf-8")


def _write_jpeg(path: Path, img: np.ndarray) -> None:
    Image.fromarray(img).save(path, format="JPEG", quality=95, subsampling=0)


def _write_bytes(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def _write_lines(path: Path, lines: list[str]) -> None:
    _write_bytes(path, "".join(line + "\n" for line in lines).encode())


def _class_label(objects: list[dict], cls: str) -> int:
    """VOC ImageSets convention: 1 present, 0 only difficult instances, -1 absent."""
    flags = [o["difficult"] for o in objects if o["name"] == cls]
    if not flags:
        return -1
    return 0 if all(flags) else 1


def generate_demo(root, n_train: int = 1000, n_test: int = 500, image_size: int = 64, seed: int = 0,
                  max_objects: int = 4, n_val: int = 0, classes=DEMO_CLASSES, progress: bool = True) -> dict:
    """Write the demo set under `root` (= VOCdevkit/VOC2007) and return a summary dict.

    Ids run 000001… over train, then val, then test. ImageSets/Main holds {train,val,trainval,test}.txt
    and <class>_<split>.txt with VOC labels (1 present, 0 only difficult, -1 absent).
    The set is written into a temporary sibling folder that replaces `root` only when complete
    (`lrp.io.atomic_dir`): a failure (disk full, a kill) leaves `root` as it was and no temporary behind.
    Raises ValueError for bad parameters, OSError for write failures (naming `root` if the OS names no file).
    """
    if n_train < 0 or n_val < 0 or n_test < 0 or n_train + n_val + n_test == 0:
        raise ValueError(f"need a positive number of images, got train={n_train} val={n_val} test={n_test}")
    if image_size < 16:
        raise ValueError(f"image_size must be >= 16, got {image_size}")
    if max_objects < 1:
        raise ValueError(f"max_objects must be >= 1, got {max_objects}")
    classes = tuple(classes)
    unknown = [c for c in classes if c not in DEMO_CLASSES]
    if unknown:
        raise ValueError(f"unknown demo classes {unknown}; known: {DEMO_CLASSES}")
    root = Path(root)
    t0 = time.perf_counter()
    split_of = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
    with atomic_dir(root) as tmp:
        stats = _write_demo(tmp, split_of, image_size, seed, max_objects, classes, progress, t0)
    return dict(root=str(root), classes=list(classes), image_size=image_size, seed=seed, **stats,
                seconds=round(time.perf_counter() - t0, 3))


def _write_demo(root: Path, split_of: list[str], image_size: int, seed: int, max_objects: int,
                classes: tuple[str, ...], progress: bool, t0: float) -> dict:
    """Draw and write every image, annotation and image set under `root`; return the counts."""
    ann_dir, img_dir, sets_dir = root / "Annotations", root / "JPEGImages", root / "ImageSets" / "Main"
    for d in (ann_dir, img_dir, sets_dir):
        d.mkdir(parents=True, exist_ok=True)
    n_total = len(split_of)
    ids = {s: [] for s in SPLITS}
    labels: dict[str, list[int]] = {}
    n_obj = n_diff = n_trunc = 0
    obj_per_class = dict.fromkeys(classes, 0)
    for i in range(n_total):
        image_id = f"{i + 1:06d}"
        rng = np.random.default_rng([seed, i])
        img, objects = _draw_image(rng, image_size, classes, max_objects)
        _write_jpeg(img_dir / f"{image_id}.jpg", img)
        _write_bytes(ann_dir / f"{image_id}.xml", _annotation_xml(image_id, image_size, objects))
        ids[split_of[i]].append(image_id)
        labels[image_id] = [_class_label(objects, c) for c in classes]
        n_obj += len(objects)
        n_diff += sum(o["difficult"] for o in objects)
        n_trunc += sum(o["truncated"] for o in objects)
        for o in objects:
            obj_per_class[o["name"]] += 1
        if progress and ((i + 1) % 250 == 0 or i + 1 == n_total):
            print(f"[demo] {i + 1}/{n_total} images ({time.perf_counter() - t0:.1f}s)", file=sys.stderr)
    ids["trainval"] = ids["train"] + ids["val"]
    for split in SPLITS:
        _write_lines(sets_dir / f"{split}.txt", ids[split])
        for j, c in enumerate(classes):
            _write_lines(sets_dir / f"{c}_{split}.txt", [f"{i} {labels[i][j]:2d}" for i in ids[split]])
    n_pairs = sum(1 for lab in labels.values() for v in lab if v != -1)
    return dict(n_images=n_total, splits={s: len(ids[s]) for s in SPLITS}, n_objects=n_obj,
                n_difficult=n_diff, n_truncated=n_trunc, objects_per_class=obj_per_class, n_pairs=n_pairs)
