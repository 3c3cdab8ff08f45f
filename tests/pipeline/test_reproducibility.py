"""Reproducibility switches of the attribution stage: deterministic algorithms, and the kill injection the
resume test (tests/workflow/test_workflow.py) relies on."""

import os

import pytest
import torch

from lrp.pipeline.attribution import _kill_point, set_deterministic


@pytest.fixture
def restore_torch(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.benchmark)
    yield
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    torch.backends.cudnn.benchmark = before[2]


def test_set_deterministic(restore_torch):
    set_deterministic(False)
    assert not torch.are_deterministic_algorithms_enabled() and "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    torch.backends.cudnn.benchmark = True
    set_deterministic(True)
    assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8" and not torch.backends.cudnn.benchmark


def test_kill_point(monkeypatch):
    monkeypatch.delenv("LRP_TEST_KILL", raising=False)
    assert _kill_point(1) is None
    monkeypatch.setenv("LRP_TEST_KILL", "1:3")
    assert _kill_point(1) == 3 and _kill_point(0) is None and _kill_point(None) is None
    monkeypatch.setenv("LRP_TEST_KILL", "one")
    with pytest.raises(ValueError, match="LRP_TEST_KILL='one'"):
        _kill_point(1)
