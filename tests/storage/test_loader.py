"""The prefetching reader and background writer keep order and never swallow an error."""

from collections import namedtuple

import numpy as np
import pytest

from lrp.storage.loader import BackgroundWriter, prefetch

B = namedtuple("B", "images x")


def test_prefetch_keeps_order():
    items = [B(np.full((1, 2, 2, 3), i, np.uint8), i) for i in range(7)]
    assert [b.x for b in prefetch(iter(items), depth=2)] == list(range(7))


def test_prefetch_reraises_reader_errors():
    def bad():
        yield B(None, 0)
        raise OSError("corrupt shard x.h5")

    with pytest.raises(OSError, match="x.h5"):
        list(prefetch(bad()))


def test_background_writer_order_and_errors():
    out = []
    w = BackgroundWriter()
    for i in range(5):
        w.submit(out.append, i)
    w.close()
    assert out == list(range(5))
    w = BackgroundWriter()
    w.submit(lambda: (_ for _ in ()).throw(ValueError("disk full")))
    with pytest.raises(ValueError, match="disk full"):
        w.close()
