"""Keep freed CPU memory for reuse (glibc malloc), so activation-sized tensors stop page-faulting.

Why: glibc serves every block above 32 MiB (its largest mmap threshold) with a fresh `mmap` and unmaps it
on free. A VGG-16 activation at 224², batch 4, is 51 MiB, so every such tensor the engine or autograd
creates is new memory that the kernel must fault in page by page. On the 2-core development VM a 3→64
convolution at 224² took 38 ms into fresh memory and 9 ms into reused memory, and all 13 analyzers on a
batch of 4 took 15.7 s instead of 10.2 s (benchmarks/README.md).

`retain_freed_memory()` turns mmap off for malloc (M_MMAP_MAX = 0) and raises the trim threshold to its
largest settable value (M_TRIM_THRESHOLD = 2 GiB), so freed tensors stay in the heap and are reused; the
heap top goes back to the system only when more than 2 GiB of it is free. Results are unchanged; the price
is that a process keeps (up to 2 GiB above) its peak heap. Limits: in threads other than the main one,
glibc still maps blocks above 64 MiB; an allocator replaced through LD_PRELOAD (jemalloc, tcmalloc) is
left alone. Every pipeline job is its own process, and the runner calls this at its start unless
LRP_RETAIN_FREED_MEMORY=0. CUDA memory has its own caching allocator and is not affected.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
_INT_MAX = 2**31 - 1
ENV = "LRP_RETAIN_FREED_MEMORY"
_OFF, _ON = ("0", "false", "no", "off"), ("", "1", "true", "yes", "on")

_state: str | None = None


def retain_freed_memory() -> str:
    """Configure glibc malloc to reuse freed memory; returns what was done, as one line for the log.

    Idempotent. Not glibc (macOS, musl), malloc replaced via LD_PRELOAD, or LRP_RETAIN_FREED_MEMORY=0: the
    allocator is left as it is, and the returned line says so. Any other value of the variable than
    0/false/no/off or 1/true/yes/on is an error.
    """
    global _state
    if _state is not None:
        return _state
    value = os.environ.get(ENV, "")
    if value.strip().lower() not in _OFF + _ON:
        raise ValueError(f"{ENV}={value!r}: expected 0 (leave malloc alone) or 1 (keep freed memory, the default)")
    if value.strip().lower() in _OFF:
        _state = f"allocator unchanged ({ENV}={value})"
        return _state
    preload = [p for p in os.environ.get("LD_PRELOAD", "").replace(":", " ").split() if "malloc" in p]
    if preload:
        _state = f"allocator unchanged (LD_PRELOAD replaces malloc: {' '.join(preload)})"
        return _state
    libc = glibc()
    if libc is None:
        _state = f"allocator unchanged (not glibc on {sys.platform}: freed large tensors go back to the system)"
        return _state
    mmap_off = libc.mallopt(M_MMAP_MAX, 0) == 1
    trim_max = libc.mallopt(M_TRIM_THRESHOLD, _INT_MAX) == 1
    if mmap_off and trim_max:
        _state = ("glibc malloc keeps freed memory for reuse (M_MMAP_MAX=0, M_TRIM_THRESHOLD=2 GiB; "
                  f"{ENV}=0 to turn off)")
    else:
        _state = (f"glibc mallopt refused part of the setting: M_MMAP_MAX=0 {'set' if mmap_off else 'refused'}, "
                  f"M_TRIM_THRESHOLD {'set' if trim_max else 'refused'}")
    return _state


def glibc():
    """The C library if it is glibc (its mallopt knows M_MMAP_MAX), else None."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return None
        libc = ctypes.CDLL("libc.so.6")
    except (ValueError, OSError, AttributeError):  # no such confstr name (macOS, musl), or no libc.so.6
        return None
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.mallopt.restype = ctypes.c_int
    return libc
