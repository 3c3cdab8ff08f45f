"""Config entries as the Snakefile hands them to the stages: validated, with the schema's defaults filled in
(config/schema.yaml is the one place a default lives; stages read keys, never `.get(key, default)`)."""

from __future__ import annotations

import copy
from pathlib import Path

from lrp.pipeline.config import fill_defaults

SCHEMA = Path(__file__).resolve().parents[1] / "config" / "schema.yaml"


def dataset_entry(**keys) -> dict:
    """`datasets.<name>` with `keys` and every default the schema gives (by format and source, too)."""
    cfg = {"results": "results", "datasets": {"d": copy.deepcopy(keys)}, "analyzers": {"lrp_z": {}},
           "models": {"m": {"arch": "checkpoint", "bias": "innvestigate", "weights": "m.pt"}}}
    return fill_defaults(cfg, SCHEMA)["datasets"]["d"]
