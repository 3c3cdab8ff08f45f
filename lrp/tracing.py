"""From a torch model to the engine's layer graph: torch.fx traces `forward`, each node becomes a `Layer`.

Why fx: today's CNNs are not chains of modules. ResNets add a shortcut (`out += identity`), DenseNets
concatenate (`torch.cat`), MobileNets and DenseNets call functions (`F.adaptive_avg_pool2d`, `F.relu`,
`torch.flatten`) in `forward`. Tracing records what `forward` does, in the order it does it, functional calls
included. Modules of the supported kinds stay leaves of the trace even when subclassed, so a subclass's own
`forward` is what `lrp.graph.compile_model` checks against `model(x)`.

Then `lrp.canonizers` folds each BatchNorm into the conv/linear layer before it where that layer feeds only
the norm; other BatchNorms become per-channel affine layers. Nodes that do not lead to the output are
dropped. Anything else stops with `UnsupportedModelError`, naming the node and its operation.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from lrp import canonizers
from lrp.layers import MULTI_INPUT, Concat, Layer, ReshapeTo, Sum, UnsupportedModelError

MODULE_KINDS = {
    nn.Conv2d: "conv",
    nn.Linear: "linear",
    nn.ReLU: "relu",
    nn.ReLU6: "relu6",
    nn.MaxPool2d: "maxpool",
    nn.AvgPool2d: "avgpool",
    nn.AdaptiveAvgPool2d: "avgpool",
    nn.Flatten: "flatten",
    nn.LocalResponseNorm: "lrn",
    nn.Dropout: "identity",
    nn.Dropout2d: "identity",
    nn.Identity: "identity",
    nn.BatchNorm2d: "batchnorm",
    nn.BatchNorm1d: "batchnorm",
}
"""Module types the engine explains (subclasses too), and the kind each becomes."""

SIGN_KEEPING = ("maxpool", "flatten", "reshape", "identity", "cat")
"""Kinds whose output is non-negative wherever their input is, whatever their settings (see `_keeps_sign`)."""

_RELU_FUNCTIONS = {F.relu: "relu", torch.relu: "relu", torch.relu_: "relu", F.relu6: "relu6"}
_ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add)
_CAT_FUNCTIONS = (torch.cat, torch.concat, torch.concatenate)


class _Tracer(torch.fx.Tracer):
    """torch.fx's tracer, with every module of a supported type (or a subclass) kept as one call."""

    def is_leaf_module(self, m, qualname):
        return isinstance(m, tuple(MODULE_KINDS)) or super().is_leaf_module(m, qualname)


@dataclass(eq=False)
class _Node:
    """A node while the graph is built: its kind, module, name, and input nodes (None = the model's input)."""

    kind: str
    module: nn.Module
    name: str
    inputs: list = field(default_factory=list)
    users: int = 0
    merged: tuple[str, ...] = ()
    sources: tuple = ()  # the modules a merged layer was built from (for the cache's staleness check)


def trace_layers(model: nn.Module) -> tuple[list[Layer], tuple[nn.Module, ...]]:
    """The explained graph of `model` (canonized, topologically ordered) and the modules its merged layers
    copied parameters from (`state_of` tells when the copy is stale). Raises UnsupportedModelError."""
    graph = _trace(model)
    nodes, out = _nodes(model, graph)
    nodes = _reachable(nodes, out)
    nodes = _merge_batchnorms(nodes)
    return _layers(nodes), tuple(m for n in nodes for m in n.sources)


def state_of(sources) -> tuple:
    """The in-place versions of the copied modules' parameters and buffers (lrp.canonizers.state_key)."""
    return canonizers.state_key(sources)


def _trace(model: nn.Module):
    try:
        return torch.fx.GraphModule(model, _Tracer().trace(model)).graph
    except Exception as e:  # fx raises TraceError, TypeError, RuntimeError, … from the user's forward
        raise UnsupportedModelError(
            f"torch.fx could not trace {type(model).__name__}.forward ({type(e).__name__}: {e}); the engine "
            f"explains a forward pass without data-dependent control flow") from e


def _nodes(model: nn.Module, graph) -> tuple[list[_Node], _Node]:
    """One `_Node` per tensor operation of the fx graph, in its (topological) order, and the output node."""
    env: dict = {}  # fx node -> _Node (tensors) or ("meta", value) (sizes)
    nodes: list[_Node] = []
    names: dict[str, int] = {}
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise UnsupportedModelError(f"{type(model).__name__}.forward takes {len(placeholders)} arguments; the "
                                    f"engine explains models of one input tensor")
    out = None
    for n in graph.nodes:
        if n.op == "placeholder":
            env[n] = None
        elif n.op == "output":
            out = _tensor_arg(n, n.args[0], env, "returns")
        elif n.op == "get_attr":
            raise UnsupportedModelError(f"node '{n.name}' reads the tensor attribute '{n.target}' in forward(); "
                                        f"only layers' own parameters are supported")
        else:
            made = _node(model, n, env)
            if isinstance(made, _Node):
                count = names.get(made.name, 0)
                names[made.name] = count + 1
                if count:  # a module called twice: one layer per call
                    made.name = f"{made.name}:{count}"
                nodes.append(made)
            env[n] = made
    return nodes, out


def _op_name(n) -> str:
    if n.op == "call_module":
        return f"module '{n.target}'"
    target = getattr(n.target, "__name__", str(n.target))
    return f"node '{n.name}' ({n.op} {target})"


def _tensor_arg(n, a, env, what: str = "takes"):
    if not isinstance(a, torch.fx.Node) or isinstance(env.get(a), tuple):
        raise UnsupportedModelError(f"{_op_name(n)} {what} {a!r}, not a tensor computed from the input: "
                                    f"not supported by the LRP engine")
    return env[a]


def _meta(n, a, env):
    """A shape argument: an int, or x.size(0) / x.shape[0] (the batch size, 'N')."""
    if isinstance(a, int) and not isinstance(a, bool):
        return a
    if isinstance(a, torch.fx.Node) and isinstance(env.get(a), tuple) and env[a][1] == "batch":
        return "N"
    raise UnsupportedModelError(f"{_op_name(n)} reshapes to {a!r}: only constant sizes and the batch size "
                                f"(x.size(0)) are supported")


def _node(model: nn.Module, n, env):
    """The `_Node` (or a size value, as ('meta', what)) of fx node `n`; raises UnsupportedModelError."""
    if n.op == "call_module":
        m = model.get_submodule(n.target)
        kind = next((k for t, k in MODULE_KINDS.items() if type(m) is t), None)
        if kind is None:
            kind = next((k for t, k in MODULE_KINDS.items() if isinstance(m, t)), None)
        if kind is None:
            raise UnsupportedModelError(
                f"module '{n.target}' of type {type(m).__name__} is not supported by the LRP engine (supported: "
                f"{', '.join(t.__name__ for t in MODULE_KINDS)}; functions: relu, add, cat, flatten, view, "
                f"adaptive_avg_pool2d)")
        _check_module(m, n.target)
        if kind == "batchnorm":
            _check_batchnorm(m, n.target)
        return _make(kind, m, n.target, [_tensor_arg(n, n.args[0], env)], n, extra_args=n.args[1:])
    target, args, kwargs = n.target, n.args, n.kwargs
    if n.op == "call_method":
        return _method(n, env)
    # call_function
    if target in _RELU_FUNCTIONS:
        return _make(_RELU_FUNCTIONS[target], nn.ReLU6() if _RELU_FUNCTIONS[target] == "relu6" else nn.ReLU(),
                     n.name, [_tensor_arg(n, args[0], env)], n)
    if target in _ADD_FUNCTIONS:
        if kwargs.get("alpha", 1) != 1 or len(args) != 2:
            raise UnsupportedModelError(f"{_op_name(n)}: only a + b of two tensors is supported")
        return _make("add", Sum(), n.name, [_tensor_arg(n, a, env) for a in args], n)
    if target in _CAT_FUNCTIONS:
        tensors = args[0] if args else kwargs.get("tensors")
        dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
        if not isinstance(tensors, (list, tuple)) or not isinstance(dim, int):
            raise UnsupportedModelError(f"{_op_name(n)}: only torch.cat(list of tensors, int dim) is supported")
        return _make("cat", Concat(dim), n.name, [_tensor_arg(n, a, env) for a in tensors], n)
    if target is torch.flatten:
        start = args[1] if len(args) > 1 else kwargs.get("start_dim", 0)
        end = args[2] if len(args) > 2 else kwargs.get("end_dim", -1)
        return _make("flatten", nn.Flatten(start, end), n.name, [_tensor_arg(n, args[0], env)], n)
    if target is F.adaptive_avg_pool2d:
        size = args[1] if len(args) > 1 else kwargs["output_size"]
        return _make("avgpool", nn.AdaptiveAvgPool2d(size), n.name, [_tensor_arg(n, args[0], env)], n)
    if target is F.dropout and not (kwargs.get("training", args[2] if len(args) > 2 else True)):
        return _make("identity", nn.Identity(), n.name, [_tensor_arg(n, args[0], env)], n)
    if target is operator.getitem and isinstance(env.get(args[0]), tuple):
        what, value = env[args[0]][1], args[1]
        return ("meta", "batch" if what == "shape" and value == 0 else "other")
    if target is getattr and args[1] == "shape":
        return ("meta", "shape")
    raise UnsupportedModelError(f"{_op_name(n)} is not supported by the LRP engine (e.g. a sigmoid gate, "
                                f"SiLU, hardswish or attention has no LRP rule here)")


def _method(n, env):
    name, args = n.target, n.args
    if name == "size":
        dim = args[1] if len(args) > 1 else n.kwargs.get("dim")
        return ("meta", "batch" if dim == 0 else "shape" if dim is None else "other")
    if name in ("relu", "relu_"):
        return _make("relu", nn.ReLU(), n.name, [_tensor_arg(n, args[0], env)], n)
    if name in ("add", "add_", "__add__", "__iadd__"):
        if n.kwargs.get("alpha", 1) != 1 or len(args) != 2:
            raise UnsupportedModelError(f"{_op_name(n)}: only a + b of two tensors is supported")
        return _make("add", Sum(), n.name, [_tensor_arg(n, a, env) for a in args], n)
    if name == "flatten":
        start = args[1] if len(args) > 1 else n.kwargs.get("start_dim", 0)
        end = args[2] if len(args) > 2 else n.kwargs.get("end_dim", -1)
        return _make("flatten", nn.Flatten(start, end), n.name, [_tensor_arg(n, args[0], env)], n)
    if name in ("view", "reshape"):
        shape = args[1] if len(args) == 2 and isinstance(args[1], (tuple, list)) else args[1:]
        return _make("reshape", ReshapeTo(tuple(_meta(n, s, env) for s in shape)), n.name,
                     [_tensor_arg(n, args[0], env)], n)
    if name == "contiguous":
        return _make("identity", nn.Identity(), n.name, [_tensor_arg(n, args[0], env)], n)
    raise UnsupportedModelError(f"{_op_name(n)} is not supported by the LRP engine")


def _make(kind, module, name, inputs, n, extra_args=()) -> _Node:
    if extra_args or (n.op == "call_module" and n.kwargs):
        raise UnsupportedModelError(f"{_op_name(n)} is called with extra arguments {extra_args or n.kwargs}; "
                                    f"the engine calls a module on one tensor")
    node = _Node(kind, module, name, list(inputs))
    for p in inputs:
        if p is not None:
            p.users += 1
    return node


def _check_module(module: nn.Module, name: str) -> None:
    if isinstance(module, nn.Conv2d):
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            raise UnsupportedModelError(
                f"Conv2d '{name}': only numeric zero padding is supported (got padding={module.padding!r}, "
                f"padding_mode={module.padding_mode!r})"
            )
    if isinstance(module, nn.MaxPool2d) and module.return_indices:
        raise UnsupportedModelError(f"MaxPool2d '{name}' with return_indices=True is not supported")
    if isinstance(module, (nn.Dropout, nn.Dropout2d)) and module.training:
        raise UnsupportedModelError(f"Dropout '{name}' is in training mode: call model.eval() before explaining")


def _check_batchnorm(module, name: str) -> None:
    try:
        canonizers.batchnorm_scale_shift(module, name)
    except canonizers.UnsupportedBatchNorm as e:
        raise UnsupportedModelError(str(e)) from None


def _reachable(nodes: list[_Node], out: _Node) -> list[_Node]:
    """The nodes the output depends on (a computed but unused branch gets no relevance and no rule)."""
    keep, stack = set(), [out]
    while stack:
        node = stack.pop()
        if node is None or id(node) in keep:
            continue
        keep.add(id(node))
        stack.extend(node.inputs)
    kept = [n for n in nodes if id(n) in keep]
    for n in kept:
        n.users = 0
    for n in kept:
        for p in n.inputs:
            if p is not None:
                p.users += 1
    if kept[-1] is not out:  # cannot happen for a DAG in topological order; guards the invariant rules rely on
        raise UnsupportedModelError("the model's output is not its last computed layer")
    return kept


def _merge_batchnorms(nodes: list[_Node]) -> list[_Node]:
    """Fold each BatchNorm into the conv/linear node before it when that node feeds only the norm."""
    out: list[_Node] = []
    replaced: dict[int, _Node] = {}
    for node in nodes:
        node.inputs = [replaced.get(id(p), p) if p is not None else None for p in node.inputs]
        if node.kind == "batchnorm":
            parent = node.inputs[0]
            if parent is not None and parent.kind in ("conv", "linear") and parent.users == 1 and not parent.merged:
                parent.sources = (parent.module, node.module)
                parent.module = canonizers.merge_batchnorm(parent.module, node.module, node.name)
                parent.merged = (node.name,)
                parent.users = node.users
                replaced[id(node)] = parent
                continue
            node.sources = (node.module,)
            node.module = canonizers.affine_of(node.module, node.name)
        out.append(node)
    return out


def _layers(nodes: list[_Node]) -> list[Layer]:
    index = {id(n): i for i, n in enumerate(nodes)}
    layers: list[Layer] = []
    nonneg_out: list[bool] = []
    n_kernel = n_conv = 0
    for i, n in enumerate(nodes):
        parents = tuple(-1 if p is None else index[id(p)] for p in n.inputs)
        kernel_index = conv_index = None
        if n.kind in ("conv", "linear"):
            kernel_index, n_kernel = n_kernel, n_kernel + 1
        if n.kind == "conv":
            conv_index, n_conv = n_conv, n_conv + 1
        input_nonneg = all(p >= 0 and nonneg_out[p] for p in parents)
        layer = Layer(i, n.name, n.module, n.kind, kernel_index, conv_index, input_nonneg, parents, n.merged)
        layers.append(layer)
        nonneg_out.append(n.kind in ("relu", "relu6") or (input_nonneg and _keeps_sign(layer)))
    if not any(layer.kind in ("conv", "linear") for layer in layers):
        raise UnsupportedModelError("the model has no Conv2d or Linear layer to explain")
    return layers


def _keeps_sign(layer: Layer) -> bool:
    """Whether the layer's output is non-negative wherever its input is, as `forward_trace` computes it:
    max-pool, Flatten, reshapes, Dropout/Identity, concatenation, sums (of non-negative inputs); average pools
    without a negative divisor, LRN with k > 0, α ≥ 0 (a positive divisor). Anything else (e.g. a pool subclass
    with its own forward, which the trace calls) leaves it to the data check."""
    m = layer.module
    if layer.kind in SIGN_KEEPING or layer.kind == "add":
        return True
    if layer.kind == "avgpool":
        return type(m) is nn.AdaptiveAvgPool2d or (type(m) is nn.AvgPool2d and (m.divisor_override or 1) > 0)
    if layer.kind == "lrn":
        return m.k > 0 and m.alpha >= 0
    return False


__all__ = ["MODULE_KINDS", "MULTI_INPUT", "trace_layers"]
