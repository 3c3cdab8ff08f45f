"""Whether torch.compile works on this machine: the fused-kernel tests skip, naming the reason, where it does
not (no C++ compiler), and everything else still runs. Shared by the engine, pipeline and benchmark tests."""

from __future__ import annotations

import functools

import pytest
import torch

from lrp import kernels
from lrp.kernels import FusedKernelError


@functools.lru_cache(maxsize=None)
def compile_problem() -> str:
    """'' if torch.compile works here, else why not. Why ask: on a machine without a C++ compiler the fused
    tests skip, naming the reason, and everything else still runs."""
    try:
        kernels.Fused().ratio(torch.ones(2, 2), torch.ones(2, 2), None, 1.0)
        return ""
    except FusedKernelError as e:
        return str(e)


def skip_unless_compiles(k=kernels.FUSED):
    if k is kernels.FUSED and compile_problem():
        pytest.skip(f"torch.compile does not work here: {compile_problem()}")
