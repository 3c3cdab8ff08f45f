"""The engine's graph of a torch CNN, and its forward pass run once for all analyzers.

Why one recorded forward pass: every analyzer of the study back-propagates through the same layers, so each
layer's input and output, recorded once, serve all of them. The graph comes from torch.fx (`lrp.tracing`:
residual sums, concatenations and functional calls included; BatchNorm folded into the conv before it by
`lrp.canonizers`) and is checked once against the model's own `forward`, so an operation the engine
misreads cannot silently give wrong maps. LocalResponseNorm (CaffeNet) is a layer kind of its own: LRP passes
relevance through it unchanged, the gradient family uses its true gradient (`lrp.rules`, docs/models.md).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from lrp import kernels as _kernels
from lrp import tracing
from lrp.layers import MULTI_INPUT, Layer, UnsupportedModelError

KINDS = tracing.MODULE_KINDS
"""Module types the engine explains (and the kind each becomes); functional calls: see `lrp.tracing`."""


def layers_of(model: nn.Module) -> list[Layer]:
    """The model's explained graph: its layers in topological order, BatchNorms merged; raises
    UnsupportedModelError for anything the engine cannot explain (naming the node and its operation)."""
    return tracing.trace_layers(model)[0]


@dataclass
class Trace:
    """One forward pass: the input and output of every layer, plus a cache of quantities rules share."""

    layers: list[Layer]
    inputs: list[torch.Tensor]
    outputs: list[torch.Tensor]
    indices: dict[int, torch.Tensor] = field(default_factory=dict)  # max-pool argmax per layer
    cache: dict = field(default_factory=dict)
    kernels: _kernels.Eager | _kernels.Fused = _kernels.EAGER  # the rules' elementwise steps (lrp.kernels)
    input_shape: tuple = ()  # the model's input (layer parent -1)

    @property
    def logits(self) -> torch.Tensor:
        return self.outputs[-1]

    def nonnegative_input(self, i: int) -> bool:
        """Whether layer i's input has no negative value: from the graph after a ReLU (`Layer.input_nonneg`),
        else checked once on the data. Why the graph first: the data check reads the whole activation and, on
        CUDA, makes the host wait for the device at every layer."""
        if self.layers[i].input_nonneg:
            return True
        return self.cached(("nonneg", i), lambda: bool((self.inputs[i] >= 0).all()))

    def cached(self, key, fn):
        """Compute `fn()` once per forward pass: shared by every analyzer that needs it."""
        if key not in self.cache:
            self.cache[key] = fn()
        return self.cache[key]


def forward_trace(layers: list[Layer], x: torch.Tensor, fused: bool = False) -> Trace:
    """Run the layer graph on `x`, recording what the backward rules need (no autograd graph). A layer of
    several inputs (sum, concatenation) records them as a tuple."""
    inputs, outputs, indices = [], [], {}
    for layer in layers:
        m = layer.module
        args = [x if p < 0 else outputs[p] for p in layer.parents]
        if layer.kind in MULTI_INPUT:
            inputs.append(tuple(args))
            y = m(*args)
            outputs.append(y)
            continue
        (a,) = args
        if layer.kind == "linear" and a.ndim > 2:
            raise UnsupportedModelError(f"Linear '{layer.name}' gets a {a.ndim}-d input {tuple(a.shape)}; "
                                        f"flatten it in forward() (torch.flatten(x, 1))")
        inputs.append(a)
        if layer.kind == "conv":
            y = F.conv2d(a, m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups)
        elif layer.kind == "linear":
            y = F.linear(a, m.weight, m.bias)
        elif layer.kind == "relu":
            y = F.relu(a)
        elif layer.kind == "relu6":
            y = F.hardtanh(a, 0.0, 6.0)
        elif layer.kind == "maxpool":
            y, idx = F.max_pool2d(a, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, True)
            indices[layer.index] = idx
        elif layer.kind == "flatten":
            y = torch.flatten(a, m.start_dim, m.end_dim)
        elif layer.kind in ("avgpool", "reshape", "batchnorm"):  # (batchnorm: lrp.canonizers.ChannelAffine)
            y = m(a)
        elif layer.kind == "lrn":
            y = F.local_response_norm(a, m.size, m.alpha, m.beta, m.k)
        else:  # identity (Dropout in eval mode)
            y = a
        outputs.append(y)
    return Trace(layers, inputs, outputs, indices, kernels=_kernels.select(fused), input_shape=tuple(x.shape))


_verified: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def compile_model(model: nn.Module, example: torch.Tensor) -> list[Layer]:
    """The layer graph of `model`, verified once against `model(example[:1])`; raises UnsupportedModelError.

    Why verify: the engine re-implements the forward pass from the traced graph; a module whose own forward
    differs from its type's (a subclass), or an operation read wrongly, would otherwise be explained wrongly
    without notice. Rebuilt when the input's shape, dtype or device changes, or when a parameter or buffer a
    merged BatchNorm copied changes in place (`optimizer.step()`, `load_state_dict`).
    """
    if model.training:
        raise UnsupportedModelError("call model.eval() before explaining it (Dropout must be the identity, "
                                    "BatchNorm must use its running statistics)")
    key = (tuple(example.shape[1:]), example.dtype, example.device)
    entry = _verified.get(model)
    if entry is not None and entry[0] == key and tracing.state_of(entry[2]) == entry[3]:
        return entry[1]
    layers, sources = tracing.trace_layers(model)
    with torch.no_grad():
        ours = forward_trace(layers, example[:1]).logits
        theirs = model(example[:1])
    if not isinstance(theirs, torch.Tensor) or ours.shape != theirs.shape or not torch.allclose(
            ours, theirs, rtol=1e-4, atol=1e-5 * float(theirs.abs().max()) + 1e-6):
        shape = tuple(theirs.shape) if isinstance(theirs, torch.Tensor) else type(theirs).__name__
        diff = (ours - theirs).abs().max().item() if shape == tuple(ours.shape) else float("nan")
        raise UnsupportedModelError(
            f"the traced graph does not reproduce model(x) (shapes {tuple(ours.shape)} vs {shape}, max |Δ| = "
            f"{diff:.3g}): a module's forward differs from its type's, or forward() does something the trace "
            f"cannot see")
    _verified[model] = (key, layers, sources, tracing.state_of(sources))
    return layers
