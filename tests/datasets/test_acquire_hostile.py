"""lrp.datasets.acquire, .download and .extract against hostile input (issue #17): link chains, bombs, hostile tar
headers and member names, web pages instead of archives, what a failed download leaves on disk, and which failures
are worth retrying. Every input is built here."""

from __future__ import annotations

import bz2
import gzip
import io
import os
import re
import tarfile
import zipfile
from contextlib import nullcontext
from pathlib import Path

import pytest

from lrp.datasets import acquire, download, extract
from lrp.datasets.acquire_errors import AcquisitionError, TransientAcquisitionError

from test_acquire import FAST, make_bbox_tgz, md5, member, registry_with, tar_with

HOPS = 13  # d/s0 .. d/s12: each climbs one folder more, while every link on its own looks inside
NO_LINKS = "archives of this data set contain no links"
JPEG = b"\xff\xd8\xff\xe0" + b"\0" * 60

pytestmark = pytest.mark.usefixtures("no_proxy")  # fixtures no_proxy and server: conftest.py


def chain_tar(path: Path, sentinel: Path, image: bool = True) -> Path:
    """The link chain of issue #17, stored so that no link's target exists yet when it is extracted:
    d/escape -> s12/<sentinel>, d/s12 -> s11/.., ..., d/s1 -> s0/.., d/s0 -> ., and an 'image' -> escape."""
    links = [("d/ILSVRC2012_val_00000001.JPEG", "escape")] if image else []
    links += [("d/escape", f"s{HOPS - 1}{sentinel}")]
    links += [(f"d/s{k}", f"s{k - 1}/..") for k in range(HOPS - 1, 0, -1)] + [("d/s0", ".")]
    return tar_with(path, (member("d/ILSVRC2012_val_00000002.JPEG"), JPEG),
                    *[(member(name, tarfile.SYMTYPE, target), None) for name, target in links])


@pytest.fixture
def sentinel(tmp_path):
    """A file outside every destination: it must stay as it is, and nothing may lead to it."""
    f = tmp_path / "outside" / "sentinel.txt"
    f.parent.mkdir()
    f.write_text("secret")
    return f


def links_below(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_symlink()]


def assert_nothing_extracted(tmp_path: Path, sentinel: Path, *dests: Path) -> None:
    for dest in dests:
        assert not dest.exists(), dest
    assert links_below(tmp_path) == []
    assert [p.name for p in tmp_path.rglob("*") if ".extracting-" in p.name] == []  # temp folders removed
    assert sentinel.read_text() == "secret" and list(sentinel.parent.iterdir()) == [sentinel]


# ---------------------------------------------------------------- 1. links


def test_link_chain_is_refused(tmp_path, sentinel):
    arc = chain_tar(tmp_path / "chain.tar", sentinel)
    dest = tmp_path / "sub" / "out"
    with pytest.raises(AcquisitionError) as e:
        extract.safe_extract(arc, dest, progress=False)
    msg = str(e.value)
    assert msg.startswith(f"{arc}: refusing symlink 'd/ILSVRC2012_val_00000001.JPEG' -> 'escape': {NO_LINKS}")
    assert "allow_links=True" in msg
    assert_nothing_extracted(tmp_path, sentinel, dest)


def test_link_chain_is_refused_even_with_allow_links(tmp_path, sentinel):
    """Opted-in links are judged by where they end after extraction, the archive's own links included."""
    dest = tmp_path / "out"
    for image, first in ((True, "'d/ILSVRC2012_val_00000001.JPEG' -> 'escape'"),
                         (False, f"'d/escape' -> 's{HOPS - 1}{sentinel}'")):
        arc = chain_tar(tmp_path / "chain.tar", sentinel, image=image)
        with pytest.raises(AcquisitionError, match=re.escape(
                f"{arc}: refusing symlink {first}: it resolves outside the folder (following the archive's own")):
            extract.safe_extract(arc, dest, progress=False, allow_links=True)
        assert_nothing_extracted(tmp_path, sentinel, dest)


def test_link_chain_via_prepare_imagenet_and_prepare_dataset(tmp_path, sentinel):
    arc = chain_tar(tmp_path / "my_val_images.tar", sentinel)
    boxes = make_bbox_tgz(tmp_path / "my_boxes.tgz")
    with pytest.raises(AcquisitionError, match=r"`datasets\.imagenet\.images` = .*my_val_images\.tar: refusing "
                                               rf"symlink 'd/ILSVRC2012_val_00000001\.JPEG' -> 'escape': {NO_LINKS}"):
        acquire.prepare_imagenet(arc, boxes, work_dir=tmp_path / "raw", progress=False)
    with pytest.raises(AcquisitionError, match=rf"my_val_images\.tar: refusing symlink .*{NO_LINKS}"):
        acquire.prepare_dataset(arc, "imagenet_images", tmp_path / "images", progress=False)
    assert_nothing_extracted(tmp_path, sentinel, tmp_path / "raw" / "images", tmp_path / "images")


HOSTILE_LINKS = {  # allow_links=True: name -> (members, expected message)
    "dangling": ([(member("val/x.xml", tarfile.SYMTYPE, "missing.xml"), None)],
                 r"refusing symlink 'val/x\.xml' -> 'missing\.xml': it resolves to 'val/missing\.xml', which the "
                 "archive does not contain"),
    "loop": ([(member("val/a", tarfile.SYMTYPE, "b"), None), (member("val/b", tarfile.SYMTYPE, "a"), None)],
             r"refusing symlink 'val/a' -> 'b': more than 40 links to follow \(a loop\?\)"),
    "file_below_later_link": ([(member("val/l", tarfile.SYMTYPE, "."), None), (member("val/l/x.xml"), b"<a/>")],
                              r"refusing member 'val/l/x\.xml': path goes through a symlink"),
    "link_replaces_file": ([(member("val/y.xml"), b"<a/>"), (member("val/y.xml", tarfile.SYMTYPE, "z"), None)],
                           r"refusing member 'val/y\.xml': another member of that name exists"),
    "file_onto_link": ([(member("val/y.xml", tarfile.SYMTYPE, "../val"), None), (member("val/y.xml"), b"<a/>")],
                       r"refusing member 'val/y\.xml': another member of that name exists"),
    "backslash_name": ([(member("etc/x.xml"), b"<a/>"), (member("val\\up", tarfile.SYMTYPE, "../etc"), None)],
                       r"refusing symlink 'val\\\\up' -> '\.\./etc': it resolves outside the folder"),  # not val/up
    "absolute_in_chain": ([(member("val/e", tarfile.SYMTYPE, "f/passwd"), None),
                           (member("val/f", tarfile.SYMTYPE, "/etc"), None)],
                          r"refusing symlink 'val/e' -> 'f/passwd': it resolves outside the folder"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_LINKS))
def test_allowed_links_must_end_at_a_member_inside(tmp_path, sentinel, case):
    members, expected = HOSTILE_LINKS[case]
    arc = tar_with(tmp_path / f"{case}.tar", (member("val/a.xml"), b"<a/>"), *members)
    with pytest.raises(AcquisitionError, match=rf"{case}\.tar: {expected}"):
        extract.safe_extract(arc, tmp_path / "out", progress=False, allow_links=True)
    assert_nothing_extracted(tmp_path, sentinel, tmp_path / "out")


def test_allowed_links_inside_the_archive_still_work(tmp_path):
    arc = tar_with(tmp_path / "ok.tar", (member("val/a.xml"), b"<a/>"),
                   (member("val/up", tarfile.SYMTYPE, "../val/sub/.."), None),  # ends at val/
                   (member("val/sub/b.xml", tarfile.LNKTYPE, "val/a.xml"), None))
    out = extract.safe_extract(arc, tmp_path / "out", progress=False, allow_links=True)
    assert (out / "val" / "up" / "a.xml").read_bytes() == (out / "val" / "sub" / "b.xml").read_bytes() == b"<a/>"


def test_zip_links_and_names_are_refused(tmp_path, sentinel):
    with zipfile.ZipFile(tmp_path / "link.zip", "w") as zf:
        zf.writestr("val/a.xml", "<a/>")
        info = zipfile.ZipInfo("val/etc")
        info.external_attr = 0o120777 << 16  # a symlink; its target is the content
        zf.writestr(info, str(sentinel))
    with pytest.raises(AcquisitionError, match=re.escape(
            f"link.zip: refusing symlink 'val/etc' -> '{sentinel}': {NO_LINKS}")):
        extract.safe_extract(tmp_path / "link.zip", tmp_path / "out", progress=False)
    for name, why in (("/tmp/lrp-acquire-evil", "absolute path"), ("val/../../evil", "'..' would escape")):
        with zipfile.ZipFile(tmp_path / "names.zip", "w") as zf:
            zf.writestr(name, "x")
        with pytest.raises(AcquisitionError, match=rf"names\.zip: refusing member '{re.escape(name)}': {why}"):
            extract.safe_extract(tmp_path / "names.zip", tmp_path / "out", progress=False)
    assert not Path("/tmp/lrp-acquire-evil").exists() and not (tmp_path.parent / "evil").exists()
    assert_nothing_extracted(tmp_path, sentinel, tmp_path / "out")


def test_existing_symlink_in_dest_is_never_written_through(tmp_path, sentinel):
    """A second archive into the same tree must not follow a link already there (dest/val -> elsewhere)."""
    dest = tmp_path / "boxes"
    dest.mkdir()
    (dest / "val").symlink_to(sentinel.parent, target_is_directory=True)
    tgz = make_bbox_tgz(tmp_path / "b.tgz")
    with pytest.raises(AcquisitionError, match=re.escape(
            f"b.tgz: refusing to extract onto {dest / 'val'}: a symlink (to '{sentinel.parent}') is in the way")):
        extract.safe_extract(tgz, dest, progress=False)
    assert list(sentinel.parent.iterdir()) == [sentinel] and sentinel.read_text() == "secret"
    assert sorted(p.name for p in dest.iterdir()) == ["val"]  # no marker: not extracted
    (dest / "val").unlink()
    extract.safe_extract(tgz, dest, progress=False)
    assert (dest / "val" / "ILSVRC2012_val_00000001.xml").is_file()


# ---------------------------------------------------------------- 8. bombs


def zeros_zip(path: Path, *sizes: int) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for i, n in enumerate(sizes):
            zf.writestr(f"val/{i}.xml", b"\0" * n)
    return path


def zeros_tgz(path: Path, *sizes: int) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for i, n in enumerate(sizes):
            info = member(f"val/{i}.xml")
            info.size = n
            tf.addfile(info, io.BytesIO(b"\0" * n))
    return path


@pytest.mark.parametrize("make", [zeros_zip, zeros_tgz], ids=["zip", "tgz"])
def test_bomb_is_refused_by_bytes(tmp_path, make):
    arc = make(tmp_path / f"bomb.{make.__name__[6:]}", 400_000, 700_000)
    assert arc.stat().st_size < 20_000  # a real bomb: tiny archive, large contents
    dest = tmp_path / "out"
    with pytest.raises(AcquisitionError) as e:
        extract.safe_extract(arc, dest, progress=False, max_bytes=1_000_000)
    assert str(e.value).startswith(f"{arc}: refusing to extract: it unpacks to more than 1,000,000 bytes, beyond "
                                   "the limit max_bytes=1,000,000; nothing was extracted.")
    assert "lrp.datasets.extract.MAX_EXTRACT_BYTES" in str(e.value)
    assert not dest.exists() and list(tmp_path.iterdir()) == [arc]
    out = extract.safe_extract(arc, dest, progress=False, max_bytes=1_100_000)  # at the limit: fine
    assert (out / "val" / "1.xml").stat().st_size == 700_000


@pytest.mark.parametrize("make", [zeros_zip, zeros_tgz], ids=["zip", "tgz"])
def test_bomb_is_refused_by_member_count(tmp_path, make):
    arc = make(tmp_path / f"many.{make.__name__[6:]}", *[1] * 6)
    with pytest.raises(AcquisitionError, match=re.escape(
            f"{arc}: refusing to extract: it has more than 5 members, beyond the limit max_members=5")):
        extract.safe_extract(arc, tmp_path / "out", progress=False, max_members=5)
    assert not (tmp_path / "out").exists()


def test_zip_whose_header_understates_its_size_is_refused(tmp_path):
    """zip headers can lie: one that declares 100 bytes for 600,000 must not unpack 600,000."""
    arc = zeros_zip(tmp_path / "liar.zip", 600_000)
    raw = bytearray(arc.read_bytes())
    with zipfile.ZipFile(arc) as zf:
        info = zf.infolist()[0]
    central = raw.rindex(b"PK\x01\x02")
    assert int.from_bytes(raw[central + 24:central + 28], "little") == info.file_size == 600_000
    raw[central + 24:central + 28] = (100).to_bytes(4, "little")  # uncompressed size, central directory
    raw[26 - 4:26] = (100).to_bytes(4, "little")  # and the local header's
    arc.write_bytes(bytes(raw))
    with pytest.raises(AcquisitionError, match=r"liar\.zip: truncated or corrupt archive \(BadZipFile: Bad CRC"):
        extract.safe_extract(arc, tmp_path / "out", progress=False, max_bytes=1000)
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == [arc]


def test_byte_budget_counts_what_is_written(tmp_path):
    budget = extract._ByteBudget(tmp_path / "x.zip", 10)
    budget.take(6)
    budget.take(4)
    with pytest.raises(AcquisitionError, match=r"x\.zip: refusing to extract: it unpacks to more than 10 bytes"):
        budget.take(1)


def test_limits_reach_the_prepare_functions_and_module_defaults(tmp_path, monkeypatch):
    tgz = make_bbox_tgz(tmp_path / "ILSVRC2012_bbox_val_v3.tgz")
    with pytest.raises(AcquisitionError, match=r"bbox_val_v3\.tgz: refusing to extract: .* max_bytes=100;"):
        acquire.prepare_dataset(tgz, "imagenet_boxes", tmp_path / "boxes", progress=False, max_bytes=100)
    images = tmp_path / "images"
    images.mkdir()
    (images / "ILSVRC2012_val_00000001.JPEG").write_bytes(JPEG)
    reg = registry_with(imagenet_bbox_val=(None, md5(tgz)))
    with pytest.raises(AcquisitionError, match=r"`datasets\.imagenet\.boxes` = .*max_members=1;"):
        acquire.prepare_imagenet(images, tgz, work_dir=tmp_path / "raw", registry=reg, progress=False,
                                 max_members=1)
    monkeypatch.setattr(extract, "MAX_EXTRACT_BYTES", 100)  # the documented module default, lowered
    with pytest.raises(AcquisitionError, match=r"max_bytes=100;"):
        extract.safe_extract(tgz, tmp_path / "boxes", progress=False)
    assert not (tmp_path / "boxes").exists() and not (tmp_path / "raw" / "boxes").exists()
    with pytest.raises(AcquisitionError, match=r"max_bytes must be a non-negative whole number, got -1"):
        extract.safe_extract(tgz, tmp_path / "boxes", progress=False, max_bytes=-1)


def test_prepare_voc_passes_the_limits(tmp_path):
    root = tmp_path / "voc"
    root.mkdir()
    tv = tar_with(root / "VOCtrainval_06-Nov-2007.tar", (member("VOCdevkit/VOC2007/Annotations/1.xml"), b"<a/>" * 9))
    te = tar_with(root / "VOCtest_06-Nov-2007.tar", (member("VOCdevkit/VOC2007/Annotations/2.xml"), b"<a/>"))
    reg = registry_with(voc2007_trainval=(None, md5(tv)), voc2007_test=(None, md5(te)))
    with pytest.raises(AcquisitionError, match=r"`datasets\.voc2007\.root` = .*VOCtrainval_06-Nov-2007\.tar: "
                                               r"refusing to extract: it unpacks to more than 20 bytes"):
        acquire.prepare_voc(root, registry=reg, progress=False, max_bytes=20)
    assert not (root / "VOCdevkit").exists()


# ---------------------------------------------------------------- 9. downloads that are not the file


LOGIN_PAGE = b"\n<!DOCTYPE html>\n<html><body><form action='/login'>Please log in</form></body></html>\n"


def assert_nothing_kept(dest: Path) -> None:
    assert not dest.exists() and not dest.with_name(dest.name + ".part").exists()
    assert [p.name for p in dest.parent.iterdir() if p.name.startswith(dest.name)] == []


def test_web_page_without_md5_is_refused(server, tmp_path):
    page = server.root / "ILSVRC2012_img_val.tar"
    page.write_bytes(LOGIN_PAGE)
    server.headers["/ILSVRC2012_img_val.tar"] = {"Content-Type": "text/html; charset=utf-8"}
    dest = tmp_path / "dl" / page.name
    with pytest.raises(AcquisitionError) as e:
        download.download(server.put(page), dest, **FAST)
    assert type(e.value) is AcquisitionError  # retrying cannot help
    assert str(e.value).startswith(f"{dest}: the server returned a web page (Content-Type: text/html), not the "
                                   "file: probably a login or error page. Nothing was kept.")
    assert_nothing_kept(dest)
    # no Content-Type, but the body is HTML; a URL in the config (a name without a registry MD5)
    mine = server.root / "my_val_images.tar"
    mine.write_bytes(LOGIN_PAGE)
    with pytest.raises(AcquisitionError, match=r"`datasets\.imagenet\.images` = .*the server returned a web page "
                                               r"\(it starts with '<!DOCTYPE html'\)"):
        acquire.prepare_imagenet(server.put(mine), server.put(mine), work_dir=tmp_path / "raw", **FAST)
    assert_nothing_kept(tmp_path / "raw" / mine.name)
    assert not (tmp_path / "raw" / "images").exists()
    # a page that an earlier, unchecked download left under the final name is not taken for the file
    dest.parent.mkdir(exist_ok=True)
    dest.write_bytes(LOGIN_PAGE)
    with pytest.raises(AcquisitionError, match=rf"{re.escape(str(dest))}: exists but is a web page \(it starts "
                                               r"with '<!DOCTYPE html'\).*delete it and re-run"):
        download.download(server.put(page), dest, **FAST)
    assert dest.read_bytes() == LOGIN_PAGE  # the user's file: reported, not deleted


def test_web_page_with_md5_says_what_it_is(server, tmp_path):
    page = server.root / "w.h5"
    page.write_bytes(LOGIN_PAGE)
    with pytest.raises(AcquisitionError, match=r"w\.h5: MD5 mismatch .* It is a web page \(it starts with "
                                               r"'<!DOCTYPE html'\), probably a login or error page\."):
        download.download(server.put(page), tmp_path / "w.h5", md5="0" * 32, **FAST)
    assert_nothing_kept(tmp_path / "w.h5")


def test_unreadable_archive_without_md5_is_refused(server, tmp_path):
    tar = tar_with(tmp_path / "good.tar", (member("val/a.xml"), b"<a/>" * 300))
    served = {"noise.tgz": os.urandom(3000), "cut.tar": tar.read_bytes()[:1024], "empty.zip": b""}
    for name, data in served.items():
        (server.root / name).write_bytes(data)
        fmt = "zip" if name.endswith(".zip") else "tar"
        with pytest.raises(AcquisitionError, match=rf"{re.escape(str(tmp_path / name))}: the file from .* is not "
                                                   rf"a readable {fmt} archive \(.*\); nothing was kept"):
            download.download(server.put(server.root / name), tmp_path / name, **FAST)
        assert_nothing_kept(tmp_path / name)
    # what is right passes unverified by MD5 (with a warning), and so does a non-archive name
    (server.root / "good.tar").write_bytes(tar.read_bytes())
    assert download.download(server.put(server.root / "good.tar"), tmp_path / "good2.tar", **FAST).is_file()
    (server.root / "weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n")
    assert download.download(server.put(server.root / "weights.h5"), tmp_path / "weights.h5", **FAST).is_file()


def test_repeated_5xx_says_nothing_was_kept(server, tmp_path):
    tgz = make_bbox_tgz(server.root / "boxes.tgz")
    server.fail_always["/boxes.tgz"] = 500
    dest = tmp_path / "boxes.tgz"
    with pytest.raises(TransientAcquisitionError) as e:
        download.download(server.put(tgz), dest, **FAST)
    msg = str(e.value)
    assert "failed after 4 attempts" in msg and "HTTP Error 500" in msg
    assert msg.endswith("Nothing was kept (no partial file): re-run to try again.") and "is kept" not in msg
    assert_nothing_kept(dest)
    # a server that sends headers but no body leaves an empty .part: removed, and said so
    server.fail_always.clear()
    server.drop_always["/boxes.tgz"] = 0
    with pytest.raises(TransientAcquisitionError, match=r"connection closed after 0 of \d+ bytes\. Nothing was kept"):
        download.download(server.put(tgz), dest, **FAST)
    assert_nothing_kept(dest)


def test_failure_classes_survive_the_config_key_prefix(server, tmp_path):
    tgz = make_bbox_tgz(server.root / "ILSVRC2012_bbox_val_v3.tgz")
    images = tmp_path / "images"
    images.mkdir()
    (images / "ILSVRC2012_val_00000001.JPEG").write_bytes(JPEG)
    server.fail_always["/ILSVRC2012_bbox_val_v3.tgz"] = 503
    with pytest.raises(TransientAcquisitionError, match=r"`datasets\.imagenet\.boxes` = .*failed after 4 attempts"):
        acquire.prepare_imagenet(images, server.put(tgz), work_dir=tmp_path / "raw", **FAST)
    spec = {"name": "w", "filename": "w.tgz", "url": f"{server.url}/a/w.tgz", "mirrors": [f"{server.url}/b/w.tgz"]}
    server.fail_always.update({"/a/w.tgz": 502, "/b/w.tgz": 429})
    with pytest.raises(TransientAcquisitionError, match=r"w: every source failed"):
        acquire.fetch(spec, tmp_path / "dl", **FAST)
    server.not_found.add("/b/w.tgz")
    server.fail_always.pop("/b/w.tgz")
    with pytest.raises(AcquisitionError, match=r"w: every source failed") as e:  # a 404 is not worth retrying
        acquire.fetch(spec, tmp_path / "dl", **FAST)
    assert type(e.value) is AcquisitionError


@pytest.mark.skipif(not os.access("/dev/full", os.W_OK), reason="needs /dev/full to make a disk-full error")
def test_disk_full_while_downloading_is_not_transient(server, tmp_path):
    tgz = make_bbox_tgz(server.root / "boxes.tgz")
    dest = tmp_path / "boxes.tgz"
    dest.with_name("boxes.tgz.part").symlink_to("/dev/full")  # every write fails with ENOSPC
    with pytest.raises(AcquisitionError) as e:
        download.download(server.put(tgz), dest, **FAST)
    assert type(e.value) is AcquisitionError
    assert re.match(rf"{re.escape(str(dest))}\.part: writing the download failed \(\[Errno 28\] No space left on "
                    r"device\)\. Nothing was kept .* Free disk space", str(e.value))
    assert len(server.requests) == 1 and not dest.exists()  # not retried


# ---------------------------------------------------------------- 10. hostile tar headers and member names


def header_bomb(path: Path, kind: bytes, size: int) -> Path:
    """A .tar.bz2 whose first header (GNU long name/link, pax extended/global) declares `size` bytes of header
    data: tarfile would read all of it into memory before any member is seen."""
    info = tarfile.TarInfo("././@LongLink" if kind in (b"L", b"K") else "././@PaxHeader")
    info.type, info.size = kind, size
    path.write_bytes(bz2.compress(info.tobuf(tarfile.GNU_FORMAT) + b"\0" * (1 << 16)))
    return path


@pytest.mark.parametrize("kind, what", [(b"L", "GNU long-name"), (b"K", "GNU long-link"), (b"x", "pax extended"),
                                        (b"g", "pax global")])
def test_tar_header_declaring_a_huge_payload_is_refused_before_reading_it(tmp_path, kind, what):
    arc = header_bomb(tmp_path / "headers.tar.bz2", kind, 1_600_000_000)
    assert arc.stat().st_size < 1000
    name = "././@LongLink" if kind in (b"L", b"K") else "././@PaxHeader"
    with pytest.raises(AcquisitionError, match=re.escape(
            f"{arc}: refusing member '{name}' (a {what} header at byte 0): it declares 1,600,000,000 bytes of "
            f"header data, beyond the limit of {extract.MAX_TAR_HEADER_BYTES:,}")):
        extract.safe_extract(arc, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    # without an archive name, by content: still recognised as a (hostile) tar, and refused the same way
    plain = arc.rename(tmp_path / "headers")
    with pytest.raises(AcquisitionError, match=r"headers: refusing member .* bytes of header data"):
        extract.safe_extract(plain, tmp_path / "out", progress=False)


def test_tar_long_names_within_the_limits_still_extract(tmp_path):
    name = "val/" + "d" * 200 + "/" + "n" * 250 + ".xml"  # GNU long-name and pax headers of a few hundred bytes
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        arc = tmp_path / f"long{fmt}.tar"
        with tarfile.open(arc, "w", format=fmt) as tf:
            info = member(name)
            info.size = 4
            tf.addfile(info, io.BytesIO(b"<a/>"))
        out = extract.safe_extract(arc, tmp_path / f"out{fmt}", progress=False)
        assert (out / name).read_bytes() == b"<a/>"


def hostile_names() -> dict[str, tuple[str, str]]:
    deep = "/".join(["d"] * 300) + "/x.xml"
    return {  # case -> (member name, expected message after "refusing member ")
        "long": ("val/" + "n" * 5000, re.escape(f"'val/{'n' * 56}...': name of 5,004 bytes, longer than the limit "
                                                "of 4,096 bytes (MAX_MEMBER_NAME_BYTES)")),
        "deep": (deep, re.escape(f"'{deep[:60]}...': 301 path components, deeper than the limit of 256 "
                                 "(MAX_MEMBER_DEPTH)")),
        "marker": (".extracted-VOCtest_06-Nov-2007.tar", r"'\.extracted-VOCtest_06-Nov-2007\.tar': names like "
                                                        r"\.extracted-\* are the extraction's own markers"),
        "marker_below": ("val/.extracted-x.tgz", r"'val/\.extracted-x\.tgz': names like \.extracted-\*"),
    }


@pytest.mark.parametrize("fmt", ["tar", "zip"])
@pytest.mark.parametrize("case", sorted(hostile_names()))
def test_long_deep_and_marker_names_are_refused(tmp_path, fmt, case):
    name, expected = hostile_names()[case]
    arc = tmp_path / f"names.{fmt}"
    if fmt == "tar":
        tar_with(arc, (member("val/a.xml"), b"<a/>"), (member(name), b"<b/>"))
    else:
        with zipfile.ZipFile(arc, "w") as zf:
            zf.writestr("val/a.xml", "<a/>")
            zf.writestr(name, "<b/>")
    dest = tmp_path / "out"
    with pytest.raises(AcquisitionError, match=rf"names\.{fmt}: refusing member {expected}"):
        extract.safe_extract(arc, dest, progress=False, allow_links=fmt == "tar")
    assert not dest.exists()


def test_planted_marker_does_not_skip_another_archive(tmp_path):
    """The marker an archive would plant is exactly the one that makes a later archive count as extracted."""
    root = tmp_path / "voc"
    evil = tar_with(tmp_path / "evil.tar", (member(".extracted-VOCtest_06-Nov-2007.tar"), b"{}"))
    with pytest.raises(AcquisitionError, match=r"evil\.tar: refusing member '\.extracted-VOCtest"):
        extract.safe_extract(evil, root, progress=False)
    assert not extract.marker_path(root, "VOCtest_06-Nov-2007.tar").exists()


def tail_tgz(path: Path, tail: int) -> Path:
    """A .tgz of one small member whose tar stream goes on with `tail` zero bytes after its end-of-archive marker."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        info = member("val/a.xml")
        info.size = 4
        tf.addfile(info, io.BytesIO(b"<a/>"))
    path.write_bytes(gzip.compress(raw.getvalue() + b"\0" * tail, compresslevel=9))
    return path


def test_data_after_the_tar_end_counts_against_the_byte_limit(tmp_path):
    arc = tail_tgz(tmp_path / "tail.tgz", 3 << 20)
    assert arc.stat().st_size < 10_000
    with pytest.raises(AcquisitionError, match=re.escape(
            f"{arc}: refusing to extract: ") + r"[\d,]+\+ bytes of data follow the end-of-archive marker \(after the "
            r"last member 'val/a\.xml'\): with the members it unpacks to more than 2,000,000 bytes, beyond the "
            r"limit max_bytes=2,000,000; nothing was extracted"):
        extract.safe_extract(arc, tmp_path / "out", progress=False, max_bytes=2_000_000)
    assert not (tmp_path / "out").exists()
    # normal padding (up to a 1 MiB record) is not data, and the default limit lets the tail through
    assert (extract.safe_extract(tail_tgz(tmp_path / "pad.tgz", 1 << 19), tmp_path / "pad", progress=False,
                                 max_bytes=4) / "val" / "a.xml").is_file()
    assert (extract.safe_extract(arc, tmp_path / "out", progress=False) / "val" / "a.xml").is_file()


def test_zip_empty_and_duplicate_names_are_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "empty.zip", "w") as zf:
        zf.writestr("val/a.xml", "<a/>")
        zf.writestr(zipfile.ZipInfo(""), "x")
    with pytest.raises(AcquisitionError, match=r"empty\.zip: refusing member '': empty name"):
        extract.safe_extract(tmp_path / "empty.zip", tmp_path / "out", progress=False)
    for second in ("val/a.xml", "val\\a.xml", "./val//a.xml"):
        with pytest.warns(UserWarning, match="Duplicate name") if second == "val/a.xml" else nullcontext():
            with zipfile.ZipFile(tmp_path / "dup.zip", "w") as zf:
                zf.writestr("val/a.xml", "<a/>")
                zf.writestr(second, "<evil/>")
        with pytest.raises(AcquisitionError, match=re.escape(
                f"dup.zip: refusing member {second!r}: duplicate name (another member, 'val/a.xml', is extracted "
                "to the same path)")):
            extract.safe_extract(tmp_path / "dup.zip", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


WEB_PAGES = {
    "xml_prologue": b'<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0//EN">',
    "comment": b"<!-- served by nginx -->\n<html><body>Not found</body></html>",
    "bom": b"\xef\xbb\xbf<!DOCTYPE html><html/>",
    "whitespace": b"\r\n\t   \n<HTML><body>log in</body></HTML>",
    "utf16": "\ufeff<!DOCTYPE html><html/>".encode("utf-16-le"),
}


@pytest.mark.parametrize("case", sorted(WEB_PAGES))
def test_web_pages_with_a_prologue_are_refused(tmp_path, case):
    page = tmp_path / "src" / "page.tar"
    page.parent.mkdir()
    page.write_bytes(WEB_PAGES[case])
    dest = tmp_path / "dl" / "ILSVRC2012_img_val.tar"
    prologue = " after an XML declaration or comment" if case in ("xml_prologue", "comment") else ""
    with pytest.raises(AcquisitionError, match=re.escape(f"{dest}: the source is a web page (it starts with '<")
                       + r"(!DOCTYPE html|html|HTML)[^']*'" + re.escape(f"{prologue}), not the file")):
        download.download(page, dest, progress=False)
    assert_nothing_kept(dest)
