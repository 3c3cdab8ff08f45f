"""Fixtures shared by several test files."""

from pathlib import Path

import pytest

from lrp import composites, plugins

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "my_analyzers.py"


@pytest.fixture(scope="module")
def example():
    """The example plugin (examples/my_analyzers.py), loaded: its analyzers are registered."""
    return plugins.load([str(EXAMPLE)])


@pytest.fixture
def registry():
    """Restore the global registry (and the loader's memory) after a test that registers analyzers."""
    saved, loaded = dict(composites.REGISTRY), dict(plugins._LOADED)
    yield
    composites.REGISTRY.clear()
    composites.REGISTRY.update(saved)
    plugins._LOADED.clear()
    plugins._LOADED.update(loaded)
