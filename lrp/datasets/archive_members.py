"""Judge the members of an untrusted archive, before anything is written: names, types, links.

Why a module of its own: this is the policy of what an archive may create, apart from how it is read and
written (`lrp.datasets.extract`). Refused, each with an `AcquisitionError` naming the archive and the member:
absolute paths, `..`, empty names, names longer than `MAX_MEMBER_NAME_BYTES` or deeper than
`MAX_MEMBER_DEPTH` (the link check's memory grows with the square of the depth), names of our own extraction
markers (`.extracted-*`: an archive could otherwise plant another archive's "done"), duplicate zip names,
device files, FIFOs, and links: the real archives have none, and with `allow_links` (tar only) every link
must end, following the archive's own links, at a member inside.
"""

from __future__ import annotations

import re
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from lrp.datasets.acquire_errors import AcquisitionError

MAX_LINK_HOPS = 40  # as Linux's own limit on symlinks followed in one path
MAX_MEMBER_NAME_BYTES = 4096  # Linux's PATH_MAX: no real member name (or link target) comes near it
MAX_MEMBER_DEPTH = 256  # path components; the real archives have at most 4
MARKER_PREFIX = ".extracted-"  # `<dest>/.extracted-<archive name>` says that archive was extracted completely


def _refuse(archive: Path, name: str, why: str) -> AcquisitionError:
    return AcquisitionError(f"{archive}: refusing member {name!r}: {why}")


def _check_length(archive: Path, name: str, what: str = "name") -> None:
    size = len(name.encode("utf-8", "surrogateescape"))
    if size > MAX_MEMBER_NAME_BYTES:
        shown = name[:60] + "..."
        raise _refuse(archive, shown, f"{what} of {size:,} bytes, longer than the limit of "
                                      f"{MAX_MEMBER_NAME_BYTES:,} bytes (MAX_MEMBER_NAME_BYTES)")


def safe_member_path(name: str, archive: Path) -> PurePosixPath:
    """Normalised relative path of a member (a backslash read as a separator, as on Windows).

    Raises `AcquisitionError` for an empty, over-long or too deep name, an absolute path, `..`, and a
    component named like our extraction markers.
    """
    if not name:
        raise _refuse(archive, name, "empty name")
    _check_length(archive, name)
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise _refuse(archive, name, "absolute path")
    parts = [p for p in PurePosixPath(name.replace("\\", "/")).parts if p != "."]
    if ".." in parts:
        raise _refuse(archive, name, "'..' would escape the folder")
    if len(parts) > MAX_MEMBER_DEPTH:
        raise _refuse(archive, name[:60] + "...", f"{len(parts):,} path components, deeper than the limit of "
                                                  f"{MAX_MEMBER_DEPTH} (MAX_MEMBER_DEPTH)")
    if any(p.startswith(MARKER_PREFIX) for p in parts):
        raise _refuse(archive, name, f"names like {MARKER_PREFIX}* are the extraction's own markers (they say "
                                     "an archive was extracted completely), and an archive must not plant one")
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


def tar_path(name: str, archive: Path) -> PurePosixPath:
    """A tar member's path as the file system will see it (a backslash is a plain character there), after
    the checks of `safe_member_path`."""
    safe_member_path(name, archive)
    return PurePosixPath(name)  # drops '.' parts and repeated or trailing slashes, as the file system does


def no_links(archive: Path, kind: str, name: str, target: str) -> AcquisitionError:
    """The error for a link in an archive extracted without `allow_links`."""
    return AcquisitionError(
        f"{archive}: refusing {kind} {name!r} -> {target!r}: archives of this data set contain no links, so "
        "this is not the official archive (or a hostile one); nothing was extracted. Use the official "
        "archive; for a tar you trust, safe_extract(..., allow_links=True) accepts links that stay inside."
    )


class _MemberTree:
    """The tree a tar archive will create, to judge its links before anything is written.

    Why: a link that looks inside on paper can resolve outside through other links of the same archive,
    in whatever order they are stored (`d/s0 -> .`, `d/s1 -> s0/..`, ... climbs one level per hop), and
    the file system resolves links only after extraction. So every link is resolved here, virtually,
    against the complete tree, and must end at a file or folder of the archive.
    """

    def __init__(self, archive: Path):
        self.archive = archive
        self.nodes: dict[PurePosixPath, str] = {PurePosixPath("."): "dir"}  # 'file' or 'dir' (parents too)
        self.links: dict[PurePosixPath, tuple[str, str]] = {}  # symlink path -> (member name, target)

    def refuse(self, name: str, why: str) -> AcquisitionError:
        return AcquisitionError(f"{self.archive}: refusing member {name!r}: {why}")

    def add(self, m: tarfile.TarInfo, path: PurePosixPath) -> None:
        """Record member `m` at `path`; raises `AcquisitionError` for a name clash with a symlink."""
        if path in self.links or (m.issym() and path in self.nodes):
            raise self.refuse(m.name, "another member of that name exists, and a symlink must not replace "
                                      "(or be written through by) another member")
        for parent in path.parents:
            self.nodes.setdefault(parent, "dir")
        if m.issym():
            self.links[path] = (m.name, m.linkname)
            return
        if m.islnk():
            target = tar_path(m.linkname, self.archive)
            if self.nodes.get(target) != "file":
                raise AcquisitionError(f"{self.archive}: refusing hard link {m.name!r} -> {m.linkname!r}: "
                                       "target is not a file earlier in the archive")
        self.nodes[path] = "dir" if m.isdir() else "file"

    def check(self) -> None:
        """After all members: nothing goes through a symlink; every symlink ends at a member, inside."""
        if not self.links:
            return
        for path in [*self.nodes, *self.links]:
            if any(parent in self.links for parent in path.parents):
                name = self.links[path][0] if path in self.links else str(path)
                raise self.refuse(name, "path goes through a symlink")
        for path, (name, target) in self.links.items():
            end = self.resolve(path, name, target)
            if end is None:
                raise AcquisitionError(f"{self.archive}: refusing symlink {name!r} -> {target!r}: it resolves "
                                       "outside the folder (following the archive's own links)")
            if end not in self.nodes:
                raise AcquisitionError(f"{self.archive}: refusing symlink {name!r} -> {target!r}: it resolves "
                                       f"to {str(end)!r}, which the archive does not contain")

    def resolve(self, path: PurePosixPath, name: str, target: str) -> PurePosixPath | None:
        """Where symlink `path` -> `target` ends after extraction (relative to the root); None if outside."""
        if target.startswith("/"):
            return None
        todo = list(reversed(target.split("/")))
        here = list(path.parent.parts)
        hops = 0
        while todo:
            part = todo.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if not here:
                    return None
                here.pop()
                continue
            here.append(part)
            link = self.links.get(PurePosixPath(*here))
            if link is not None:
                hops += 1
                if hops > MAX_LINK_HOPS:
                    raise AcquisitionError(f"{self.archive}: refusing symlink {name!r} -> {target!r}: more "
                                           f"than {MAX_LINK_HOPS} links to follow (a loop?)")
                here.pop()
                if link[1].startswith("/"):
                    return None
                todo.extend(reversed(link[1].split("/")))
        return PurePosixPath(*here) if here else PurePosixPath(".")


def check_tar_members(members: list[tarfile.TarInfo], archive: Path, allow_links: bool = False) -> None:
    """Refuse anything that could write outside the destination or is not plain data; links unless
    `allow_links`, and then any link not ending at a member of the archive."""
    tree = _MemberTree(archive) if allow_links else None  # without links it has nothing to judge
    for m in members:
        path = tar_path(m.name, archive)
        if m.isdev():
            raise _refuse(archive, m.name, "device file or FIFO")
        if not (m.isreg() or m.isdir() or m.issym() or m.islnk()):
            raise _refuse(archive, m.name, f"unsupported type {m.type!r}")
        if m.issym() or m.islnk():
            if tree is None:
                raise no_links(archive, "symlink" if m.issym() else "hard link", m.name, m.linkname)
            _check_length(archive, m.linkname, f"link target of {m.name!r},")
        if tree is not None:
            tree.add(m, path)
    if tree is not None:
        tree.check()


def check_zip_members(zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo], archive: Path) -> list[PurePosixPath]:
    """Normalised paths of the zip members; refuse unsafe and duplicate names (zipfile would let the last
    one silently win), symlinks (zip links live in external_attr, with the target as content) and special
    files."""
    paths, seen = [], {}
    for info in infos:
        path = safe_member_path(info.filename, archive)
        if path in seen:
            raise _refuse(archive, info.filename, f"duplicate name (another member, {seen[path]!r}, is "
                                                  "extracted to the same path)")
        seen[path] = info.filename
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            with zf.open(info) as f:
                target = f.read(4096).decode("utf-8", "replace")
            raise no_links(archive, "symlink", info.filename, target)
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
            raise _refuse(archive, info.filename, "device file, FIFO or socket")
        paths.append(path)
    return paths
