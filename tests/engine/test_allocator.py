"""lrp.allocator: glibc keeps freed memory, so a second activation-sized tensor does not page-fault again."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import lrp.allocator as al

ROOT = Path(__file__).resolve().parents[2]
PAGES = 64 * 2**20 // 4096  # pages of the 64 MiB block each probe touches

PROBE = r"""
import ctypes, json, resource, sys
libc = ctypes.CDLL("libc.so.6")
libc.prctl(41, 1, 0, 0, 0)  # PR_SET_THP_DISABLE: 4 KiB pages, so a fault count means the same on every host
import torch
import lrp.allocator as al
mode, case = sys.argv[1:3]
line = "untouched"
if mode == "retain":
    line = al.retain_freed_memory()
    assert al.retain_freed_memory() == line  # idempotent
elif mode == "mmap_only":
    libc.mallopt(-4, 0)
n = 64 * 2**20
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
if case == "torch":
    torch.ones(n // 4 + 2**18)  # allocate, touch every page, free (a little larger: memalign needs slack)
    before = faults()
    torch.ones(n // 4)  # a tensor that fits in the freed block
else:  # "top": a freed block at the top of the heap, which glibc trims unless M_TRIM_THRESHOLD is raised
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = (ctypes.c_void_p,)
    p = libc.malloc(n); ctypes.memset(p, 1, n); libc.free(p)
    before = faults()
    q = libc.malloc(n); ctypes.memset(q, 1, n); libc.free(q)
print(json.dumps({"line": line, "faults": faults() - before}))
"""

CLEAN = ("LRP_RETAIN_FREED_MEMORY", "GLIBC_TUNABLES", "LD_PRELOAD", "THP_MEM_ALLOC_ENABLE")
glibc_only = pytest.mark.skipif(al.glibc() is None, reason="glibc only")


def probe(mode: str, case: str = "torch", **env) -> dict:
    base = {k: v for k, v in os.environ.items() if k not in CLEAN and not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", PROBE, mode, case], cwd=ROOT, capture_output=True, text=True,
                         check=True, env={**base, "PYTHONPATH": str(ROOT), **env})
    return json.loads(out.stdout.strip().splitlines()[-1])


@glibc_only
def test_freed_large_tensor_is_reused_without_page_faults():
    plain, kept = probe("default"), probe("retain")
    assert plain["faults"] > PAGES // 2  # glibc unmapped the first block: every page faults again
    assert kept["faults"] < PAGES // 10, kept  # reused: (almost) no new faults
    assert kept["line"].startswith("glibc malloc keeps freed memory for reuse")


@glibc_only
def test_heap_top_is_not_trimmed():
    """M_TRIM_THRESHOLD matters too: without it, a freed block at the heap top goes back to the system."""
    assert probe("mmap_only", "top")["faults"] > PAGES // 2
    assert probe("retain", "top")["faults"] < PAGES // 10


@glibc_only
def test_opt_out_leaves_the_allocator_alone():
    off = probe("retain", LRP_RETAIN_FREED_MEMORY="0")
    assert off["line"] == "allocator unchanged (LRP_RETAIN_FREED_MEMORY=0)"
    assert off["faults"] > PAGES // 2


@pytest.mark.parametrize("env, expect", [
    ({"LRP_RETAIN_FREED_MEMORY": "off"}, "allocator unchanged (LRP_RETAIN_FREED_MEMORY=off)"),
    ({"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}, "allocator unchanged (LD_PRELOAD replaces malloc: "
                                                  "/usr/lib/libjemalloc.so.2)"),
])
def test_left_alone_without_touching_malloc(monkeypatch, env, expect):
    monkeypatch.setattr(al, "_state", None)
    monkeypatch.setattr(al, "glibc", lambda: pytest.fail("must not reach mallopt"))
    for k in CLEAN:
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert al.retain_freed_memory() == expect


def test_bad_switch_value_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(al, "_state", None)
    monkeypatch.setenv("LRP_RETAIN_FREED_MEMORY", "disable")
    with pytest.raises(ValueError, match="LRP_RETAIN_FREED_MEMORY='disable': expected 0"):
        al.retain_freed_memory()
