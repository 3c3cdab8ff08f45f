"""Canonization: BatchNorm folded into the convolution or linear layer before it, for explaining only.

Why: in eval mode a BatchNorm is an affine map per channel, y = s·x + t with s = γ/√(σ² + eps) and
t = β − μ·s. Directly after a conv/linear layer whose output feeds only it, the pair is ONE linear layer
with weight w·s and bias b·s + t; LRP's rules are defined on such layers (zennit's `SequentialMergeBatchNorm`
does the same, by editing the model in place and undoing it afterwards). Here the merged layer is a new
module: the user's model is never modified. A BatchNorm anywhere else (DenseNet's pre-activation norm after
a concatenation) stays an elementwise affine layer of its own (`ChannelAffine`; its rules in `lrp.rules`,
docs/lrp_rules.md).
"""

from __future__ import annotations

import torch
from torch import nn


class UnsupportedBatchNorm(ValueError):
    """A BatchNorm that is not a fixed affine map (training mode, or no running statistics)."""


def batchnorm_scale_shift(bn: nn.modules.batchnorm._BatchNorm, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(s, t) of the eval-mode BatchNorm `bn`: y = s·x + t per channel. Raises UnsupportedBatchNorm for a
    BatchNorm in training mode or without running statistics (its output then depends on the batch)."""
    if bn.training:
        raise UnsupportedBatchNorm(f"BatchNorm '{name}' is in training mode (it normalises by the batch's "
                                   f"statistics): call model.eval() before explaining it")
    if bn.running_mean is None or bn.running_var is None:
        raise UnsupportedBatchNorm(f"BatchNorm '{name}' has no running statistics (track_running_stats=False), "
                                   f"so it normalises by each batch's statistics: not a fixed layer to explain")
    with torch.no_grad():
        s = torch.rsqrt(bn.running_var + bn.eps)
        if bn.weight is not None:
            s = s * bn.weight
        t = -bn.running_mean * s
        if bn.bias is not None:
            t = t + bn.bias
    return s.detach(), t.detach()


def merge_batchnorm(layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm, name: str) -> nn.Module:
    """A new Conv2d/Linear computing bn(layer(x)): weight w·s (per output channel), bias b·s + t."""
    s, t = batchnorm_scale_shift(bn, name)
    w = layer.weight.detach()
    b = layer.bias.detach() if layer.bias is not None else torch.zeros_like(t)
    if isinstance(layer, nn.Conv2d):
        merged = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                           layer.dilation, layer.groups, bias=True, device=w.device, dtype=w.dtype)
        scale = s.view(-1, 1, 1, 1)
    else:
        merged = nn.Linear(layer.in_features, layer.out_features, bias=True, device=w.device, dtype=w.dtype)
        scale = s.view(-1, 1)
    with torch.no_grad():
        merged.weight.copy_(w * scale)
        merged.bias.copy_(b * s + t)
    merged.requires_grad_(False)
    return merged.eval()


class ChannelAffine(nn.Module):
    """y = scale·x + shift per channel (dim 1): an eval-mode BatchNorm that no conv/linear layer absorbs."""

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor):
        super().__init__()
        self.register_buffer("scale", scale)
        self.register_buffer("shift", shift)

    def expand(self, v: torch.Tensor, ndim: int) -> torch.Tensor:
        return v.view((1, -1) + (1,) * (ndim - 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.expand(self.scale, x.ndim) + self.expand(self.shift, x.ndim)


def affine_of(bn: nn.modules.batchnorm._BatchNorm, name: str) -> ChannelAffine:
    s, t = batchnorm_scale_shift(bn, name)
    return ChannelAffine(s, t).eval()


def state_key(modules) -> tuple:
    """What a merged layer depends on: each parameter and buffer's identity and in-place version, and the
    settings copied with them (BatchNorm eps and mode, a conv's geometry). Why: a merge is a copy; after
    `optimizer.step()`, `load_state_dict` or `bn.eps = …` the cached merge must be rebuilt."""
    return tuple(
        (
            m.training,
            tuple(getattr(m, a, None) for a in _COPIED_SETTINGS),
            tuple((id(p), p._version) for p in (*m.parameters(recurse=False), *m.buffers(recurse=False))),
        )
        for m in modules
    )


_COPIED_SETTINGS = ("eps", "stride", "padding", "dilation", "groups")
