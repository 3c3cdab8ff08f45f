"""atomic_path: outputs appear complete or not at all; a killed writer's temporary is cleaned up."""

import pytest

from lrp.io import atomic_path


def test_atomic_path_renames_only_on_success(tmp_path):
    out = tmp_path / "sub" / "a.csv"
    with pytest.raises(RuntimeError):
        with atomic_path(out) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert not out.exists() and list((tmp_path / "sub").iterdir()) == []
    with atomic_path(out) as tmp:
        tmp.write_text("whole")
    assert out.read_text() == "whole" and list((tmp_path / "sub").iterdir()) == [out]


def test_stale_temporary_of_the_same_output_is_removed(tmp_path):
    stale = tmp_path / ".a.h5.tmp-99999"  # what a SIGKILLed writer leaves
    other = tmp_path / ".b.h5.tmp-99999"  # another output's temporary: not ours to touch
    stale.write_text("x")
    other.write_text("x")
    with atomic_path(tmp_path / "a.h5") as tmp:
        assert not stale.exists()
        tmp.write_text("new")
    assert other.exists() and (tmp_path / "a.h5").read_text() == "new"
