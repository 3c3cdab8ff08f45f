"""lrp.pipeline.runner: an expected failure is one `ERROR in rule X: <file>: <problem>` line (log and terminal) and
an exit status (1: the same run fails again, 75: the network); a bug keeps its traceback. And the demo
generator never leaves a half-written data set (lrp.io.atomic_dir)."""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
import os
import socket
import tarfile
import urllib.request
import zlib
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch
from lxml import etree
from PIL import Image

import lrp.datasets.acquire_errors
import lrp.datasets.demo as demo
from lrp.io import atomic_dir, atomic_path
from lrp.pipeline import runner
from lrp.pipeline.data import data

from configs import dataset_entry

DISK_FULL = "disk full (No space left on device): free space, or set `results` in the config to a folder on " \
            "another disk, then re-run"
CORRUPT_TODO = "replace it: download it again, or delete it so that the pipeline makes it again"


@pytest.fixture(autouse=True)
def _leave_the_test_process_alone(monkeypatch):
    monkeypatch.setenv("LRP_RETAIN_FREED_MEMORY", "0")  # the runner would retune this process's malloc


def _job(tmp_path: Path, rule: str = "data") -> SimpleNamespace:
    """What Snakemake hands a script, as much as lrp.pipeline.runner reads (threads: this process's, left as is)."""
    return SimpleNamespace(log=[str(tmp_path / "job.log")], rule=rule, threads=torch.get_num_threads(), config={})


def _run_expected(tmp_path, capfd, fn, **kwargs) -> tuple[int, str]:
    """Run `fn` through the runner; assert it exits with exactly one ERROR line, the same in log and terminal,
    and no traceback. Returns (exit status, that line)."""
    job = _job(tmp_path)
    with pytest.raises(SystemExit) as info:
        runner.run(job, fn, **kwargs)
    err = capfd.readouterr().err
    log = Path(job.log[0]).read_text()
    lines = [line for line in err.splitlines() if line.startswith("ERROR in rule")]
    assert len(lines) == 1, err
    assert [line for line in log.splitlines() if line.startswith("ERROR in rule")] == lines
    assert "Traceback" not in log and "Traceback" not in err
    return info.value.code, lines[0]


def _corrupt(file: Path, detail: str) -> str:
    return f"ERROR in rule data: {file}: unreadable or corrupt file ({detail}); {CORRUPT_TODO}"


def _truncated(path: Path, data: bytes) -> Path:
    path.write_bytes(data[: len(data) // 2])
    return path


# ------------------------------------------------------------------------------------------ environment
def test_disk_full_while_writing_an_output_names_it_and_leaves_nothing(tmp_path, capfd):
    out = tmp_path / "results" / "samples.csv"

    def stage():
        with atomic_path(out) as tmp:
            tmp.write_text("half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # what write()/close() raise: no filename

    status, line = _run_expected(tmp_path, capfd, stage)
    assert status == runner.EXIT_USER_ERROR == 1
    assert line == f"ERROR in rule data: {out}: {DISK_FULL}"
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize("code, problem", [
    (errno.EDQUOT, "disk quota exceeded (Disk quota exceeded): free space within your quota, or set `results`"),
    (errno.EACCES, "permission denied (Permission denied): make it readable/writable for you, or point the "
                   "config elsewhere"),
    (errno.EPERM, "operation not permitted (Operation not permitted): make it readable/writable"),
    (errno.EROFS, "read-only file system (Read-only file system): set `results` in the config to a writable"),
    (errno.EMFILE, "too many open files in this job (Too many open files): raise the limit (`ulimit -n 4096`)"),
])
def test_os_failures_of_the_environment_are_one_line_naming_the_file(tmp_path, capfd, code, problem):
    target = tmp_path / "x.h5"

    def stage():  # as the OS raises them (running as root, chmod cannot provoke EACCES here)
        raise OSError(code, os.strerror(code), str(target))

    status, line = _run_expected(tmp_path, capfd, stage)
    assert status == 1 and line.startswith(f"ERROR in rule data: {target}: {problem}")


def test_a_missing_folder_names_it(tmp_path, capfd):
    missing = tmp_path / "nowhere" / "a.txt"
    status, line = _run_expected(tmp_path, capfd, lambda: missing.read_text())
    assert status == 1
    assert line == f"ERROR in rule data: {missing}: not found (No such file or directory): check the path in the config"


# ------------------------------------------------------------------------------------------ corrupt files
def test_truncated_hdf5_names_the_file(tmp_path, capfd):
    good = tmp_path / "good.h5"
    with h5py.File(good, "w") as f:
        f["x"] = np.arange(5000)
    bad = _truncated(tmp_path / "shard.h5", good.read_bytes())
    status, line = _run_expected(tmp_path, capfd, lambda: h5py.File(bad, "r"))
    assert status == 1 and line.startswith(f"ERROR in rule data: {bad}: unreadable or corrupt file (OSError: ")
    assert "truncated file" in line and line.endswith(CORRUPT_TODO)


def test_not_an_image_and_truncated_jpeg(tmp_path, capfd):
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"this is not a JPEG")
    status, line = _run_expected(tmp_path, capfd, lambda: Image.open(junk))
    assert status == 1
    assert line == _corrupt(junk, f"UnidentifiedImageError: cannot identify image file {str(junk)!r}")

    whole = tmp_path / "whole.jpg"
    Image.fromarray(np.full((64, 64, 3), 99, np.uint8)).save(whole, quality=95)
    cut = _truncated(tmp_path / "cut.jpg", whole.read_bytes())
    status, line = _run_expected(tmp_path, capfd, lambda: Image.open(cut).load())
    assert status == 1 and line.startswith(f"ERROR in rule data: {cut}: unreadable or corrupt file (OSError: ")


def test_bad_xml_json_tar_gzip_zlib(tmp_path, capfd):
    xml = tmp_path / "000001.xml"
    xml.write_text("<annotation><object></annotation>")
    _, line = _run_expected(tmp_path, capfd, lambda: etree.parse(str(xml)))
    assert line.startswith(f"ERROR in rule data: {xml}: unreadable or corrupt file (XMLSyntaxError: Opening and "
                           "ending tag mismatch")

    js = tmp_path / "data.json"
    js.write_text('{"root": ')
    _, line = _run_expected(tmp_path, capfd, lambda: json.load(open(js)))
    assert line == _corrupt(js, "JSONDecodeError: Expecting value: line 1 column 10 (char 9)")

    tar = tmp_path / "VOCtest.tar"
    tar.write_bytes(b"\x01" * 2048)
    _, line = _run_expected(tmp_path, capfd, lambda: tarfile.open(tar))
    assert line.startswith(f"ERROR in rule data: {tar}: unreadable or corrupt file (ReadError: file could not be "
                           "opened successfully: - method gz: ")  # tarfile's several lines, joined
    assert line.endswith(CORRUPT_TODO)

    gz = _truncated(tmp_path / "boxes.xml.gz", gzip.compress(os.urandom(4096)))
    _, line = _run_expected(tmp_path, capfd, lambda: gzip.open(gz).read())
    assert line.startswith(f"ERROR in rule data: {gz}: unreadable or corrupt file (EOFError: Compressed file ended")

    def inflate(path):
        zlib.decompress(Path(path).read_bytes())

    blob = tmp_path / "blob.z"
    blob.write_bytes(b"not deflate")
    _, line = _run_expected(tmp_path, capfd, inflate, path=blob)
    assert line == _corrupt(blob, "error: Error -3 while decompressing data: incorrect header check")


def test_corrupt_checkpoints_for_torch_load(tmp_path, capfd):
    good = tmp_path / "good.pt"
    torch.save({"w": torch.zeros(64)}, good)
    cut = _truncated(tmp_path / "model.pt", good.read_bytes())
    _, line = _run_expected(tmp_path, capfd, lambda: torch.load(cut, weights_only=True))
    assert line.startswith(f"ERROR in rule data: {cut}: unreadable or corrupt file (RuntimeError: PytorchStreamReader")

    legacy = tmp_path / "legacy.pt"
    legacy.write_bytes(b"\x80\x02garbage")
    status, line = _run_expected(tmp_path, capfd, lambda: torch.load(legacy, weights_only=False))
    assert status == 1
    assert line.startswith(f"ERROR in rule data: {legacy}: unreadable or corrupt file (UnpicklingError: ")


# ------------------------------------------------------------------------------------------ network, ours, bugs
def test_network_failure_exits_transient(tmp_path, capfd):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connection refused
    status, line = _run_expected(tmp_path, capfd, lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/a",
                                                                                  timeout=5))
    assert status == runner.EXIT_TRANSIENT == 75
    assert line.startswith("ERROR in rule data: network failure (URLError: <urlopen error [Errno 111] Connection "
                           "refused>): check the connection and re-run")


def test_acquisitions_transient_error_keeps_its_message_and_exits_75(tmp_path, capfd):
    cls = lrp.datasets.acquire_errors.TransientAcquisitionError  # the runner finds it by name in that module

    def stage():
        raise cls("http://x/VOC.tar: download failed after 6 attempts; re-run to resume")

    status, line = _run_expected(tmp_path, capfd, stage)
    assert status == 75 and line == "ERROR in rule data: http://x/VOC.tar: download failed after 6 attempts; " \
                                    "re-run to resume"

    def deterministic():
        raise lrp.datasets.acquire_errors.AcquisitionError("VOC.tar: MD5 mismatch")

    assert _run_expected(tmp_path, capfd, deterministic) == (1, "ERROR in rule data: VOC.tar: MD5 mismatch")


def test_our_value_error_is_its_own_message(tmp_path, capfd):
    def stage():
        raise ValueError("datasets.voc2007.root: 'x' is not a VOC folder")

    assert _run_expected(tmp_path, capfd, stage) == (1, "ERROR in rule data: datasets.voc2007.root: 'x' is not a "
                                                        "VOC folder")


@pytest.mark.parametrize("bug", [lambda: None + 1, lambda: object().missing,
                                 lambda: os.lseek(-1, 0, 0)])  # TypeError, AttributeError, EBADF
def test_a_bug_keeps_its_traceback(tmp_path, capfd, bug):
    job = _job(tmp_path)
    with pytest.raises((TypeError, AttributeError, OSError)):
        runner.run(job, bug)
    log = Path(job.log[0]).read_text()
    assert "Traceback (most recent call last)" in log and "ERROR in rule" not in log
    assert "ERROR in rule" not in capfd.readouterr().err


# ------------------------------------------------------------------------------------------ atomic demo set
def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _fail_after(monkeypatch, n: int, error: BaseException) -> None:
    """Make the demo's JPEG writer raise `error` once `n` images are written."""
    written = []
    real = demo._write_jpeg

    def writer(path, img):
        if len(written) == n:
            raise error
        real(path, img)
        written.append(path)

    monkeypatch.setattr(demo, "_write_jpeg", writer)


def test_demo_disk_full_midway_leaves_nothing_and_a_rerun_succeeds(tmp_path, monkeypatch):
    root = tmp_path / "VOCdevkit" / "DEMO"
    _fail_after(monkeypatch, 3, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    with pytest.raises(OSError) as info:
        demo.generate_demo(root, n_train=6, n_test=3, image_size=32, seed=1, progress=False)
    assert info.value.filename == str(root)
    assert list(root.parent.iterdir()) == []  # neither the set nor its temporary folder
    monkeypatch.undo()
    demo.generate_demo(root, n_train=6, n_test=3, image_size=32, seed=1, progress=False)
    fresh = tmp_path / "fresh"
    demo.generate_demo(fresh, n_train=6, n_test=3, image_size=32, seed=1, progress=False)
    assert _digest(root) == _digest(fresh) and len(_digest(root)) == 2 * 9 + 4 * 7
    assert sorted(p.name for p in root.parent.iterdir()) == ["DEMO"]


def test_demo_failure_keeps_the_previous_set_and_success_replaces_it_whole(tmp_path, monkeypatch):
    root = tmp_path / "DEMO"
    demo.generate_demo(root, n_train=8, n_test=4, image_size=32, seed=2, progress=False)
    before = _digest(root)
    _fail_after(monkeypatch, 2, RuntimeError("killed"))
    with pytest.raises(RuntimeError, match="killed"):
        demo.generate_demo(root, n_train=4, n_test=2, image_size=32, seed=2, progress=False)
    assert _digest(root) == before and sorted(p.name for p in tmp_path.iterdir()) == ["DEMO"]
    monkeypatch.undo()
    demo.generate_demo(root, n_train=4, n_test=2, image_size=32, seed=2, progress=False)
    assert len(list((root / "JPEGImages").iterdir())) == 6  # no image of the bigger set is left over
    assert sorted(p.name for p in tmp_path.iterdir()) == ["DEMO"]


def test_leftovers_of_a_killed_demo_writer_are_removed(tmp_path):
    for stale in (".DEMO.tmp-99999", ".DEMO.old-99999"):
        (tmp_path / stale / "JPEGImages").mkdir(parents=True)
    (tmp_path / ".OTHER.tmp-99999").mkdir()  # another folder's temporary: not ours to touch
    with atomic_dir(tmp_path / "DEMO") as tmp:
        (tmp / "a.txt").write_text("a")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".OTHER.tmp-99999", "DEMO"]


def test_data_stage_disk_full_is_one_line_and_writes_no_data_json(tmp_path, capfd, monkeypatch):
    out_json = tmp_path / "results" / "demo" / "data.json"
    cfg = dataset_entry(source="demo", format="voc", input_size=32, model="m", n_shards=1,
                        demo={"n_train": 4, "n_test": 2})
    _fail_after(monkeypatch, 2, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    status, line = _run_expected(tmp_path, capfd, data, name="demo", cfg=cfg, out_json=out_json)
    root = out_json.parent / "VOCdevkit" / "DEMO"
    assert status == 1 and line == f"ERROR in rule data: {root}: {DISK_FULL}"
    assert not out_json.exists() and list(root.parent.iterdir()) == []
