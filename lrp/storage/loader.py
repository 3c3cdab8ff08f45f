"""Keep the accelerator busy: read the next batch and write the last one while the current one computes.

A reader thread decodes shard batches (h5py, numpy) and pins them; a writer thread stores finished maps
(`lrp.storage.attributions.ShardWriter`, whose pool of threads compresses them). h5py serialises its own calls, but both
threads overlap with GPU work, which is what matters for the attribution jobs.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Callable, Iterable, Iterator

import torch

_DONE = object()


def prefetch(batches: Iterable, depth: int = 2, pin: bool = False) -> Iterator:
    """Iterate `batches` in a background thread, `depth` batches ahead (uint8 images pinned if asked)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work():
        try:
            for b in batches:
                if stop.is_set():
                    return
                if pin and b.images is not None:
                    b = b._replace(images=torch.from_numpy(b.images).pin_memory())
                q.put(b)
            q.put(_DONE)
        except BaseException as e:  # surface reader errors (corrupt shard) in the consumer
            q.put(e)

    t = threading.Thread(target=work, daemon=True)
    t.start()
    try:
        while (item := q.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while t.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                t.join(timeout=0.05)


class BackgroundWriter:
    """Run `fn(*args)` calls in order on one background thread; `close()` waits and re-raises errors.

    `busy_s` is the thread's time spent in calls: above the wall time of the work it overlaps with, the
    writer is what limits the job.
    """

    def __init__(self, depth: int = 4):
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self.busy_s = 0.0
        self._t = threading.Thread(target=self._work, daemon=True)
        self._t.start()

    def _work(self):
        while (item := self._q.get()) is not _DONE:
            if self._error is None:
                tic = time.perf_counter()
                try:
                    item[0](*item[1])
                except BaseException as e:
                    self._error = e
                self.busy_s += time.perf_counter() - tic

    def submit(self, fn: Callable, *args) -> None:
        if self._error is not None:
            raise self._error
        self._q.put((fn, args))

    def close(self) -> None:
        self._q.put(_DONE)
        self._t.join()
        if self._error is not None:
            raise self._error
