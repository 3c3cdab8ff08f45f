"""PatternAttribution patterns (Kindermans et al. 2018), type "relu", as iNNvestigate 1.x computes them.

For every Conv2d/Linear layer of the canonized graph (BatchNorm merged, `lrp.graph`) and output neuron j, with
x its input patch (of its group's input channels, for a grouped conv), y = wⱼᵀx (no bias) and the
mask m = 1[output after the activation > 0] (= 1[zⱼ > 0], bias included; for the logit layer logit > 0):
    E₊[x] = Σ m x / Σ m,  E₊[xy] = Σ m x y / Σ m,  E[y] = Σ y / N  (unmasked, as in iNNvestigate)
    cov = E₊[xy] − E₊[x]·E[y],  aⱼ = cov / (wⱼᵀ cov)   (a zero denominator is replaced by 1)
so that wⱼᵀaⱼ = 1 for every neuron that was ever active. PatternAttribution then back-propagates with
weights w ⊙ a (see `lrp.rules.Gradient(pattern=True)`). Statistics accumulate in float64 over batches.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Iterable

import h5py
import numpy as np
import torch
import torch.nn.functional as F

from lrp.graph import compile_model, forward_trace
from lrp.io import atomic_path


class _Stats:
    """Running sums for the patterns of one layer, per group of a grouped conv (G = 1 otherwise): output
    channel j of group g = j // (C_out / G) sees only that group's input channels."""

    def __init__(self, groups: int, c_group: int, d: int, device):
        kw = dict(dtype=torch.float64, device=device)
        self.m = torch.zeros(groups, c_group, **kw)
        self.mx = torch.zeros(groups, c_group, d, **kw)
        self.mxy = torch.zeros(groups, c_group, d, **kw)
        self.y = torch.zeros(groups, c_group, **kw)
        self.n = 0

    def add(self, X: torch.Tensor, Y: torch.Tensor, M: torch.Tensor):
        """X (G, P, D) patches, Y (G, P, C/G) bias-free outputs, M (G, P, C/G) masks; P = samples × positions."""
        X, Y, M = X.double(), Y.double(), M.double()
        self.m += M.sum(1)
        self.mx += M.transpose(1, 2) @ X
        self.mxy += (M * Y).transpose(1, 2) @ X
        self.y += Y.sum(1)
        self.n += X.shape[1]

    def pattern(self, w: torch.Tensor) -> torch.Tensor:
        denom = self.m.clamp(min=1)[..., None]
        cov = self.mxy / denom - (self.mx / denom) * (self.y / max(self.n, 1))[..., None]
        cov = cov.reshape(w.shape[0], -1)
        wcov = (w.reshape(w.shape[0], -1).double() * cov).sum(1, keepdim=True)
        return (cov / torch.where(wcov == 0, torch.ones_like(wcov), wcov)).reshape(w.shape)


def _by_group(t: torch.Tensor, groups: int) -> torch.Tensor:
    """(P, G·K) → (G, P, K)."""
    return t.reshape(t.shape[0], groups, -1).transpose(0, 1)


def compute(model: torch.nn.Module, batches: Iterable[torch.Tensor], log=None) -> dict[str, torch.Tensor]:
    """Patterns {layer name: tensor shaped like its weight} from preprocessed input batches (N, C, H, W)."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    stats: dict[int, _Stats] = {}
    layers = None
    n_images, t0 = 0, time.time()
    with torch.no_grad():
        for x in batches:
            layers = layers or compile_model(model, x)
            trace = forward_trace(layers, x)
            for layer in layers:
                if layer.kind not in ("conv", "linear"):
                    continue
                m, a, z = layer.module, trace.inputs[layer.index], trace.outputs[layer.index]
                groups = m.groups if layer.kind == "conv" else 1
                if layer.kind == "conv":
                    X = F.unfold(a, m.kernel_size, m.dilation, m.padding, m.stride)  # (N, D, L)
                    X = X.transpose(1, 2).reshape(-1, X.shape[1])
                    zc = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
                else:
                    X, zc = a, z
                b = m.bias if m.bias is not None else torch.zeros(zc.shape[1], dtype=zc.dtype, device=zc.device)
                X, Y, M = _by_group(X, groups), _by_group(zc - b, groups), _by_group(zc > 0, groups)
                st = stats.setdefault(layer.index, _Stats(groups, Y.shape[2], X.shape[2], zc.device))
                st.add(X, Y, M)
            n_images += x.shape[0]
            log(f"patterns: {n_images} images, {n_images / (time.time() - t0):.1f} img/s")
    if layers is None:
        raise ValueError("no batches given: patterns need training images")
    return {layer.name: stats[layer.index].pattern(layer.module.weight.detach()).to(layer.module.weight.dtype)
            for layer in layers if layer.index in stats}


def save(patterns: dict[str, torch.Tensor], path: str | Path, **attrs) -> None:
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for name, a in patterns.items():
            f.create_dataset(name, data=a.detach().cpu().numpy(), compression="gzip")
        for k, v in attrs.items():
            f.attrs[k] = v


def load(path: str | Path, device=None) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"pattern file {path} does not exist (run the 'patterns' rule first)")
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name.replace("/", "."), obj[()])
                     if isinstance(obj, h5py.Dataset) else None)
    return {k: torch.from_numpy(np.asarray(v)).to(device) for k, v in out.items()}
