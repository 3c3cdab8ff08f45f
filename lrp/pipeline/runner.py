"""Run a pipeline stage from a Snakemake script: log to the rule's log, clear one-line errors for bad input.

Each job is its own process, so this is also where process-wide settings are made: torch's thread count
(the rule's `threads`) and glibc's reuse of freed memory (`lrp.allocator`); and where the config's
`plugins` are imported, so that their analyzers exist in the job (`lrp.plugins`).

Expected failures end the job with one line, `ERROR in rule <rule>: [<file>: ]<problem>`, in the log and on
the terminal, not a traceback: errors that describe the user's data or config (bad paths, unsupported
models, failed downloads), the environment (disk full, no permission, read-only file system, too many open
files) and corrupt files as libraries report them (HDF5, PIL, zlib, tar/zip, XML, JSON, pickle/torch.load).
Anything else is a bug and keeps its traceback. Exit status: `EXIT_USER_ERROR` when the same run would
fail again, `EXIT_TRANSIENT` when the network failed (after the in-job retries) and a later re-run may not.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import traceback

EXIT_USER_ERROR = 1
EXIT_TRANSIENT = 75  # EX_TEMPFAIL of sysexits.h: "temporary failure, the user is invited to retry"

_RESULTS_ELSEWHERE = "or set `results` in the config to a folder on another disk, then re-run"
# errno -> (problem, what to do) for OS failures that are the environment's, not the code's
_OS_PROBLEMS = {
    errno.ENOSPC: ("disk full", f"free space, {_RESULTS_ELSEWHERE}"),
    errno.EDQUOT: ("disk quota exceeded", f"free space within your quota, {_RESULTS_ELSEWHERE}"),
    errno.EFBIG: ("file too large for this file system", _RESULTS_ELSEWHERE.removeprefix("or ")),
    errno.EROFS: ("read-only file system", "set `results` in the config to a writable folder, then re-run"),
    errno.EACCES: ("permission denied", "make it readable/writable for you, or point the config elsewhere"),
    errno.EPERM: ("operation not permitted", "make it readable/writable for you, or point the config elsewhere"),
    errno.EMFILE: ("too many open files in this job", "raise the limit (`ulimit -n 4096`) or lower the "
                                                      "rule's threads / preprocess.workers"),
    errno.ENFILE: ("too many open files on this system", "run fewer jobs at once (`snakemake -j`)"),
    errno.EIO: ("input/output error", "the disk or network file system failed: check it, then re-run"),
    errno.ENOENT: ("not found", "check the path in the config"),
    errno.EISDIR: ("a folder where a file is expected", "check the path in the config"),
    errno.ENOTDIR: ("a file where a folder is expected", "check the path in the config"),
}
_CORRUPT_TODO = "replace it: download it again, or delete it so that the pipeline makes it again"
# locals that name the file a library was reading, innermost frame first (h5py, PIL, torch.load, tarfile...)
_FILE_LOCALS = ("filename", "fname", "name", "path", "file", "f", "fp", "fh", "fileobj", "self")


def user_errors() -> tuple:
    """The exception classes whose message already tells the user what is wrong (ours and the config's)."""
    from lrp.graph import UnsupportedModelError

    errors = [ValueError, FileNotFoundError, UnsupportedModelError]
    try:
        from lrp.datasets.acquire_errors import AcquisitionError
        errors.append(AcquisitionError)
    except ImportError:  # pragma: no cover - acquire_errors is part of the package
        pass
    return tuple(errors)


def _transient_errors() -> tuple:
    """Network failures: worth a later re-run. `TransientAcquisitionError` is what survived lrp.datasets.download's
    retries."""
    import socket
    import urllib.error

    transient = getattr(sys.modules.get("lrp.datasets.acquire_errors"), "TransientAcquisitionError", None)
    own = (transient,) if isinstance(transient, type) else ()  # not imported: none can have been raised
    return own + (ConnectionResetError, ConnectionRefusedError, ConnectionAbortedError, TimeoutError,
                  socket.gaierror, urllib.error.URLError)


def _is_transient(e: BaseException) -> bool:
    import urllib.error

    if isinstance(e, urllib.error.HTTPError):  # 404, 403: the same request fails again
        return e.code >= 500 or e.code in (408, 429)
    return isinstance(e, _transient_errors())


def _corrupt_file_errors() -> tuple:
    """How libraries report a truncated or corrupt file (an errno-less OSError is HDF5's and PIL's way)."""
    import json
    import pickle
    import tarfile
    import zipfile
    import zlib

    errors = [zlib.error, EOFError, tarfile.TarError, zipfile.BadZipFile, json.JSONDecodeError,
              pickle.UnpicklingError]
    with contextlib.suppress(ImportError):
        from lxml import etree
        errors.append(etree.XMLSyntaxError)
    return tuple(errors)


def _is_http_error(e: BaseException) -> bool:
    import urllib.error

    return isinstance(e, urllib.error.HTTPError)


def _is_corrupt_file(e: BaseException) -> bool:
    import urllib.error

    if isinstance(e, OSError) and e.errno is None and not isinstance(e, (FileNotFoundError, urllib.error.URLError)):
        return True  # h5py: "Unable to open file (truncated file ...)"; PIL: "image file is truncated"
    if isinstance(e, RuntimeError) and str(e).startswith("PytorchStreamReader failed"):
        return True  # torch.load of a truncated checkpoint
    return isinstance(e, _corrupt_file_errors())


def _as_file(value) -> str | None:
    """`value` if it is the path of an existing file (str, bytes: h5py encodes its file name, PathLike)."""
    if not isinstance(value, (str, bytes, os.PathLike)):
        return None
    path = os.fsdecode(os.fspath(value))
    return path if os.path.isfile(path) else None


def _path_in(value) -> str | None:
    """The existing file `value` is, or names in its `name` (file objects) or `filename` (PIL), or None."""
    try:
        return _as_file(value) or _as_file(getattr(value, "name", None)) or _as_file(getattr(value, "filename", None))
    except Exception:  # a property of a half-built object may raise: it names no file then
        return None


def _file_of(e: BaseException) -> str | None:
    """The file an exception is about: its own `filename` (OSError, lxml) or, best effort, the existing file
    that the innermost frame of its traceback was working on (h5py, zlib, tarfile know none)."""
    own = getattr(e, "filename", None)
    if own:
        other = getattr(e, "filename2", None)  # os.rename/os.replace: source and destination
        return f"{os.fsdecode(own)} -> {os.fsdecode(other)}" if other else os.fsdecode(own)
    frames = [frame for frame, _ in traceback.walk_tb(e.__traceback__)]
    for frame in reversed(frames):
        for name in _FILE_LOCALS:
            path = _path_in(frame.f_locals.get(name))
            if path:
                return path
    return None


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _with_file(file: str | None, problem: str) -> str:
    return f"{file}: {problem}" if file else problem


def _detail(e: BaseException, file: str | None) -> str:
    """`Class: message` on one line, without a leading `<file>: ` that the message already has."""
    text = _one_line(e)
    if file and text.startswith(f"{file}: "):
        text = text[len(file) + 2:]
    return f"{type(e).__name__}: {text}"


def describe(e: BaseException) -> tuple[int, str] | None:
    """(exit status, one-line message) for an expected failure; None for a bug, which keeps its traceback."""
    if not isinstance(e, Exception):
        return None  # KeyboardInterrupt, SystemExit, ...
    if _is_transient(e):
        if isinstance(e, user_errors()):  # lrp.datasets.acquire's own message says what failed and what to do
            return EXIT_TRANSIENT, str(e)
        return EXIT_TRANSIENT, f"network failure ({_detail(e, None)}): check the connection and re-run " \
                               f"(downloads resume where they stopped)"
    if _is_http_error(e):
        return EXIT_USER_ERROR, f"{e.url}: HTTP {e.code} {e.reason}: check the URL in the config"
    if isinstance(e, OSError) and e.errno in _OS_PROBLEMS and e.strerror:
        problem, todo = _OS_PROBLEMS[e.errno]
        return EXIT_USER_ERROR, _with_file(_file_of(e), f"{problem} ({e.strerror}): {todo}")
    if _is_corrupt_file(e):
        file = _file_of(e)
        return EXIT_USER_ERROR, _with_file(file, f"unreadable or corrupt file ({_detail(e, file)}); {_CORRUPT_TODO}")
    if isinstance(e, user_errors()):
        return EXIT_USER_ERROR, str(e)
    return None


def _report(rule: str, message: str, fh) -> None:
    line = f"ERROR in rule {rule}: {message}"
    print(line, file=fh, flush=True)
    if fh is not sys.__stderr__:
        print(line, file=sys.__stderr__, flush=True)


def _load_plugins(snakemake, fh) -> None:
    from lrp.plugins import load

    specs = (getattr(snakemake, "config", None) or {}).get("plugins") or []
    if specs:
        print(f"[lrp] plugins {specs}: analyzers {load(specs)}", file=fh, flush=True)


def run(snakemake, fn, **kwargs) -> None:
    """Run `fn(**kwargs)` as the job of `snakemake.rule`, its stdout/stderr in the rule's log.

    An expected failure (`describe`) exits with its status and one `ERROR in rule ...` line in the log and
    on the terminal; a bug's traceback goes to the log and the exception propagates.
    """
    log_path = snakemake.log[0] if len(snakemake.log) else None
    threads = getattr(snakemake, "threads", 1)
    import torch

    from lrp.allocator import retain_freed_memory

    torch.set_num_threads(max(1, int(threads)))
    with (open(log_path, "w") if log_path else contextlib.nullcontext(sys.stderr)) as fh:
        with contextlib.redirect_stderr(fh), contextlib.redirect_stdout(fh):
            try:
                print(f"[lrp] {retain_freed_memory()}", file=fh, flush=True)  # before the stage allocates
                _load_plugins(snakemake, fh)
                fn(**kwargs)
            except SystemExit as e:
                if e.code not in (0, None):
                    _report(snakemake.rule, str(e.code), fh)
                raise
            except BaseException as e:
                expected = describe(e)
                if expected is None:
                    traceback.print_exc(file=fh)
                    raise
                status, message = expected
                _report(snakemake.rule, message, fh)
                sys.exit(status)
