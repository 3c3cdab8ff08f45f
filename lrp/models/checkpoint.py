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
from collections.abc import Callable
from pathlib import Path

import torch

from lrp.io import atomic_path
from lrp.models.base import ModelBundle, Preprocessing, sha256_file
from lrp.models.demo import DemoVGG

FORMAT = "lrp-bench-bundle/1"

# name -> builder(**kwargs) -> nn.Module. Other architectures register themselves via `register_arch`.
def _alexnet_multilabel(**kw) -> torch.nn.Module:
    from lrp.models.finetune import alexnet_multilabel  # lazy: finetune imports this module

    return alexnet_multilabel(**kw)


ARCHS: dict[str, Callable[..., torch.nn.Module]] = {"demo_vgg": DemoVGG,
                                                    "torchvision_alexnet_multilabel": _alexnet_multilabel}


def register_arch(name: str, builder: Callable[..., torch.nn.Module]) -> None:
    """Make `name` loadable; re-registering the same builder is a no-op, a different one an error."""
    if name in ARCHS and ARCHS[name] is not builder:
        raise ValueError(f"architecture {name!r} is already registered to {ARCHS[name]!r}")
    ARCHS[name] = builder


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
    payload = {
        "format": FORMAT,
        "arch": arch,
        "arch_kwargs": arch_kwargs,
        "state_dict": state,
        "preprocessing": bundle.preprocessing.to_dict(),
        "class_names": [str(c) for c in bundle.class_names],
        "input_size": int(bundle.input_size),
        "name": str(bundle.name),
        "info": info,
    }
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(payload, f)  # a file object, not a name: torch puts the file's name into the archive
    bundle.checksum = sha256_file(path)
    return bundle.checksum


def load_bundle(path, map_location="cpu") -> ModelBundle:
    """Rebuild the eval-mode module from the registry and load its weights (strict, weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model checkpoint not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the file name
        raise ValueError(f"{path}: not a loadable weights-only checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        got = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path}: not an lrp-bench model bundle (format {got!r}, expected {FORMAT!r})")
    arch = payload["arch"]
    if arch not in ARCHS:
        raise ValueError(f"{path}: unknown architecture {arch!r}; registered: {sorted(ARCHS)}")
    module = ARCHS[arch](**payload["arch_kwargs"])
    try:
        module.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not fit architecture {arch!r}: {e}") from e
    module.eval()
    info = dict(payload.get("info", {}))
    info["arch"] = {"name": arch, "kwargs": payload["arch_kwargs"]}
    return ModelBundle(module=module, preprocessing=Preprocessing.from_dict(payload["preprocessing"]),
                       input_size=int(payload["input_size"]), class_names=list(payload["class_names"]),
                       name=str(payload["name"]), checksum=sha256_file(path), info=info)


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
