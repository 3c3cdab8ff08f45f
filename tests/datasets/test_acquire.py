"""lrp.datasets.acquire, .download and .extract against a real HTTP server on 127.0.0.1 and archives laid out like
the real ones."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

from lrp.datasets import acquire, download, extract
from lrp.datasets.acquire_errors import AcquisitionError, TransientAcquisitionError

DATA = Path(__file__).parents[1] / "data" / "acquire"
VOC_FILES = sorted(p.relative_to(DATA / "voc2007_trainval")
                   for p in (DATA / "voc2007_trainval").rglob("*") if p.is_file())
BOX_FILES = sorted(p.relative_to(DATA / "imagenet_bbox_val")
                   for p in (DATA / "imagenet_bbox_val").rglob("*") if p.is_file())


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- fixtures


# The HTTP server on 127.0.0.1 (fixture `server`) and the proxy guard (fixture `no_proxy`) live in conftest.py,
# shared with test_acquire_hostile.py.
pytestmark = pytest.mark.usefixtures("no_proxy")


FAST = dict(retries=3, backoff=0.01, timeout=5, progress=False)


def make_voc_tar(path: Path) -> Path:
    """VOCtrainval_06-Nov-2007.tar as the real one: VOCdevkit/VOC2007/{Annotations,JPEGImages,ImageSets}."""
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tf:
        tf.add(DATA / "voc2007_trainval" / "VOCdevkit", arcname="VOCdevkit")
    return path


def make_bbox_tgz(path: Path) -> Path:
    """ILSVRC2012_bbox_val_v3.tgz as the real one: val/ILSVRC2012_val_000000NN.xml."""
    with tarfile.open(path, "w:gz") as tf:
        tf.add(DATA / "imagenet_bbox_val" / "val", arcname="val")
    return path


def tar_with(path: Path, *members: tuple[tarfile.TarInfo, bytes | None]) -> Path:
    with tarfile.open(path, "w") as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def member(name: str, type_=tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = type_, linkname, 0o644
    return info


# ---------------------------------------------------------------- download


def test_full_download_verify_extract(server, tmp_path):
    tar = make_voc_tar(server.root / "VOCtrainval_06-Nov-2007.tar")
    dest = tmp_path / "dl" / tar.name
    got = download.download(server.put(tar), dest, md5=md5(tar), **FAST)
    assert got == dest and dest.read_bytes() == tar.read_bytes()
    assert not dest.with_name(dest.name + ".part").exists()
    assert [r[1] for r in server.requests] == [None]  # one plain GET

    out = extract.safe_extract(dest, tmp_path / "voc", progress=False)
    for rel in VOC_FILES:
        assert (out / rel).read_bytes() == (DATA / "voc2007_trainval" / rel).read_bytes()
    assert (out / ".extracted-VOCtrainval_06-Nov-2007.tar").is_file()
    assert acquire.check_layout(out, "voc2007") == out
    assert [p.name for p in (tmp_path).iterdir() if p.name.startswith(".")] == []  # no temp dirs left

    # re-runs are no-ops: the file is not fetched again, the marker short-cuts extraction
    download.download(server.put(tar), dest, md5=md5(tar), **FAST)
    assert len(server.requests) == 1
    (out / "VOCdevkit" / "VOC2007" / "JPEGImages" / "2.jpg").unlink()
    extract.safe_extract(dest, out, progress=False)
    assert not (out / "VOCdevkit" / "VOC2007" / "JPEGImages" / "2.jpg").exists()


def test_resume_after_dropped_connection(server, tmp_path):
    tgz = make_bbox_tgz(server.root / "ILSVRC2012_bbox_val_v3.tgz")
    url, k = server.put(tgz), tgz.stat().st_size // 2
    server.drop_after[f"/{tgz.name}"] = k
    dest = tmp_path / tgz.name
    download.download(url, dest, md5=md5(tgz), **FAST)
    assert dest.read_bytes() == tgz.read_bytes()
    assert server.requests == [(f"/{tgz.name}", None, 200), (f"/{tgz.name}", f"bytes={k}-", 206)]


def test_part_file_is_resumed_across_runs(server, tmp_path):
    tgz = make_bbox_tgz(server.root / "boxes.tgz")
    dest = tmp_path / "boxes.tgz"
    dest.with_name("boxes.tgz.part").write_bytes(tgz.read_bytes()[:777])
    download.download(server.put(tgz), dest, md5=md5(tgz), **FAST)
    assert tgz.stat().st_size > 777 and dest.read_bytes() == tgz.read_bytes()
    assert [r[1:] for r in server.requests] == [("bytes=777-", 206)]


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    tgz = make_bbox_tgz(server.root / "boxes.tgz")
    server.ignore_range.add("/boxes.tgz")
    dest = tmp_path / "boxes.tgz"
    dest.with_name("boxes.tgz.part").write_bytes(b"X" * 500)  # wrong bytes: must not survive
    download.download(server.put(tgz), dest, md5=md5(tgz), **FAST)
    assert dest.read_bytes() == tgz.read_bytes()
    assert [r[1:] for r in server.requests] == [("bytes=500-", 200)]


def test_416_means_part_is_complete(server, tmp_path):
    tgz = make_bbox_tgz(server.root / "boxes.tgz")
    dest = tmp_path / "boxes.tgz"
    dest.with_name("boxes.tgz.part").write_bytes(tgz.read_bytes())
    download.download(server.put(tgz), dest, md5=md5(tgz), **FAST)
    assert dest.read_bytes() == tgz.read_bytes()
    assert [r[2] for r in server.requests] == [416]


def test_5xx_is_retried_then_gives_up_keeping_part(server, tmp_path):
    tgz = make_bbox_tgz(server.root / "boxes.tgz")
    server.fail_once["/boxes.tgz"] = 503
    dest = tmp_path / "boxes.tgz"
    download.download(server.put(tgz), dest, md5=md5(tgz), **FAST)
    assert [r[2] for r in server.requests] == [503, 200]

    # a server that always drops the connection: bounded retries, .part kept for the next run
    dest2 = tmp_path / "again.tgz"
    (server.root / "again.tgz").write_bytes(tgz.read_bytes())
    server.requests.clear()
    server.drop_always["/again.tgz"] = 10
    with pytest.raises(TransientAcquisitionError, match=r"failed after 4 attempts.*\(40 bytes\) is kept: re-run "
                                                        "to resume"):
        download.download(server.put(server.root / "again.tgz"), dest2, md5=md5(tgz), **FAST)
    assert len(server.requests) == 4
    assert dest2.with_name("again.tgz.part").stat().st_size == 40
    assert not dest2.exists()


def test_md5_mismatch_leaves_nothing(server, tmp_path):
    tgz = make_bbox_tgz(server.root / "boxes.tgz")
    wrong = "0" * 32
    dest = tmp_path / "boxes.tgz"
    with pytest.raises(AcquisitionError) as e:
        download.download(server.put(tgz), dest, md5=wrong, **FAST)
    msg = str(e.value)
    assert wrong in msg and md5(tgz) in msg and "boxes.tgz" in msg
    assert not dest.exists()
    assert not dest.with_name("boxes.tgz.part").exists()  # documented: a complete-length bad file is deleted

    # an existing final file is checked, never silently replaced
    dest.write_bytes(b"stale")
    with pytest.raises(AcquisitionError, match=r"boxes\.tgz: MD5 mismatch"):
        download.download(server.put(tgz), dest, md5=md5(tgz), **FAST)
    assert dest.read_bytes() == b"stale" and len(server.requests) == 1


def test_verify_md5_message_names_file_and_both_sums(tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(b"abc")
    assert download.verify_md5(f, md5(f)) == md5(f)
    with pytest.raises(AcquisitionError, match=rf"x\.bin.*expected {'1' * 32}, actual {md5(f)}.*delete"):
        download.verify_md5(f, "1" * 32)
    with pytest.raises(AcquisitionError, match="32 hex digits"):
        download.verify_md5(f, "nope")


def test_404_names_the_url_without_retrying(server, tmp_path):
    server.not_found.add("/missing.tar")
    url = f"{server.url}/missing.tar"
    with pytest.raises(AcquisitionError, match=re.escape(url) + ".*404") as e:
        download.download(url, tmp_path / "missing.tar", **FAST)
    assert type(e.value) is AcquisitionError  # deterministic: not worth retrying
    assert len(server.requests) == 1
    assert not (tmp_path / "missing.tar").exists()


def test_connection_refused_is_bounded(tmp_path):
    import socket
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TransientAcquisitionError, match="failed after 2 attempts.*Nothing was kept"):
        download.download(f"http://127.0.0.1:{port}/x.tar", tmp_path / "x.tar",
                         retries=1, backoff=0.01, timeout=2, progress=False)


def test_local_path_and_file_url_sources(tmp_path):
    tgz = make_bbox_tgz(tmp_path / "ILSVRC2012_bbox_val_v3.tgz")
    a = download.download(str(tgz), tmp_path / "a" / tgz.name, md5=md5(tgz))  # progress bar on
    b = download.download(tgz.as_uri(), tmp_path / "b" / tgz.name, md5=md5(tgz), progress=False)
    assert a.read_bytes() == b.read_bytes() == tgz.read_bytes()
    with pytest.raises(AcquisitionError, match="does not exist"):
        download.download(str(tmp_path / "nope.tgz"), tmp_path / "c" / "nope.tgz", progress=False)
    with pytest.raises(AcquisitionError, match="unsupported URL scheme"):
        download.download("ftp://example.org/x.tar", tmp_path / "x.tar", progress=False)


# ---------------------------------------------------------------- extraction


def test_truncated_tar_is_refused(tmp_path):
    full = make_voc_tar(tmp_path / "full.tar").read_bytes()
    with tarfile.open(tmp_path / "full.tar") as tf:
        tf.getmembers()
        end = tf.offset  # where the end-of-archive zero blocks start
    # cut at a header boundary / before the end marker: tarfile alone would call these "the end"
    cuts = {"mid_member": len(full) // 2, "header_boundary": 3 * 512, "no_end_marker": end}
    for label, cut in cuts.items():
        bad = tmp_path / f"VOCtrainval_{label}.tar"
        bad.write_bytes(full[:cut])
        with pytest.raises(AcquisitionError, match=rf"{bad.name}.*truncated or corrupt"):
            extract.safe_extract(bad, tmp_path / f"out_{label}", progress=False)
        assert not (tmp_path / f"out_{label}").exists(), label
    assert [p.name for p in tmp_path.iterdir() if "extracting" in p.name] == []


def test_truncated_tgz_and_zip_are_refused(tmp_path):
    data = make_bbox_tgz(tmp_path / "b.tgz").read_bytes()
    (tmp_path / "cut.tgz").write_bytes(data[: len(data) - 100])
    with pytest.raises(AcquisitionError, match=r"cut\.tgz.*truncated or corrupt"):
        extract.safe_extract(tmp_path / "cut.tgz", tmp_path / "o1", progress=False)
    with zipfile.ZipFile(tmp_path / "z.zip", "w") as zf:
        zf.writestr("val/a.xml", "<annotation/>" * 100)
    raw = (tmp_path / "z.zip").read_bytes()
    (tmp_path / "cut.zip").write_bytes(raw[:-30])
    with pytest.raises(AcquisitionError, match=r"cut\.zip.*truncated or corrupt"):
        extract.safe_extract(tmp_path / "cut.zip", tmp_path / "o2", progress=False)
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()
    out = extract.safe_extract(tmp_path / "z.zip", tmp_path / "o3", progress=False)
    assert (out / "val" / "a.xml").is_file()


MALICIOUS = {
    "dotdot": [(member("../evil"), b"x")],
    "nested_dotdot": [(member("val/../../evil"), b"x")],
    "absolute": [(member("/tmp/lrp-acquire-evil"), b"x")],
    "symlink_abs": [(member("val/etc", tarfile.SYMTYPE, "/etc"), None)],
    "symlink_up": [(member("val/up", tarfile.SYMTYPE, "../.."), None)],
    "through_symlink": [(member("val/d", tarfile.DIRTYPE), None),
                        (member("val/d/l", tarfile.SYMTYPE, ".."), None),
                        (member("val/d/l/x", tarfile.SYMTYPE, ".."), None)],
    "hardlink_abs": [(member("val/passwd", tarfile.LNKTYPE, "/etc/passwd"), None)],
    "hardlink_unknown": [(member("val/h", tarfile.LNKTYPE, "other"), None)],
    "chardev": [(member("val/null", tarfile.CHRTYPE), None)],
    "fifo": [(member("val/fifo", tarfile.FIFOTYPE), None)],
}


@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_malicious_tar_members_are_refused(tmp_path, case):
    good = (member("val/ILSVRC2012_val_00000001.xml"), b"<annotation/>")
    arc = tar_with(tmp_path / f"{case}.tar", good, *MALICIOUS[case])
    dest = tmp_path / "sub" / "out"
    with pytest.raises(AcquisitionError, match=rf"{case}\.tar: refusing"):
        extract.safe_extract(arc, dest, progress=False)
    assert not dest.exists()
    assert not (tmp_path / "sub" / "evil").exists() and not (tmp_path / "evil").exists()
    assert not Path("/tmp/lrp-acquire-evil").exists()
    assert list((tmp_path / "sub").iterdir()) == []  # temp folder removed


def test_malicious_zip_members_are_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as zf:
        zf.writestr("../evil", "x")
    with pytest.raises(AcquisitionError, match=r"evil\.zip: refusing member '\.\./evil'"):
        extract.safe_extract(tmp_path / "evil.zip", tmp_path / "out", progress=False)
    with zipfile.ZipFile(tmp_path / "link.zip", "w") as zf:
        info = zipfile.ZipInfo("val/etc")
        info.external_attr = (0o120777) << 16  # symlink
        zf.writestr(info, "/etc")
    with pytest.raises(AcquisitionError, match="symlink"):
        extract.safe_extract(tmp_path / "link.zip", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil").exists()


def test_inside_symlink_needs_allow_links(tmp_path):
    arc = tar_with(tmp_path / "ok.tar", (member("val/a.xml"), b"<a/>"),
                   (member("val/latest.xml", tarfile.SYMTYPE, "a.xml"), None))
    with pytest.raises(AcquisitionError, match=r"ok\.tar: refusing symlink 'val/latest\.xml' -> 'a\.xml': "
                                               "archives of this data set contain no links"):
        extract.safe_extract(arc, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    out = extract.safe_extract(arc, tmp_path / "out", progress=False, allow_links=True)
    assert (out / "val" / "latest.xml").read_bytes() == b"<a/>"


def test_two_archives_merge_into_one_tree(tmp_path):
    """VOC trainval and test both unpack into VOCdevkit/VOC2007/."""
    tv = make_voc_tar(tmp_path / "VOCtrainval_06-Nov-2007.tar")
    test = tar_with(tmp_path / "VOCtest_06-Nov-2007.tar",
                    (member("VOCdevkit/VOC2007/Annotations/000001.xml"), b"<annotation/>"),
                    (member("VOCdevkit/VOC2007/ImageSets/Main/test.txt"), b"000001\n"))
    out = tmp_path / "voc"
    extract.safe_extract(tv, out, progress=False)
    extract.safe_extract(test, out, progress=False)
    ann = out / "VOCdevkit" / "VOC2007" / "Annotations"
    assert sorted(p.name for p in ann.iterdir()) == ["000001.xml", "000002.xml", "1.xml", "2.xml"]
    assert (out / ".extracted-VOCtrainval_06-Nov-2007.tar").is_file()
    assert (out / ".extracted-VOCtest_06-Nov-2007.tar").is_file()
    clash = tar_with(tmp_path / "clash.tar", (member("VOCdevkit/VOC2007/Annotations/1.xml"), b"other"))
    with pytest.raises(AcquisitionError, match=r"clash\.tar: would overwrite .*1\.xml"):
        extract.safe_extract(clash, out, progress=False)


# ---------------------------------------------------------------- registry and fetch


def test_registry_entries_match_the_reference_notes():
    reg = acquire.load_registry()
    assert {"voc2007_trainval", "voc2007_test", "voc2012_trainval", "imagenet_val_images",
            "imagenet_devkit", "imagenet_bbox_val", "keras_vgg16_weights"} <= set(reg)
    expected = {  # data_protocol.md §2.1, §3.1, §4.2
        "voc2007_trainval": ("VOCtrainval_06-Nov-2007.tar", "c52e279531787c972589f7e41ab4ae64"),
        "voc2007_test": ("VOCtest_06-Nov-2007.tar", "b6e924de25625d8de591ea690078ad9f"),
        "voc2012_trainval": ("VOCtrainval_11-May-2012.tar", "6cd6e144f989b92b3379bac3b3de84fd"),
        "imagenet_val_images": ("ILSVRC2012_img_val.tar", "29b22e2961454d5413ddabcf34fc5622"),
        "imagenet_devkit": ("ILSVRC2012_devkit_t12.tar.gz", "fa75699e90414af021442c21a62c3abf"),
        "imagenet_bbox_val": ("ILSVRC2012_bbox_val_v3.tgz", "f4cd18b5ea29fe6bbea62ec9c20d80f0"),
        "keras_vgg16_weights": ("vgg16_weights_tf_dim_ordering_tf_kernels.h5",
                                "64373286793e3c8b2b4e3219cbf3544b"),
    }
    for name, (filename, digest) in expected.items():
        assert (reg[name].filename, reg[name].md5) == (filename, digest), name
    for spec in reg.values():
        assert spec.url is None or spec.url.endswith("/" + spec.filename), spec.name
        assert spec.config_key, spec.name
    assert all(reg[n].url is None for n in ("imagenet_val_images", "imagenet_devkit", "imagenet_bbox_val"))


def test_registry_rejects_malformed_entries(tmp_path):
    bad = tmp_path / "reg.yaml"
    bad.write_text("x:\n  filename: a.tar\n  md5: 123\n")
    with pytest.raises(AcquisitionError, match=r"reg\.yaml: entry 'x' md5.*32 hex"):
        acquire.load_registry(bad)
    bad.write_text("x:\n  filename: a.tar\n  ulr: http://x\n")
    with pytest.raises(AcquisitionError, match=r"unknown field.*ulr"):
        acquire.load_registry(bad)


def test_fetch_imagenet_without_source_names_the_config_key(tmp_path):
    with pytest.raises(AcquisitionError, match=r"ILSVRC2012_img_val\.tar.*`datasets\.imagenet\.images`"):
        acquire.fetch("imagenet_val_images", tmp_path)
    with pytest.raises(AcquisitionError, match="unknown archive 'nope'"):
        acquire.fetch("nope", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_fetch_with_local_source_checks_the_registry_md5(tmp_path):
    fake = make_bbox_tgz(tmp_path / "my_boxes.tgz")  # not the real archive: MD5 must not match
    with pytest.raises(AcquisitionError, match="f4cd18b5ea29fe6bbea62ec9c20d80f0") as e:
        acquire.fetch("imagenet_bbox_val", tmp_path / "dl", source=fake, progress=False)
    assert md5(fake) in str(e.value)
    assert not (tmp_path / "dl" / "ILSVRC2012_bbox_val_v3.tgz").exists()
    spec = {"name": "boxes", "filename": "ILSVRC2012_bbox_val_v3.tgz", "md5": md5(fake)}
    got = acquire.fetch(spec, tmp_path / "dl", source=fake, progress=False)
    assert got == tmp_path / "dl" / "ILSVRC2012_bbox_val_v3.tgz" and md5(got) == md5(fake)


def test_fetch_falls_back_to_mirror(server, tmp_path):
    tgz = make_bbox_tgz(server.root / "w.tgz")
    server.not_found.add("/primary/w.tgz")
    spec = {"name": "w", "filename": "w.tgz", "md5": md5(tgz), "url": f"{server.url}/primary/w.tgz",
            "mirrors": [server.put(tgz)]}
    got = acquire.fetch(spec, tmp_path, progress=False, retries=0, backoff=0.01, timeout=5)
    assert got.read_bytes() == tgz.read_bytes()


# ---------------------------------------------------------------- data-set sources


def test_resolve_dataset_source_kinds(server, tmp_path):
    tar = make_voc_tar(tmp_path / "VOCtrainval_06-Nov-2007.tar")
    out = extract.safe_extract(tar, tmp_path / "voc", progress=False)
    plan = acquire.resolve_dataset_source(out, "voc2007")
    assert (plan.action, plan.root) == ("use", out)
    # VOCdevkit or VOCdevkit/VOC2007 given: the root is still the folder holding VOCdevkit/
    assert acquire.resolve_dataset_source(out / "VOCdevkit" / "VOC2007", "voc2007").root == out
    assert acquire.resolve_dataset_source(tar, "voc2007").action == "extract"
    plan = acquire.resolve_dataset_source(f"{server.url}/d/VOCtrainval_06-Nov-2007.tar", "voc2007")
    assert (plan.action, plan.filename) == ("download", "VOCtrainval_06-Nov-2007.tar")
    with pytest.raises(AcquisitionError, match=r"VOCdevkit/VOC2012/Annotations"):
        acquire.resolve_dataset_source(out, "voc2012")
    with pytest.raises(AcquisitionError, match="does not exist"):
        acquire.resolve_dataset_source(tmp_path / "nowhere", "voc2007")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(AcquisitionError, match="neither a folder nor a tar/zip"):
        acquire.resolve_dataset_source(tmp_path / "notes.txt", "imagenet_boxes")
    with pytest.raises(AcquisitionError, match="unknown data-set kind"):
        acquire.resolve_dataset_source(out, "coco")
    assert server.requests == []  # resolving never downloads


def test_prepare_dataset_from_url_archive_and_folder(server, tmp_path):
    tgz = make_bbox_tgz(server.root / "ILSVRC2012_bbox_val_v3.tgz")
    root = acquire.prepare_dataset(server.put(tgz), "imagenet_boxes", tmp_path / "boxes",
                                   md5=md5(tgz), **FAST)
    assert root == tmp_path / "boxes"
    assert sorted(p.relative_to(root) for p in root.rglob("*.xml")) == BOX_FILES
    assert (tmp_path / "ILSVRC2012_bbox_val_v3.tgz").is_file()  # downloads land beside extract_to
    # a flattened mirror (XML directly in the folder) passes the recursive check too
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "ILSVRC2012_val_00000001.xml").write_bytes(
        (DATA / "imagenet_bbox_val" / BOX_FILES[0]).read_bytes())
    assert acquire.prepare_dataset(flat, "imagenet_boxes", tmp_path / "unused") == flat
    (tmp_path / "empty").mkdir()
    with pytest.raises(AcquisitionError, match=r"empty: no ImageNet box XML"):
        acquire.prepare_dataset(tmp_path / "empty", "imagenet_boxes", tmp_path / "unused")
    # a local archive with the wrong md5 is refused before extraction
    with pytest.raises(AcquisitionError, match="MD5 mismatch"):
        acquire.prepare_dataset(tgz, "imagenet_boxes", tmp_path / "b2", md5="0" * 32)
    assert not (tmp_path / "b2").exists()


def test_cli(tmp_path, capsys):
    assert acquire.main(["list"]) == 0
    assert "imagenet_bbox_val" in capsys.readouterr().out
    assert acquire.main(["--no-progress", "fetch", "imagenet_devkit", str(tmp_path)]) == 1
    assert "datasets.imagenet.devkit" in capsys.readouterr().err
    tgz = make_bbox_tgz(tmp_path / "b.tgz")
    assert acquire.main(["--no-progress", "extract", str(tgz), str(tmp_path / "x")]) == 0
    assert (tmp_path / "x" / "val" / "ILSVRC2012_val_00000001.xml").is_file()
    assert acquire.main(["--no-progress", "extract", str(tgz), str(tmp_path / "y"), "--max-bytes", "10"]) == 1
    assert "b.tgz: refusing to extract: it unpacks to more than 10 bytes" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()


# ---------------------------------------------------------------- stage helpers (lrp.pipeline.data.data)


def registry_with(**entries):
    """The real registry with some entries re-pointed at test files: name=(url or None, md5)."""
    reg = acquire.load_registry()
    for name, (url, digest) in entries.items():
        reg[name] = dataclasses.replace(reg[name], url=url, mirrors=(), md5=digest)
    return reg


def make_voc_test_tar(path: Path) -> Path:
    return tar_with(path, (member("VOCdevkit/VOC2007/Annotations/000001.xml"), b"<annotation/>"),
                    (member("VOCdevkit/VOC2007/ImageSets/Main/test.txt"), b"000001\n"))


def test_prepare_voc_download_into_root(server, tmp_path):
    tv = make_voc_tar(server.root / "VOCtrainval_06-Nov-2007.tar")
    te = make_voc_test_tar(server.root / "VOCtest_06-Nov-2007.tar")
    reg = registry_with(voc2007_trainval=(server.put(tv), md5(tv)), voc2007_test=(server.put(te), md5(te)))
    root = tmp_path / "data" / "voc2007"
    got = acquire.prepare_voc(root, download=True, registry=reg, **FAST)
    assert got == root / "VOCdevkit" / "VOC2007"
    assert {p.name for p in (got / "Annotations").iterdir()} == {"000001.xml", "000002.xml", "1.xml", "2.xml"}
    assert (got / "ImageSets" / "Main" / "test.txt").is_file()
    assert len(server.requests) == 2
    # re-run: nothing fetched or verified again, even after the tars were deleted to save space
    (root / tv.name).unlink()
    (root / te.name).unlink()
    assert acquire.prepare_voc(root, download=True, registry=reg, **FAST) == got
    assert len(server.requests) == 2


def test_prepare_voc_local_tars_folder_and_errors(tmp_path):
    root = tmp_path / "voc"
    root.mkdir()
    tv = make_voc_tar(root / "VOCtrainval_06-Nov-2007.tar")
    key = r"`datasets\.voc2007\.root`"
    with pytest.raises(AcquisitionError, match=key + r".*VOCtest_06-Nov-2007\.tar missing"):
        acquire.prepare_voc(root, progress=False)
    assert not (root / "VOCdevkit").exists()
    te = make_voc_test_tar(root / "VOCtest_06-Nov-2007.tar")
    with pytest.raises(AcquisitionError, match=key + r".*MD5 mismatch.*c52e279531787c972589f7e41ab4ae64"):
        acquire.prepare_voc(root, progress=False)  # the real registry: test tars are not the real ones
    assert not (root / "VOCdevkit").exists()
    reg = registry_with(voc2007_trainval=(None, md5(tv)), voc2007_test=(None, md5(te)))
    got = acquire.prepare_voc(root, registry=reg, progress=False)
    assert got == root / "VOCdevkit" / "VOC2007"
    # an extracted tree, given at any of its three levels
    elsewhere = tmp_path / "copy"
    shutil.copytree(root / "VOCdevkit", elsewhere / "VOCdevkit")
    for given in (elsewhere, elsewhere / "VOCdevkit", elsewhere / "VOCdevkit" / "VOC2007"):
        assert acquire.prepare_voc(given) == elsewhere / "VOCdevkit" / "VOC2007"
    with pytest.raises(AcquisitionError, match=key + " is not set"):
        acquire.prepare_voc(None)
    with pytest.raises(AcquisitionError, match=key + r".*missing: does not exist"):
        acquire.prepare_voc(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AcquisitionError, match=key + r".*empty: not an extracted PASCAL VOC 2007"):
        acquire.prepare_voc(tmp_path / "empty")


def test_prepare_imagenet(tmp_path):
    images = tmp_path / "val_images"
    images.mkdir()
    (images / "ILSVRC2012_val_00000001.JPEG").write_bytes(b"\xff\xd8\xff")
    tgz = make_bbox_tgz(tmp_path / "ILSVRC2012_bbox_val_v3.tgz")
    with pytest.raises(AcquisitionError, match=r"`datasets\.imagenet\.images` is not set"):
        acquire.prepare_imagenet(None, tgz, work_dir=tmp_path / "raw")
    with pytest.raises(AcquisitionError, match=r"`datasets\.imagenet\.boxes` = .*MD5 mismatch"):
        acquire.prepare_imagenet(images, tgz, work_dir=tmp_path / "raw", progress=False)
    reg = registry_with(imagenet_bbox_val=(None, md5(tgz)))
    img, boxes = acquire.prepare_imagenet(images, tgz, work_dir=tmp_path / "raw", registry=reg,
                                          progress=False)
    assert img == images and boxes == tmp_path / "raw" / "boxes"
    assert sorted(p.relative_to(boxes) for p in boxes.rglob("*.xml")) == BOX_FILES
    csv = tmp_path / "LOC_val_solution.csv"
    csv.write_text("ImageId,PredictionString\n")
    assert acquire.prepare_imagenet(images, csv, work_dir=tmp_path / "raw")[1] == csv
    with pytest.raises(AcquisitionError, match=r"`datasets\.imagenet\.images` = .*no ImageNet val images"):
        acquire.prepare_imagenet(tmp_path / "raw", csv, work_dir=tmp_path / "raw2")


def make_voc2012_tar(path: Path) -> Path:
    """VOCtrainval_11-May-2012.tar as the real one: VOCdevkit/VOC2012/..., ids like 2007_000027 / 2008_000002
    (VOC 2012 re-uses VOC 2007 images under 2007_* ids, which the PVOC fine-tune leaves out)."""
    xml = (DATA / "voc2007_trainval" / "VOCdevkit" / "VOC2007" / "Annotations" / "2.xml").read_bytes()
    jpg = (DATA / "voc2007_trainval" / "VOCdevkit" / "VOC2007" / "JPEGImages" / "2.jpg").read_bytes()
    base = "VOCdevkit/VOC2012"
    return tar_with(path, *[(member(f"{base}/Annotations/{i}.xml"), xml) for i in ("2007_000027", "2008_000002")],
                    *[(member(f"{base}/JPEGImages/{i}.jpg"), jpg) for i in ("2007_000027", "2008_000002")],
                    (member(f"{base}/ImageSets/Main/trainval.txt"), b"2007_000027\n2008_000002\n"))


def test_prepare_voc2012_training_data_download(server, tmp_path, monkeypatch):
    """The PVOC model's training data (config `training_data.voc2012`, source: download) through the same
    resumable, MD5-checked download as VOC 2007; a wrong checksum names the file, both digests and the key."""
    from lrp.training import finetune
    tv = make_voc2012_tar(server.root / "VOCtrainval_11-May-2012.tar")
    reg = registry_with(voc2012_trainval=(server.put(tv), md5(tv)))
    monkeypatch.setattr(acquire, "load_registry", lambda: reg)
    root = tmp_path / "data" / "voc2012"
    info = finetune.prepare_training_data("voc2012", {"format": "voc", "source": "download", "year": 2012,
                                                      "root": str(root)}, tmp_path / "out" / "data.json")
    got = root / "VOCdevkit" / "VOC2012"
    assert info["root"] == str(got) and json.loads((tmp_path / "out" / "data.json").read_text()) == info
    assert sorted(p.name for p in (got / "Annotations").iterdir()) == ["2007_000027.xml", "2008_000002.xml"]
    assert len(server.requests) == 1

    bad = registry_with(voc2012_trainval=(server.put(tv), "0" * 32))
    monkeypatch.setattr(acquire, "load_registry", lambda: bad)
    with pytest.raises(AcquisitionError) as e:
        finetune.prepare_training_data("voc2012", {"format": "voc", "source": "download", "year": 2012,
                                                   "root": str(tmp_path / "other")}, tmp_path / "o2" / "data.json")
    msg = str(e.value)
    assert "VOCtrainval_11-May-2012.tar" in msg and "0" * 32 in msg and md5(tv) in msg
    assert not (tmp_path / "o2" / "data.json").exists()
    assert not (tmp_path / "other" / "VOCtrainval_11-May-2012.tar").exists()  # nothing unverified left in place
