"""The engine's unit: a `Layer`, one node of the model's graph, and the small modules of functional nodes.

Why modules for functional calls too: a rule reads `layer.module` for its hyper-parameters (a pool's kernel,
a concatenation's axis), so `torch.cat(xs, 1)` becomes `Concat(1)`, `F.adaptive_avg_pool2d(x, 1)` an
`nn.AdaptiveAvgPool2d(1)`, `a + b` a `Sum()`, whether the model wrote a module or a function.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

MULTI_INPUT = ("add", "cat")
"""Kinds whose layer has several inputs: `Trace.inputs[i]` is then a tuple, and their rules return one
relevance per input."""


class UnsupportedModelError(TypeError):
    """The model contains a module, an operation or a forward pass the engine cannot explain faithfully."""


@dataclass(frozen=True, eq=False)
class Layer:
    """One node of the explained graph, in topological order (`index`; inputs before the layers using them).

    `parents`: the indices of the layers whose outputs are this layer's inputs, in argument order; -1 is the
    model's input. `name`: the module's qualified name (a functional call: fx's node name, e.g. 'add_3'); a
    conv/linear layer with a BatchNorm merged into it keeps the conv's name and lists the norm in `merged`.
    """

    index: int
    name: str
    module: nn.Module
    kind: str
    kernel_index: int | None = None  # position among conv/linear layers (0 = closest to the input)
    conv_index: int | None = None  # position among conv layers
    input_nonneg: bool = False  # every input is a ReLU's output, possibly through sign-keeping layers
    parents: tuple[int, ...] = ()
    merged: tuple[str, ...] = ()  # BatchNorms folded into this conv/linear layer (lrp.canonizers)


class Sum(nn.Module):
    """a + b (+ …): a residual connection."""

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


class Concat(nn.Module):
    """torch.cat(xs, dim)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class ReshapeTo(nn.Module):
    """x.view(shape) / x.reshape(shape), where 'N' in `shape` stands for the batch size (x.size(0))."""

    def __init__(self, shape: tuple):
        super().__init__()
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(tuple(x.shape[0] if s == "N" else s for s in self.shape))

    def extra_repr(self) -> str:
        return f"shape={self.shape}"
