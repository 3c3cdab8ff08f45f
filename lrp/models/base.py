"""What every model of the study carries besides its weights: input preprocessing and identity."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch


@dataclass(frozen=True)
class Preprocessing:
    """uint8 RGB NHWC images -> float NCHW model input: (pixel[channel_order] - mean) / std.

    `mean` and `std` are in 0–255 units and in `channel_order`. Why here and not in the data: the paper's
    models differ (Keras VGG-16 wants BGR minus the Caffe mean; torchvision wants RGB mean/std), while the
    image shards stay model-independent. The training-set mean maps to exactly 0, which is what the
    occlusion check (Fig. 2) substitutes.
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    channel_order: str = "RGB"

    def __post_init__(self):
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {self.channel_order!r}")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")

    def __call__(self, images: torch.Tensor, device=None, dtype=torch.float32) -> torch.Tensor:
        """Convert a uint8 (N, H, W, 3) RGB tensor (or array) to the model's float input (N, 3, H, W)."""
        x = torch.as_tensor(images)
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"expected uint8 images of shape (N, H, W, 3), got {tuple(x.shape)}")
        x = x.to(device=device, non_blocking=True).permute(0, 3, 1, 2).to(dtype)
        if self.channel_order == "BGR":
            x = x.flip(1)
        mean = torch.tensor(self.mean, device=x.device, dtype=dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=dtype).view(1, 3, 1, 1)
        return ((x - mean) / std).contiguous()

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std), "channel_order": self.channel_order}

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        return cls(tuple(map(float, d["mean"])), tuple(map(float, d["std"])), str(d["channel_order"]))


@dataclass
class ModelBundle:
    """A ready-to-explain model: eval-mode module without softmax, its preprocessing and provenance."""

    module: torch.nn.Module
    preprocessing: Preprocessing
    input_size: int
    class_names: list[str]
    name: str
    checksum: str = ""  # sha256 of the weight file the module was loaded from
    info: dict = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


class WeightFileError(ValueError):
    """A weight file whose content does not fit the network it is loaded into; the message names file and key."""


def check_torch_archive(path: str | Path) -> None:
    """Refuse a torch.save zip archive with compressed members, before torch.load reads it.

    Why: torch.save stores its members uncompressed, but torch.load also inflates deflated ones, so a 5 KB file
    can make it allocate gigabytes. Stored members hold at most the file's own bytes. Legacy (non-zip) files
    hold their tensors as raw bytes too. Raises WeightFileError.
    """
    try:
        with zipfile.ZipFile(path) as z:
            packed = [i.filename for i in z.infolist() if i.compress_type != zipfile.ZIP_STORED]
    except (zipfile.BadZipFile, OSError):
        return  # not a zip archive: torch.load reads (or refuses) it with its own message
    if packed:
        raise WeightFileError(f"{path}: compressed archive member(s) {packed[:3]}; torch.save writes uncompressed "
                              f"archives and torch.load would inflate these in memory. Re-save the weights with "
                              f"torch.save")


def check_state_dict(state, expected: dict[str, torch.Tensor], where: str) -> None:
    """Refuse a state dict that `load_state_dict(strict=True)` would not copy exactly: another type, missing or extra
    keys, a value that is not a dense tensor, another shape or dtype (copy_ would cast it silently).

    `expected` is the network's own state dict (from a module built on the meta device: nothing allocated);
    `where` starts every message (file and what it should be). Raises WeightFileError.
    """
    if not isinstance(state, dict):
        raise WeightFileError(f"{where}: a {type(state).__name__}, expected a dict of tensors by parameter name")
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    if missing or extra:
        listed = [f"{what} key(s) {keys[:5]}" + (f" ({len(keys)} in all)" if len(keys) > 5 else "")
                  for what, keys in (("missing", missing), ("unexpected", extra)) if keys]
        raise WeightFileError(f"{where}: {', '.join(listed)}")
    for k, ref in expected.items():
        v = state[k]
        if not isinstance(v, torch.Tensor) or v.layout != torch.strided:
            kind = f"{v.layout} tensor" if isinstance(v, torch.Tensor) else type(v).__name__
            raise WeightFileError(f"{where}: {k!r} is a {kind}, expected a dense {ref.dtype} tensor")
        if v.shape != ref.shape:
            raise WeightFileError(f"{where}: {k!r} has shape {tuple(v.shape)}, expected {tuple(ref.shape)}")
        if v.dtype != ref.dtype:
            raise WeightFileError(f"{where}: {k!r} has dtype {v.dtype}, expected {ref.dtype}")


def non_finite_problem(values: torch.Tensor) -> str | None:
    """'N of M values are non-finite (a NaN, b ±Inf)' if the float tensor `values` holds NaN or ±Inf, else None.

    Why: such weights load without complaint and turn every attribution map into NaN much later. The normal case
    (all finite) costs one `torch.isfinite(values).all()` pass; the values are counted only for the message.
    Every weight loader (zoo, checkpoint, Keras, Caffe) words its refusal with this.
    """
    if not (values.is_floating_point() or values.is_complex()) or bool(torch.isfinite(values).all()):
        return None
    n_nan, n_bad = int(torch.isnan(values).sum()), int((~torch.isfinite(values)).sum())
    return f"{n_bad} of {values.numel()} values are non-finite ({n_nan} NaN, {n_bad - n_nan} ±Inf)"


def check_finite_state(state: dict[str, torch.Tensor], where: str) -> None:
    """Refuse a state dict (already passed by check_state_dict) whose floating tensors hold NaN or ±Inf.

    Separate from check_state_dict so that callers first rule out broadcast tensors (a stride-0 tensor of a huge
    shape would make the isfinite pass allocate its full size). Raises WeightFileError naming `where` (the file),
    the key and how many values are non-finite.
    """
    for key, value in state.items():
        if problem := non_finite_problem(value):
            raise WeightFileError(f"{where}: {key!r}: {problem}; such weights give NaN attribution maps "
                                  "(a corrupt file or a diverged training run?)")


def pick_device(name: str = "auto") -> torch.device:
    """`auto` = CUDA when available; asking for CUDA without it is an error, not a silent CPU run."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"config asks for device {name!r} but CUDA is not available on this machine")
    return torch.device(name)


