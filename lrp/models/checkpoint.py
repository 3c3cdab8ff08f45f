"""Model checkpoints that load with `torch.load(weights_only=True)`, and JSON model cards.

Why: a checkpoint is data, not code. It stores only tensors and plain types (the state dict, an
architecture name + constructor kwargs, preprocessing, class names, input size, name), so loading never
unpickles arbitrary objects; the module is rebuilt from the `ARCHS` registry. `bundle.checksum` is the
sha256 of the file, which ties every attribution result to the exact weights that produced it.
"""

from __future__ import annotations

import json
import math
import platform
import sys
from pathlib import Path

import torch

from lrp.io import atomic_path, sha256_file
from lrp.models.architectures import (  # noqa: F401  (register_arch: re-exported)
    ARCHS,
    register_arch,
)
from lrp.models.base import (
    ModelBundle,
    Preprocessing,
    WeightFileError,
    check_finite_state,
    check_state_dict,
    check_torch_archive,
)

FORMAT = "lrp-bench-bundle/1"


def _plain(obj, where: str):
    """Check that `obj` is JSON-like (what weights_only loading accepts and the model card can show)."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        bad = [k for k in obj if not isinstance(k, str)]
        if bad:
            raise TypeError(f"{where}: keys must be strings, got {bad[:3]}")
        return {k: _plain(v, f"{where}.{k}") for k, v in obj.items()}
    raise TypeError(f"{where}: {type(obj).__name__} is not a plain type (None/bool/int/float/str/list/dict)")


def _arch_of(bundle: ModelBundle, arch: str | None, arch_kwargs: dict | None) -> tuple[str, dict]:
    spec = getattr(bundle.module, "arch_spec", None) or bundle.info.get("arch")
    if arch is None:
        if not spec:
            raise ValueError(f"model {bundle.name!r}: no architecture known; pass arch= and arch_kwargs= "
                             f"(registered: {sorted(ARCHS)})")
        arch = spec["name"]
        if arch_kwargs is None:
            arch_kwargs = spec.get("kwargs", {})
    if arch not in ARCHS:
        raise ValueError(f"model {bundle.name!r}: architecture {arch!r} is not registered ({sorted(ARCHS)})")
    return arch, _plain(dict(arch_kwargs or {}), "arch_kwargs")


def save_bundle(bundle: ModelBundle, path, arch: str | None = None, arch_kwargs: dict | None = None) -> str:
    """Write `bundle` to `path` atomically; set and return `bundle.checksum` (sha256 of the file).

    The architecture comes from `module.arch_spec` (or `bundle.info["arch"]`) unless given explicitly.
    `bundle.info` is stored too and must hold plain types only.
    """
    arch, arch_kwargs = _arch_of(bundle, arch, arch_kwargs)
    state = {k: v.detach().cpu().clone() for k, v in bundle.module.state_dict().items()}
    info = _plain({k: v for k, v in bundle.info.items() if k != "arch"}, "bundle.info")
    # Interned: pickle writes a string once and refers back to it when the SAME object recurs, so an `arch` and a
    # `name` that are equal but distinct objects (one from a config file) would give other bytes, another sha256.
    payload = {
        "format": FORMAT,
        "arch": sys.intern(arch),
        "arch_kwargs": arch_kwargs,
        "state_dict": state,
        "preprocessing": bundle.preprocessing.to_dict(),
        "class_names": [str(c) for c in bundle.class_names],
        "input_size": int(bundle.input_size),
        "name": sys.intern(str(bundle.name)),
        "info": info,
    }
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(payload, f)  # a file object, not a name: torch puts the file's name into the archive
    bundle.checksum = sha256_file(path)
    return bundle.checksum


def load_bundle(path, map_location="cpu") -> ModelBundle:
    """Rebuild the eval-mode module from the registry and load its weights (strict, weights_only=True).

    Every key of the payload, the architecture's kwargs and each tensor's name, shape, dtype and finiteness (no NaN
    or ±Inf) are checked (against the network built on the meta device) before the network is allocated. Raises
    FileNotFoundError, or WeightFileError (a ValueError) naming the file, the key and the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model checkpoint not found")
    check_torch_archive(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the file name
        raise WeightFileError(f"{path}: not a loadable weights-only checkpoint ({type(e).__name__}: {e})") from e
    _check_payload(payload, path)
    arch, kwargs, state = payload["arch"], payload["arch_kwargs"], payload["state_dict"]
    check_state_dict(state, _expected_state(arch, kwargs, path), f"{path}: state_dict does not fit {arch}({kwargs})")
    _check_backed(state, path)
    check_finite_state(state, str(path))  # after _check_backed: a broadcast tensor would make it allocate its shape
    preprocessing = _preprocessing(payload["preprocessing"], path)
    module = ARCHS[arch](**kwargs)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise WeightFileError(f"{path}: weights do not fit architecture {arch!r}: {e}") from e
    module.eval()
    info = dict(payload.get("info", {}))
    info["arch"] = {"name": arch, "kwargs": kwargs}
    return ModelBundle(module=module, preprocessing=preprocessing,
                       input_size=int(payload["input_size"]), class_names=list(payload["class_names"]),
                       name=str(payload["name"]), checksum=sha256_file(path), info=info)


PAYLOAD = {"format": str, "arch": str, "arch_kwargs": dict, "state_dict": dict, "preprocessing": dict,
           "class_names": list, "input_size": int, "name": str, "info": dict}
"""The keys save_bundle writes and their types; only `info` may be absent."""
MAX_KWARGS_CHARS = 10_000
"""Longest repr of `arch_kwargs` accepted (the demo VGG's is ~100): a builder loops over them."""


def _check_payload(payload, path: Path) -> None:
    """Refuse anything but what save_bundle writes: another format, missing or extra keys, a value of another type
    or with non-plain contents, an unknown architecture. Raises WeightFileError."""
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        got = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise WeightFileError(f"{path}: not an lrp-bench model bundle (format {got!r}, expected {FORMAT!r})")
    missing = [k for k in PAYLOAD if k not in payload and k != "info"]
    extra = [k for k in payload if k not in PAYLOAD]
    if missing or extra:
        raise WeightFileError(f"{path}: {FORMAT} checkpoint with missing key(s) {missing} and unexpected key(s) "
                              f"{extra}; re-save the model with lrp.models.checkpoint.save_bundle")
    for key, kind in PAYLOAD.items():
        value = payload.get(key, {})
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise WeightFileError(f"{path}: {key!r} is a {type(value).__name__}, expected {kind.__name__}")
    if payload["arch"] not in ARCHS:
        raise WeightFileError(f"{path}: unknown architecture {payload['arch']!r}; registered: {sorted(ARCHS)}")
    for key in ("arch_kwargs", "info"):
        try:
            _plain(payload.get(key, {}), key)
        except TypeError as e:
            raise WeightFileError(f"{path}: {e}") from None
        except RecursionError:
            raise WeightFileError(f"{path}: {key!r} is nested too deeply to be constructor kwargs or info") from None
    if len(repr(payload["arch_kwargs"])) > MAX_KWARGS_CHARS:
        raise WeightFileError(f"{path}: 'arch_kwargs' is implausibly large (over {MAX_KWARGS_CHARS} characters)")
    bad = [i for i, c in enumerate(payload["class_names"]) if not isinstance(c, str)]
    if bad:
        raise WeightFileError(f"{path}: class_names[{bad[0]}] is a {type(payload['class_names'][bad[0]]).__name__}, "
                              f"expected a str")
    if payload["input_size"] < 1:
        raise WeightFileError(f"{path}: input_size {payload['input_size']} must be at least 1")


def _expected_state(arch: str, kwargs: dict, path: Path) -> dict[str, torch.Tensor]:
    """The state dict (names, shapes, dtypes) of `arch(**kwargs)`, built on the meta device: nothing is allocated
    however large the kwargs make the network. Raises WeightFileError if the builder refuses the kwargs."""
    try:
        with torch.device("meta"):
            return ARCHS[arch](**kwargs).state_dict()
    except (TypeError, ValueError) as e:
        raise WeightFileError(f"{path}: arch_kwargs {kwargs} do not fit architecture {arch!r}: {e}") from None


def _check_backed(state: dict[str, torch.Tensor], path: Path) -> None:
    """Refuse tensors holding more bytes than the file: broadcast (stride-0) or shared storages, with which a tiny
    file sizes (through its arch_kwargs) a huge network. save_bundle writes every tensor with its own storage."""
    held, size = sum(v.numel() * v.element_size() for v in state.values()), path.stat().st_size
    if held > size:
        raise WeightFileError(f"{path}: state_dict tensors hold {held} bytes, more than the file's {size} (broadcast "
                              f"or shared storages); re-save the model with lrp.models.checkpoint.save_bundle")


def _preprocessing(d: dict, path: Path) -> Preprocessing:
    """Preprocessing.from_dict of a checked dict: exactly mean, std (3 finite numbers each), channel_order."""
    keys = sorted(map(str, d))
    if keys != ["channel_order", "mean", "std"]:
        raise WeightFileError(f"{path}: 'preprocessing' has keys {keys}, expected ['channel_order', 'mean', 'std']")
    for key in ("mean", "std"):
        v = d[key]
        if not (isinstance(v, (list, tuple)) and len(v) == 3 and all(_finite_number(x) for x in v)):
            raise WeightFileError(f"{path}: preprocessing.{key} is {v!r}, expected 3 finite numbers")
    try:
        return Preprocessing.from_dict(d)
    except ValueError as e:  # std <= 0, channel_order not RGB/BGR
        raise WeightFileError(f"{path}: preprocessing: {e}") from None


def _finite_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _versions() -> dict:
    import numpy

    import lrp

    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
            "lrp": lrp.__version__}


def _json_default(o):
    if hasattr(o, "item"):  # numpy / torch scalars
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def write_model_card(card: dict, path) -> dict:
    """Write a model card (JSON, atomic): name, checksum, metrics, thresholds, training history, versions.

    `versions` is filled in when absent. NaN/inf are written as null (strict JSON). Returns the card written.
    """
    missing = [k for k in ("name", "checksum") if not card.get(k)]
    if missing:
        raise ValueError(f"model card for {path}: missing required field(s) {missing}")
    card = {"metrics": {}, "thresholds": {}, "history": [], **card}
    card.setdefault("versions", _versions())
    text = json.dumps(_finite(json.loads(json.dumps(card, default=_json_default))), indent=2, sort_keys=True,
                      allow_nan=False)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text + "\n")
    return json.loads(text)


def _finite(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    return obj
