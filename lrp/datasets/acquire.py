"""Turn a configured data source (an archive's registry name, a URL, a local archive or an extracted folder)
into a checked data folder: the archive registry, the data-set layouts, the prepare_* orchestration, the CLI.

Why apart from the download (`lrp.datasets.download`) and the extraction (`lrp.datasets.extract`): this is
the project's knowledge of its data sets (which files, which MD5s, which config keys, what a usable VOC or
ImageNet folder looks like); those two know nothing of data sets. Errors name the config key a source came
from; they are `AcquisitionError`, or `TransientAcquisitionError` when only the network failed (both from
`lrp.datasets.acquire_errors`, and part of this module's face: every entry point here raises them).

Entry points: `fetch` (registry name -> verified file), `resolve_dataset_source` / `prepare_dataset`
(config value -> usable data folder), `prepare_voc` / `prepare_imagenet*` (what the pipeline calls),
`load_registry`, `check_layout`, and `python -m lrp.datasets.acquire ...`.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.resources
import logging
import os
import posixpath
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import yaml

from lrp.datasets.acquire_errors import AcquisitionError, TransientAcquisitionError
from lrp.datasets.download import download, local_path, normalise_md5, verify_md5
from lrp.datasets.extract import (
    MAX_EXTRACT_BYTES,
    TAR_SUFFIXES,
    ZIP_SUFFIXES,
    archive_format,
    marker_path,
    safe_extract,
)

__all__ = ["AcquisitionError", "TransientAcquisitionError", "ArchiveSpec", "SourcePlan", "LAYOUT_CHECKS",
           "load_registry", "fetch", "check_layout", "resolve_dataset_source", "prepare_dataset", "prepare_voc",
           "prepare_imagenet", "prepare_imagenet_boxes", "prepare_imagenet_images", "is_box_csv", "main"]

log = logging.getLogger(__name__)

REGISTRY_FILE = "data/archives.yaml"


# --------------------------------------------------------------------------------------------------
# registry


@dataclasses.dataclass(frozen=True)
class ArchiveSpec:
    """One entry of lrp/data/archives.yaml (see the comments there for the fields)."""

    name: str
    filename: str
    url: str | None = None
    mirrors: tuple[str, ...] = ()
    md5: str | None = None
    size: int | None = None
    extracts_to: str | None = None
    kind: str | None = None
    config_key: str | None = None
    source_note: str | None = None

    @classmethod
    def from_mapping(cls, name: str, data: dict, where: str) -> "ArchiveSpec":
        if not isinstance(data, dict):
            raise AcquisitionError(f"{where}: entry {name!r} must be a mapping, got {type(data).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)} - {"name"}
        unknown = set(data) - fields
        if unknown:
            raise AcquisitionError(f"{where}: entry {name!r} has unknown field(s) {sorted(unknown)}; "
                                   f"known: {sorted(fields)}")
        filename = data.get("filename")
        if not isinstance(filename, str) or not filename or "/" in filename:
            raise AcquisitionError(f"{where}: entry {name!r} needs 'filename', a plain file name")
        size = data.get("size")
        if size is not None and (not isinstance(size, int) or size < 0):
            raise AcquisitionError(f"{where}: entry {name!r}: 'size' must be a byte count or null")
        kind = data.get("kind")
        if kind is not None and kind not in LAYOUT_CHECKS:
            raise AcquisitionError(f"{where}: entry {name!r}: unknown kind {kind!r}; "
                                   f"known: {sorted(LAYOUT_CHECKS)}")
        return cls(name=name, filename=filename, url=data.get("url"),
                   mirrors=tuple(data.get("mirrors") or ()),
                   md5=normalise_md5(data.get("md5"), f"{where}: entry {name!r} md5"), size=size,
                   extracts_to=data.get("extracts_to"), kind=kind, config_key=data.get("config_key"),
                   source_note=data.get("source_note"))


def load_registry(path: str | os.PathLike | None = None) -> dict[str, ArchiveSpec]:
    """Parse the archive registry (default: the packaged lrp/data/archives.yaml)."""
    if path is None:
        resource = importlib.resources.files("lrp").joinpath(REGISTRY_FILE)
        where, text = f"lrp/{REGISTRY_FILE}", resource.read_text(encoding="utf-8")
    else:
        where, text = str(path), Path(path).read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise AcquisitionError(f"{where}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise AcquisitionError(f"{where}: expected a mapping of archive names to entries")
    return {name: ArchiveSpec.from_mapping(name, entry, where) for name, entry in data.items()}


def _as_spec(name_or_spec, registry: dict[str, ArchiveSpec] | None) -> ArchiveSpec:
    if isinstance(name_or_spec, ArchiveSpec):
        return name_or_spec
    if isinstance(name_or_spec, dict):
        data = dict(name_or_spec)
        return ArchiveSpec.from_mapping(str(data.pop("name", data.get("filename"))), data, "archive spec")
    registry = load_registry() if registry is None else registry
    if name_or_spec not in registry:
        raise AcquisitionError(f"unknown archive {name_or_spec!r}; known: {', '.join(sorted(registry))} "
                               "(lrp/data/archives.yaml)")
    return registry[name_or_spec]


def fetch(name_or_spec: str | dict | ArchiveSpec, dest_dir: str | os.PathLike,
          source: str | os.PathLike | None = None, *, registry: dict[str, ArchiveSpec] | None = None,
          retries: int = 5, backoff: float = 1.0, timeout: float = 30, progress: bool = True) -> Path:
    """Put the registry entry's file into `dest_dir` (verified) and return its path.

    `source` (a local path or URL the user configured) overrides the registry URL; entries without a
    public URL (ImageNet) require it. Without `source`, the registry URL and then its mirrors are tried.
    """
    spec = _as_spec(name_or_spec, registry)
    dest = Path(dest_dir) / spec.filename
    if source is not None:
        urls = [str(source)]
    elif spec.url:
        urls = [spec.url, *spec.mirrors]
    else:
        key = spec.config_key or "the data source"
        raise AcquisitionError(
            f"{spec.name} ({spec.filename}) has no public download URL (ImageNet needs a login at "
            f"https://image-net.org). Download it yourself and set the config key `{key}` to the local "
            "path of the file (or a URL you can reach)."
        )
    errors: list[AcquisitionError] = []
    for url in urls:
        try:
            return download(url, dest, md5=spec.md5, retries=retries, backoff=backoff, timeout=timeout,
                            progress=progress)
        except AcquisitionError as e:
            if dest.exists() or len(urls) == 1:
                raise
            errors.append(e)
            log.warning("%s: %s; trying the next mirror", spec.name, e)
    transient = all(isinstance(e, TransientAcquisitionError) for e in errors)
    cls = TransientAcquisitionError if transient else AcquisitionError
    raise cls(f"{spec.name}: every source failed:\n  " + "\n  ".join(map(str, errors)))


# --------------------------------------------------------------------------------------------------
# data-set sources and layouts


def _voc_root(path: Path, year: str) -> Path:
    """Folder holding VOCdevkit/VOC<year>/Annotations/*.xml (accepts that folder, VOCdevkit or VOC<year>)."""
    candidates = [path]
    if path.name == "VOCdevkit":
        candidates.append(path.parent)
    if path.name == f"VOC{year}" and path.parent.name == "VOCdevkit":
        candidates.append(path.parent.parent)
    for root in candidates:
        ann = root / "VOCdevkit" / f"VOC{year}" / "Annotations"
        if ann.is_dir() and next(ann.glob("*.xml"), None) is not None:
            return root
    raise AcquisitionError(
        f"{path}: not an extracted PASCAL VOC {year}: expected VOCdevkit/VOC{year}/Annotations/*.xml "
        "below it. Give the folder that contains VOCdevkit/, the .tar archive, or its URL."
    )


def _glob_root(pattern: str, what: str):
    def check(path: Path) -> Path:
        if next(path.rglob(pattern), None) is None:
            raise AcquisitionError(f"{path}: no {what} ({pattern}) found below it; give the extracted "
                                   "folder, the archive, or its URL")
        return path
    return check


LAYOUT_CHECKS = {
    "voc2007": lambda p: _voc_root(p, "2007"),
    "voc2012": lambda p: _voc_root(p, "2012"),
    "imagenet_boxes": _glob_root("*.xml", "ImageNet box XML files"),
    "imagenet_images": _glob_root("*.JPEG", "ImageNet val images"),
    "imagenet_devkit": _glob_root("ILSVRC2012_validation_ground_truth.txt", "ImageNet devkit"),
}


def check_layout(path: str | os.PathLike, kind: str) -> Path:
    """Return the data root below `path` for `kind` (VOC: the folder holding VOCdevkit/), or raise."""
    if kind not in LAYOUT_CHECKS:
        raise AcquisitionError(f"unknown data-set kind {kind!r}; known: {', '.join(sorted(LAYOUT_CHECKS))}")
    path = Path(path)
    if not path.is_dir():
        what = "is a file, not a folder" if path.exists() else "does not exist"
        raise AcquisitionError(f"{path}: {what}; expected the extracted {kind} data")
    return LAYOUT_CHECKS[kind](path)


@dataclasses.dataclass(frozen=True)
class SourcePlan:
    """What it takes to turn a configured data source into a usable folder.

    action: 'use' (an extracted folder; `root` is the checked data root), 'extract' (a local archive at
    `location`) or 'download' (a URL; `filename` is the archive name to save it under, then extract).
    """

    action: str
    location: str
    kind: str
    root: Path | None = None
    filename: str | None = None


def resolve_dataset_source(path_or_url: str | os.PathLike, kind: str) -> SourcePlan:
    """Classify a configured data source (folder / archive / URL) for data-set `kind`; nothing is written."""
    if kind not in LAYOUT_CHECKS:
        raise AcquisitionError(f"unknown data-set kind {kind!r}; known: {', '.join(sorted(LAYOUT_CHECKS))}")
    text = str(path_or_url)
    local = local_path(text)
    if local is None:
        filename = posixpath.basename(unquote(urlsplit(text).path))
        if not filename.lower().endswith(TAR_SUFFIXES + ZIP_SUFFIXES):
            raise AcquisitionError(f"{text}: a URL source must name an archive "
                                   f"({', '.join(TAR_SUFFIXES + ZIP_SUFFIXES)})")
        return SourcePlan("download", text, kind, filename=filename)
    if local.is_dir():
        return SourcePlan("use", str(local), kind, root=check_layout(local, kind))
    if local.is_file():
        if archive_format(local) is None:
            raise AcquisitionError(f"{local}: neither a folder nor a tar/zip archive; for {kind} give the "
                                   "extracted folder, the archive, or its URL")
        return SourcePlan("extract", str(local), kind)
    raise AcquisitionError(f"{local}: data source for {kind} does not exist; set the config key to an "
                           "extracted folder, an archive file, or a URL")


def prepare_dataset(path_or_url: str | os.PathLike, kind: str, extract_to: str | os.PathLike, *,
                    download_dir: str | os.PathLike | None = None, md5: str | None = None,
                    retries: int = 5, backoff: float = 1.0, timeout: float = 30,
                    progress: bool = True, max_bytes: int | None = None,
                    max_members: int | None = None) -> Path:
    """Carry out `resolve_dataset_source`: download/extract as needed, check the layout, return the root.

    Archives extract into `extract_to` (several may share it, e.g. VOC trainval + test); downloads go to
    `download_dir` (default: the parent of `extract_to`). `md5`, if given, is checked on the archive.
    `max_bytes` / `max_members` bound the extraction (see `safe_extract`).
    """
    plan = resolve_dataset_source(path_or_url, kind)
    if plan.action == "use":
        return plan.root
    if plan.action == "download":
        folder = Path(download_dir) if download_dir is not None else Path(extract_to).parent
        archive = download(plan.location, folder / plan.filename, md5=md5, retries=retries,
                           backoff=backoff, timeout=timeout, progress=progress)
    else:
        archive = Path(plan.location)
        if md5 is not None and not marker_path(extract_to, archive.name).is_file():
            verify_md5(archive, md5)
    safe_extract(archive, extract_to, progress=progress, max_bytes=max_bytes, max_members=max_members)
    return check_layout(extract_to, kind)


def _keyed(err: AcquisitionError, where: str) -> AcquisitionError:
    """`err` prefixed with the config key it came from, of the same class (transient stays transient)."""
    return type(err)(f"{where}: {err}")


def _registry_md5(filename: str, registry: dict[str, ArchiveSpec]) -> str | None:
    md5 = next((s.md5 for s in registry.values() if s.filename == filename), None)
    if md5 is None:
        log.warning("%s: not a file name listed in lrp/data/archives.yaml, so its MD5 is NOT checked",
                    filename)
    return md5


def _prepare_keyed(source, kind: str, extract_to: Path, key: str, registry, **kw) -> Path:
    """`prepare_dataset` with the registry MD5 of known archive names; errors name the config key."""
    try:
        plan = resolve_dataset_source(source, kind)
        md5 = None
        if plan.action != "use":
            md5 = _registry_md5(plan.filename or Path(plan.location).name, registry)
        return prepare_dataset(source, kind, extract_to, md5=md5, **kw)
    except AcquisitionError as e:
        raise _keyed(e, f"`{key}` = {source!s}") from None


def prepare_voc(root: str | os.PathLike | None, download: bool = False, key: str = "datasets.voc2007.root",
                *, year: str = "2007", registry: dict[str, ArchiveSpec] | None = None,
                max_bytes: int | None = None, max_members: int | None = None, **kw) -> Path:
    """The `VOCdevkit/VOC<year>` folder for config value `root` (what `lrp.pipeline.data.data` needs).

    `root` is either an extracted tree (the VOC<year> folder, VOCdevkit, or the folder holding VOCdevkit)
    or the folder holding the official tars (trainval + test for 2007). With `download`, missing tars are
    fetched into `root` first. Tars are MD5-checked and extracted into `root` (once: markers), within
    `max_bytes` / `max_members` (see `safe_extract`). `kw` goes to `fetch`/`download` (retries, backoff,
    timeout, progress).
    """
    if root is None:
        raise AcquisitionError(f"`{key}` is not set: give the extracted VOCdevkit/VOC{year} folder, or the "
                               "folder for the VOC tars (with source: download they are fetched into it)")
    registry = load_registry() if registry is None else registry
    root, kind = Path(root), f"voc{year}"
    specs = [registry[n] for n in (f"voc{year}_trainval", f"voc{year}_test") if n in registry]
    todo = [s for s in specs if not marker_path(root, s.filename).is_file()]  # markers: done before
    if todo and (download or any((root / s.filename).is_file() for s in specs)):
        missing = [s.filename for s in todo if not (root / s.filename).is_file()]
        if missing and not download:
            raise AcquisitionError(f"`{key}` = {root}: {', '.join(missing)} missing beside the other VOC "
                                   "tar; add it, or set source: download to fetch it")
        for spec in todo:
            archive = root / spec.filename
            try:
                if download:
                    fetch(spec, root, **kw)  # verifies the MD5 (also of a tar already there)
                else:
                    verify_md5(archive, spec.md5)
                safe_extract(archive, root, progress=kw.get("progress", True), max_bytes=max_bytes,
                             max_members=max_members)
            except AcquisitionError as e:
                raise _keyed(e, f"`{key}` = {root}") from None
    try:
        base = check_layout(root, kind)
    except AcquisitionError as e:
        raise _keyed(e, f"`{key}`") from None
    return base / "VOCdevkit" / f"VOC{year}"


def _require(value, key: str, name: str, entry: str, registry: dict[str, ArchiveSpec]) -> None:
    if value is None:
        raise AcquisitionError(
            f"`{key}.{name}` is not set: ImageNet needs a login at https://image-net.org; download "
            f"{registry[entry].filename} yourself and set the key to it (or to its extracted folder)")


def is_box_csv(boxes) -> bool:
    """Whether the configured ImageNet boxes are Kaggle's LOC_val_solution.csv, which has no image sizes (so
    indexing it needs the images), rather than the official XML files (which the index reads alone)."""
    local = local_path(str(boxes)) if boxes is not None else None
    return local is not None and local.suffix.lower() == ".csv"


def prepare_imagenet_boxes(boxes: str | os.PathLike | None, key: str = "datasets.imagenet",
                           work_dir: str | os.PathLike = "data/imagenet", *,
                           registry: dict[str, ArchiveSpec] | None = None, **kw) -> Path:
    """The boxes folder (XML) or LOC_val_solution.csv for the config value `boxes`: all the index needs
    (with XML boxes), so the index and the Baseline row can be built before the 6.3 GB of images exist."""
    registry = load_registry() if registry is None else registry
    _require(boxes, key, "boxes", "imagenet_bbox_val", registry)
    if is_box_csv(boxes):
        local = local_path(str(boxes))
        if not local.is_file():
            raise AcquisitionError(f"`{key}.boxes` = {boxes}: file not found")
        return local
    return _prepare_keyed(boxes, "imagenet_boxes", Path(work_dir) / "boxes", f"{key}.boxes", registry, **kw)


def prepare_imagenet_images(images: str | os.PathLike | None, key: str = "datasets.imagenet",
                            work_dir: str | os.PathLike = "data/imagenet", *,
                            registry: dict[str, ArchiveSpec] | None = None, **kw) -> Path:
    """The val images folder for the config value `images` (extracted under `work_dir`/images if an archive)."""
    registry = load_registry() if registry is None else registry
    _require(images, key, "images", "imagenet_val_images", registry)
    return _prepare_keyed(images, "imagenet_images", Path(work_dir) / "images", f"{key}.images", registry, **kw)


def prepare_imagenet(images: str | os.PathLike | None, boxes: str | os.PathLike | None,
                     key: str = "datasets.imagenet", work_dir: str | os.PathLike = "data/imagenet", *,
                     registry: dict[str, ArchiveSpec] | None = None, **kw) -> tuple[Path, Path]:
    """(images folder, boxes folder or LOC_val_solution.csv) for the config values `images`/`boxes`.

    Each may be an extracted folder, an archive (extracted under `work_dir`/images or /boxes, MD5-checked
    when its name is in the registry) or a URL. `kw` goes to `prepare_dataset` (retries, ..., max_bytes).
    """
    registry = load_registry() if registry is None else registry
    _require(images, key, "images", "imagenet_val_images", registry)
    _require(boxes, key, "boxes", "imagenet_bbox_val", registry)
    image_dir = prepare_imagenet_images(images, key, work_dir, registry=registry, **kw)
    return image_dir, prepare_imagenet_boxes(boxes, key, work_dir, registry=registry, **kw)


# --------------------------------------------------------------------------------------------------
# command line


def main(argv: list[str] | None = None) -> int:
    """`python -m lrp.datasets.acquire {list,fetch,extract,prepare} ...`; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m lrp.datasets.acquire", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="list the registry entries")
    p = sub.add_parser("fetch", help="download/copy a registry entry into DEST and verify it")
    p.add_argument("name")
    p.add_argument("dest", help="folder to put the file in")
    p.add_argument("--source", help="local path or URL (required for ImageNet entries)")
    p = sub.add_parser("extract", help="safely extract ARCHIVE into DEST")
    p.add_argument("archive")
    p.add_argument("dest")
    p.add_argument("--allow-links", action="store_true", help="accept tar links that stay inside DEST")
    p.add_argument("--max-bytes", type=int, help=f"extraction limit in bytes (default {MAX_EXTRACT_BYTES})")
    p = sub.add_parser("prepare", help="folder/archive/URL -> checked data folder")
    p.add_argument("source")
    p.add_argument("kind", choices=sorted(LAYOUT_CHECKS))
    p.add_argument("dest", help="folder to extract into")
    p.add_argument("--md5")
    p.add_argument("--max-bytes", type=int, help=f"extraction limit in bytes (default {MAX_EXTRACT_BYTES})")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    progress = not args.no_progress
    try:
        if args.cmd == "list":
            for spec in load_registry().values():
                where = spec.url or f"(no public URL: set {spec.config_key})"
                print(f"{spec.name:26s} {spec.filename:52s} {where}")
        elif args.cmd == "fetch":
            print(fetch(args.name, args.dest, source=args.source, progress=progress))
        elif args.cmd == "extract":
            print(safe_extract(args.archive, args.dest, progress=progress, max_bytes=args.max_bytes,
                               allow_links=args.allow_links))
        else:
            print(prepare_dataset(args.source, args.kind, args.dest, md5=args.md5, progress=progress,
                                  max_bytes=args.max_bytes))
    except AcquisitionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
