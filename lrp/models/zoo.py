"""Model zoo: one config entry (`models.<name>`) -> a ready-to-explain ModelBundle.

Why one entry point: every pipeline step gets its model the same way, frozen and in eval mode, with the
preprocessing that belongs to the weights. Weight files are read without unpickling code (h5py, or torch.load with
weights_only=True), and torchvision files are checked against the sha256 prefix in their name, as torch.hub does.

Spec keys: `arch` (below), `weights` (path), optional `name` (the config key, used in messages and as the bundle
name) and, for keras_vgg16, `verify` (MD5 check of the official file).
- keras_vgg16: the paper's network, Keras model-zoo h5 (lrp.models.keras).
- torchvision_vgg16 / torchvision_alexnet / torchvision_vgg16_bn / torchvision_resnet50 / torchvision_densenet121:
  torchvision state dicts (`vgg16-397923af.pth`, `alexnet-owt-7be5be79.pth`, `vgg16_bn-6c64b313.pth`,
  `resnet50-0676ba61.pth` or `resnet50-11ad3fa6.pth`, `densenet121-a639ec97.pth`; DenseNet's old key names
  `norm.1` are renamed `norm1` as torchvision does; a file without BatchNorm's `num_batches_tracked` counters,
  unused in eval mode, gets zeros). The BatchNorm nets are explained by the graph engine with their norms merged
  (lrp.canonizers). NOTE torchvision's own eval transform is resize short side 256 + centre crop 224;
  the study uses short side -> 224 + centre crop 224 for every model (paper protocol), so accuracies differ
  slightly from torchvision's published ones.
- checkpoint: a bundle saved by the project (lrp.models.checkpoint.load_bundle), e.g. the VOC-finetuned model.
- caffe: a Caffe deployment net (lrp.models.caffe), e.g. the paper's original PVOC CaffeNet: `weights` = the
  .caffemodel, `prototxt` = the deploy .prototxt, optional `mean` (B, G, R in 0–255; default the ImageNet mean
  pixel). Classes: VOC for 20 outputs, ImageNet WNIDs for 1000. See docs/models.md.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torchvision
from torch import nn

from lrp.io import sha256_file
from lrp.models.base import (
    ModelBundle,
    Preprocessing,
    WeightFileError,
    check_finite_state,
    check_state_dict,
    check_torch_archive,
)
from lrp.models.keras import imagenet_class_names, keras_vgg16_bundle

#: torchvision's ImageNet normalisation in 0–255 units (RGB).
TORCHVISION_PREPROCESSING = Preprocessing(
    mean=tuple(255 * m for m in (0.485, 0.456, 0.406)),
    std=tuple(255 * s for s in (0.229, 0.224, 0.225)),
    channel_order="RGB",
)
#: arch -> (constructor, official weight file name)
TORCHVISION_ARCHS = {
    "torchvision_vgg16": (torchvision.models.vgg16, "vgg16-397923af.pth"),
    "torchvision_alexnet": (torchvision.models.alexnet, "alexnet-owt-7be5be79.pth"),
    "torchvision_vgg16_bn": (torchvision.models.vgg16_bn, "vgg16_bn-6c64b313.pth"),
    "torchvision_resnet50": (torchvision.models.resnet50, "resnet50-0676ba61.pth"),
    "torchvision_densenet121": (torchvision.models.densenet121, "densenet121-a639ec97.pth"),
}
#: torchvision's own renaming of DenseNet's pre-0.4 keys (torchvision.models.densenet._load_state_dict)
_DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)
ARCHS = ("keras_vgg16", *TORCHVISION_ARCHS, "checkpoint", "caffe")
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,})\.")  # torch.hub's HASH_REGEX, at least 8 hex digits


def load_model(spec: dict, device=None) -> ModelBundle:
    """Load `spec` (one `models.<name>` config entry), on `device` if given (default: the CPU); errors name
    the config key and the file."""
    name = spec.get("name", spec.get("arch", "?"))
    arch = spec.get("arch")
    if arch not in ARCHS:
        raise ValueError(f"models.{name}.arch: unknown architecture {arch!r}; expected one of {list(ARCHS)}")
    if not spec.get("weights"):
        raise ValueError(f"models.{name}.weights: required for arch {arch!r}")
    path = Path(spec["weights"])
    if not path.is_file():
        raise FileNotFoundError(f"models.{name}.weights: file not found: {path}")

    if arch == "keras_vgg16":
        bundle = keras_vgg16_bundle(path, verify=bool(spec.get("verify", False)))
    elif arch == "checkpoint":
        from lrp.models.checkpoint import (
            load_bundle,  # lazy: written separately, needed only here
        )

        bundle = load_bundle(path)
    elif arch == "caffe":
        bundle = _caffe_bundle(name, spec, path)
    else:
        bundle = _torchvision_bundle(arch, path)
    if "name" in spec:
        bundle.name = str(spec["name"])
    bundle = _frozen(bundle)
    if device is not None:
        bundle.module.to(device)
    return bundle


def _caffe_bundle(name: str, spec: dict, path: Path) -> ModelBundle:
    from lrp.models.caffe import (
        caffe_bundle,  # lazy: needs protobuf, only for Caffe models
    )

    if not spec.get("prototxt"):
        raise ValueError(f"models.{name}.prototxt: required for arch 'caffe' (the deploy .prototxt)")
    prototxt = Path(spec["prototxt"])
    if not prototxt.is_file():
        raise FileNotFoundError(f"models.{name}.prototxt: file not found: {prototxt}")
    mean = spec.get("mean")
    if mean is not None and (not isinstance(mean, (list, tuple)) or len(mean) != 3
                             or not all(isinstance(m, (int, float)) for m in mean)):
        raise ValueError(f"models.{name}.mean: expected 3 numbers (B, G, R in 0–255), got {mean!r}")
    return caffe_bundle(path, prototxt, mean=mean)


def _torchvision_bundle(arch: str, path: Path) -> ModelBundle:
    """A torchvision ImageNet model from its state-dict file, after torch.hub's sha256-prefix check.

    The file is read with weights_only=True (no code unpickled) and every tensor's name, shape and dtype is checked
    against the network (built on the meta device), and its values for NaN/±Inf, before any parameter memory is
    allocated. Raises WeightFileError (a ValueError) naming the file and the key.
    """
    build, official = TORCHVISION_ARCHS[arch]
    match = _HASH_IN_NAME.search(path.name)
    if match is None:
        raise ValueError(f"{path}: file name carries no sha256 prefix to verify (expected like {official!r})")
    prefix, digest = match.group(1), sha256_file(path)
    if not digest.startswith(prefix):
        raise ValueError(f"{path}: sha256 {digest} does not start with the prefix {prefix!r} in its name; "
                         "the file is corrupt or not the one named")
    check_torch_archive(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
        raise WeightFileError(f"{path}: cannot load as a torch state dict (weights_only=True): {e}") from e
    with torch.device("meta"):
        module = build(weights=None)  # no random init of 100M+ parameters; load_state_dict fills every tensor
    state = _torchvision_key_fixes(arch, state, module.state_dict(), path)
    check_state_dict(state, module.state_dict(), f"{path}: not a {arch} state dict")  # before allocating the network
    check_finite_state(state, str(path))
    module = module.to_empty(device="cpu")
    try:
        module.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError) as e:
        raise WeightFileError(f"{path}: not a {arch} state dict: {e}") from e
    return ModelBundle(
        module=module,
        preprocessing=TORCHVISION_PREPROCESSING,
        input_size=224,
        class_names=imagenet_class_names(),
        name=arch,
        checksum=digest,
        info={"source": str(path), "format": "torch_state_dict", "official_weights": path.name == official},
    )


def _torchvision_key_fixes(arch: str, state, expected: dict, path: Path) -> dict:
    """torchvision's published files as torchvision itself loads them: DenseNet's old key names renamed, and
    BatchNorm's step counter (`num_batches_tracked`, read only in training) added as 0 where a file lacks it.
    Anything else missing or extra is left for check_state_dict to refuse; an old and a new name for the same
    tensor is refused here (WeightFileError), so neither can silently replace the other."""
    if not isinstance(state, dict):
        return state
    if arch == "torchvision_densenet121":
        renamed = {}
        for k, v in state.items():
            m = _DENSENET_OLD_KEY.match(k) if isinstance(k, str) else None
            new = m.group(1) + m.group(2) if m else k
            if new in renamed:
                raise WeightFileError(f"{path}: keys {k!r} and {new!r} name the same tensor (old and new DenseNet "
                                      f"key names both present)")
            renamed[new] = v
        state = renamed
    counters = {k: torch.zeros((), dtype=torch.long) for k in expected
                if k.endswith(".num_batches_tracked") and k not in state}
    return {**state, **counters} if counters else state


def _frozen(bundle: ModelBundle) -> ModelBundle:
    """Eval mode, no parameter gradients, out-of-place ReLUs.

    Why out-of-place: attribution hooks need each layer's output unmodified; torchvision's in-place ReLUs overwrite
    the preceding conv's output (and full backward hooks refuse in-place edits). The forward result is identical.
    """
    module = bundle.module.eval()
    for param in module.parameters():
        param.requires_grad_(False)
    for m in module.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    return bundle
