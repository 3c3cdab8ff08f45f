"""Turn a torch CNN into the flat list of layers the LRP engine walks, and run its forward pass once.

Why a flat list: every analyzer of the study back-propagates through the same chain of layers, so one
recorded forward pass (each layer's input and output) serves all of them. Models are walked in module
registration order (torchvision VGG/AlexNet, flat `nn.Sequential`s, nested `Sequential`s); the walk is
checked once against the model's own `forward` so an unusual `forward` cannot silently give wrong maps.
LocalResponseNorm (CaffeNet) is a layer kind of its own: LRP passes relevance through it unchanged, the
gradient family uses its true gradient (`lrp.rules`, docs/models.md).
"""

from __future__ import annotations

import dataclasses
import weakref
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from lrp import kernels as _kernels

KINDS = {
    nn.Conv2d: "conv",
    nn.Linear: "linear",
    nn.ReLU: "relu",
    nn.MaxPool2d: "maxpool",
    nn.AvgPool2d: "avgpool",
    nn.AdaptiveAvgPool2d: "avgpool",
    nn.Flatten: "flatten",
    nn.LocalResponseNorm: "lrn",
    nn.Dropout: "identity",
    nn.Identity: "identity",
}


class UnsupportedModelError(TypeError):
    """The model contains a module (or a forward pass) the engine cannot explain faithfully."""


@dataclass(frozen=True, eq=False)
class Layer:
    index: int
    name: str
    module: nn.Module
    kind: str
    kernel_index: int | None = None  # position among conv/linear layers (0 = closest to the input)
    conv_index: int | None = None  # position among conv layers
    input_nonneg: bool = False  # the input is a ReLU's output, possibly through pools/LRN/Dropout/Flatten


def layers_of(model: nn.Module) -> list[Layer]:
    """Leaf modules of `model` in registration order, each with its kind; raise on anything unsupported."""
    out: list[Layer] = []
    n_kernel = n_conv = 0

    def visit(module: nn.Module, prefix: str):
        nonlocal n_kernel, n_conv
        kind = KINDS.get(type(module))
        if kind is None and isinstance(module, tuple(KINDS)):
            kind = next(k for t, k in KINDS.items() if isinstance(module, t))
        if kind is not None:
            _check_module(module, prefix)
            kernel_index = conv_index = None
            if kind in ("conv", "linear"):
                kernel_index, n_kernel = n_kernel, n_kernel + 1
            if kind == "conv":
                conv_index, n_conv = n_conv, n_conv + 1
            out.append(Layer(len(out), prefix, module, kind, kernel_index, conv_index))
            return
        children = list(module.named_children())
        if not children:
            raise UnsupportedModelError(
                f"module '{prefix or type(module).__name__}' of type {type(module).__name__} is not supported "
                f"by the LRP engine (supported: {', '.join(t.__name__ for t in KINDS)}, nested in Sequentials)"
            )
        for name, child in children:
            visit(child, f"{prefix}.{name}" if prefix else name)

    visit(model, "")
    out = _mark_nonneg_inputs(out)
    if not any(layer.kind in ("conv", "linear") for layer in out):
        raise UnsupportedModelError("the model has no Conv2d or Linear layer to explain")
    if out[-1].kind != "linear" and out[-1].kind != "conv":
        raise UnsupportedModelError(
            f"the model must end in its logit layer (Linear or Conv2d, no softmax); its last module "
            f"'{out[-1].name}' is a {type(out[-1].module).__name__}"
        )
    return out


def _mark_nonneg_inputs(layers: list[Layer]) -> list[Layer]:
    """Set `input_nonneg` where the graph guarantees it (see `Trace.nonnegative_input` for why)."""
    out, nonneg = [], False  # the model's input (the image) may be signed
    for layer in layers:
        out.append(dataclasses.replace(layer, input_nonneg=nonneg))
        nonneg = layer.kind == "relu" or (nonneg and _keeps_sign(layer))
    return out


def _keeps_sign(layer: Layer) -> bool:
    """Whether the layer's output is non-negative wherever its input is, as `forward_trace` computes it: max-pool,
    Flatten and Dropout/Identity (computed by the trace itself); average pools without a negative divisor and
    LRN with k > 0, α ≥ 0 (a positive divisor). Anything else (e.g. a pool subclass with its own forward,
    which the trace calls) leaves it to the data check."""
    m = layer.module
    if layer.kind in ("maxpool", "flatten", "identity"):
        return True
    if layer.kind == "avgpool":
        return type(m) is nn.AdaptiveAvgPool2d or (type(m) is nn.AvgPool2d and (m.divisor_override or 1) > 0)
    if layer.kind == "lrn":
        return m.k > 0 and m.alpha >= 0
    return False


def _check_module(module: nn.Module, name: str) -> None:
    if isinstance(module, nn.Conv2d):
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            raise UnsupportedModelError(
                f"Conv2d '{name}': only numeric zero padding is supported (got padding={module.padding!r}, "
                f"padding_mode={module.padding_mode!r})"
            )
    if isinstance(module, nn.MaxPool2d) and module.return_indices:
        raise UnsupportedModelError(f"MaxPool2d '{name}' with return_indices=True is not supported")


@dataclass
class Trace:
    """One forward pass: the input and output of every layer, plus a cache of quantities rules share."""

    layers: list[Layer]
    inputs: list[torch.Tensor]
    outputs: list[torch.Tensor]
    indices: dict[int, torch.Tensor] = field(default_factory=dict)  # max-pool argmax per layer
    cache: dict = field(default_factory=dict)
    kernels: _kernels.Eager | _kernels.Fused = _kernels.EAGER  # the rules' elementwise steps (lrp.kernels)

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
    """Run the layer chain on `x`, recording what the backward rules need (no autograd graph)."""
    inputs, outputs, indices = [], [], {}
    for layer in layers:
        m = layer.module
        if layer.kind == "linear" and x.ndim > 2:
            x = torch.flatten(x, 1)  # the implicit flatten of torchvision's VGG/AlexNet forward
        inputs.append(x)
        if layer.kind == "conv":
            y = F.conv2d(x, m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups)
        elif layer.kind == "linear":
            y = F.linear(x, m.weight, m.bias)
        elif layer.kind == "relu":
            y = F.relu(x)
        elif layer.kind == "maxpool":
            y, idx = F.max_pool2d(x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, True)
            indices[layer.index] = idx
        elif layer.kind == "flatten":
            y = torch.flatten(x, m.start_dim, m.end_dim)
        elif layer.kind == "avgpool":
            y = m(x)
        elif layer.kind == "lrn":
            y = F.local_response_norm(x, m.size, m.alpha, m.beta, m.k)
        else:  # identity (Dropout in eval mode)
            y = x
        outputs.append(y)
        x = y
    return Trace(layers, inputs, outputs, indices, kernels=_kernels.select(fused))


_verified: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def compile_model(model: nn.Module, example: torch.Tensor) -> list[Layer]:
    """Layer list of `model`, verified once against `model(example[:1])`.

    Why: the engine re-implements the forward pass from the module list; a model whose `forward` adds
    operations (residuals, functional activations) would otherwise be explained wrongly without notice.
    """
    if model.training:
        raise UnsupportedModelError("call model.eval() before explaining it (Dropout must be the identity)")
    key = (tuple(example.shape[1:]), example.dtype, example.device)
    entry = _verified.get(model)
    if entry is not None and entry[0] == key:
        return entry[1]
    layers = layers_of(model)
    with torch.no_grad():
        ours = forward_trace(layers, example[:1]).logits
        theirs = model(example[:1])
    if ours.shape != theirs.shape or not torch.allclose(ours, theirs, rtol=1e-4,
                                                        atol=1e-5 * float(theirs.abs().max()) + 1e-6):
        diff = (ours - theirs).abs().max().item() if ours.shape == theirs.shape else float("nan")
        raise UnsupportedModelError(
            "walking the model's modules in registration order does not reproduce model(x) "
            f"(shapes {tuple(ours.shape)} vs {tuple(theirs.shape)}, max |Δ| = {diff:.3g}); only models whose "
            "forward() chains their Conv2d/ReLU/pool/LRN/Flatten/Dropout/Linear modules in order are supported"
        )
    _verified[model] = (key, layers)
    return layers
