"""Some rows of an attribution shard: the perturbation stage needs the maps of its selected units only (about
1,000 of 50,000), and reading a whole shard decompresses every map.

A module of its own rather than an argument of `lrp.storage.attributions.read_shard`: the attribution stage
imports that module, and editing a module a stage imports re-runs the stage (lrp.pipeline.provenance).
"""

from __future__ import annotations

import h5py
import numpy as np

from lrp.storage.attributions import _relevance


def read_rows(path, rows) -> tuple[np.ndarray, np.ndarray]:
    """(every sample_id of the shard, relevance (len(rows), H, W) float32 of the given increasing row indices)."""
    rows = np.asarray(rows, dtype=np.int64)
    with h5py.File(path, "r") as f:
        ids = f["sample_id"].asstr()[:]
        if not len(rows):
            return ids, np.zeros((0, *f["relevance"].shape[1:]), np.float32)
        return ids, _relevance(f, rows)
