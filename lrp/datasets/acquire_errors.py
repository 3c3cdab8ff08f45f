"""The two errors of data acquisition (download, extract, acquire), in a module of their own.

Why apart: the download, the extraction and the sources (`lrp.datasets.acquire`) all raise them, and the
pipeline's runner tells "worth a later re-run" from "the user has to act" by these classes alone, so they
must not live in any one of those modules (the download's verification needs the extraction's archive check,
and the extraction must not depend on the network code).
"""

from __future__ import annotations


class AcquisitionError(RuntimeError):
    """A download, checksum, extraction or layout problem the user has to act on."""


class TransientAcquisitionError(AcquisitionError):
    """A download that failed for network reasons after all retries (connection errors, timeouts, 5xx,
    truncated bodies): running again later may succeed. Everything else (bad archive, checksum mismatch,
    web page instead of the file, disk full) is a plain `AcquisitionError`: running again cannot help."""
