"""`attribute` and `attribute_many`: every analyzer from ONE recorded forward pass.

Speed comes mostly from sharing: the forward pass runs once; quantities several rules need (w⁺, z⁺,
receptive-field counts) are computed once per layer; and analyzers whose rules agree from the output down to
a layer share that part of the backward pass (LRP_CMP:α1 and LRP_CMP:α1+♭ differ only at the first conv, so
the second one costs a single layer). Fused kernels (lrp.kernels; the default on CUDA) also compile the
rules' elementwise steps.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict

import torch

from . import composites, kernels
from .graph import Trace, compile_model, forward_trace


class AnalyzerError(RuntimeError):
    """A function analyzer (your own code) raised; names the analyzer and its plugin file, keeps the cause."""


def attribute(model, inputs, targets, analyzer: str = "lrp_cmp_alpha2_flat", tf32: bool = False,
              fused: bool | None = None, **options) -> torch.Tensor:
    """Relevance of `inputs` (N, C, H, W) for class `targets` (N,) under one analyzer; same shape as inputs.
    `tf32` and `fused` as in `attribute_many`."""
    return attribute_many(model, inputs, targets, {analyzer: options}, tf32=tf32, fused=fused)[analyzer]


def attribute_many(model, inputs, targets, analyzers, tf32: bool = False, fused: bool | None = None,
                   **options) -> dict[str, torch.Tensor]:
    """Relevance maps of several analyzers from one forward pass: {name: Tensor shaped like inputs}.

    `analyzers`: a list of names, or {name: options} to set options per analyzer; keyword `options`
    (epsilon, bias, flat_layers, patterns) apply to every analyzer that takes them. `tf32=False` keeps CUDA
    matmuls/convolutions in full fp32, as the comparison with the reference tools requires. `fused=True`
    runs the rules' elementwise steps as compiled kernels (`lrp.kernels`; the same maps up to float round-off,
    less memory traffic); the default `None` means fused on CUDA, eager elsewhere (`lrp.kernels.resolve`).
    Function analyzers (`composites.register_function`) run after the shared pass, each on its own.
    """
    specs = _specs(analyzers, options)
    x, t = _check_inputs(model, inputs, targets)
    engine = {name: spec for name, spec in specs.items() if spec[0].function is None}
    fused = kernels.resolve(fused, x.device)
    results = _engine_maps(model, x, t, engine, tf32, fused) if engine else {}
    for name, (analyzer, opts) in specs.items():
        if analyzer.function is not None:
            results[name] = _function_map(analyzer, model, x, t, opts, tf32)
    return {name: results[name].reshape(x.shape) for name in specs}


def _engine_maps(model, x, t, specs: dict, tf32: bool, fused: bool) -> dict[str, torch.Tensor]:
    """The rule-based analyzers: one recorded forward pass, then the shared backward passes."""
    with _precision(tf32), torch.no_grad():
        layers = compile_model(model, x)
        trace = forward_trace(layers, x, fused)
        logits = trace.logits
        if logits.ndim != 2:
            raise ValueError(f"the model's output must be (N, classes) logits, got shape {tuple(logits.shape)}")
        if int(t.max()) >= logits.shape[1]:
            raise ValueError(f"target {int(t.max())} out of range for {logits.shape[1]} classes")
        onehot = torch.zeros_like(logits).scatter_(1, t[:, None], 1.0)
        results: dict[str, torch.Tensor] = {}
        groups: dict[str, list] = defaultdict(list)
        for name, (analyzer, opts) in specs.items():
            if analyzer.start == "uniform":
                results[name] = torch.ones_like(x)
                continue
            rules = composites.plan(analyzer, layers, opts)
            groups[analyzer.start].append((name, rules, opts))
        for start, members in groups.items():
            R = onehot * logits if start == "logit" else onehot
            _backward_shared(trace, members, len(layers) - 1, R, results)
    return results


def _function_map(analyzer, model, x, t, opts: dict, tf32: bool) -> torch.Tensor:
    """A function analyzer's map, checked: shaped like the inputs, finite, on their device and dtype; and the
    model and inputs, which the next analyzers and batches use, left as they were."""
    where = f" ({analyzer.source})" if analyzer.source else ""
    version, state = x._version, _model_state(model)
    try:
        with _precision(tf32), torch.enable_grad():
            R = analyzer.function(model, x, t, **opts)
    except Exception as e:
        raise AnalyzerError(f"analyzer {analyzer.name!r}{where} failed: {type(e).__name__}: {e}") from e
    changed = [what for what, before, after in zip(("train/eval modes", "parameters or buffers", "hooks"), state,
                                                   _model_state(model)) if before != after]
    if x._version != version or changed:
        what = "the inputs in place" if x._version != version else f"the model's {' and '.join(changed)}"
        raise ValueError(f"analyzer {analyzer.name!r}{where} modified {what}; the other analyzers and batches "
                         f"use them too: work on a copy, and remove what you add")
    if not isinstance(R, torch.Tensor) or tuple(R.shape) != tuple(x.shape):
        got = tuple(R.shape) if isinstance(R, torch.Tensor) else type(R).__name__
        raise ValueError(f"analyzer {analyzer.name!r}{where} returned {got}; expected a tensor of the inputs' "
                         f"shape {tuple(x.shape)}")
    if R.device != x.device or R.dtype != x.dtype:
        raise ValueError(f"analyzer {analyzer.name!r}{where} returned {R.dtype} on {R.device}; expected "
                         f"{x.dtype} on {x.device}")
    if not bool(torch.isfinite(R).all()):
        raise ValueError(f"analyzer {analyzer.name!r}{where} returned non-finite values (NaN or Inf)")
    return R.detach()


def _backward_shared(trace: Trace, members: list, i: int, R: torch.Tensor, results: dict) -> None:
    """Depth-first over the rule trie: members agreeing on the rule of layer i share its computation."""
    while i >= 0:
        by_rule: dict = defaultdict(list)
        for m in members:
            by_rule[m[1][i]].append(m)
        if len(by_rule) > 1:
            version = R._version  # views share it: also catches edits through a Pass or Reshape below
            for rule, sub in by_rule.items():
                R_sub = _unflatten(trace, i, rule.backward(trace.layers[i], trace, R, _ctx(sub)))
                _backward_shared(trace, sub, i - 1, R_sub, results)
                if R._version != version:
                    raise ValueError(f"rule {type(rule).__name__} at layer {trace.layers[i].name!r} (or a rule "
                                     f"below it) modified its input relevance in place, which other analyzers "
                                     f"({', '.join(m[0] for m in members)}) share; return a new tensor instead")
            return
        rule = next(iter(by_rule))
        R = _unflatten(trace, i, rule.backward(trace.layers[i], trace, R, _ctx(members)))
        i -= 1
    for name, _, _ in members:
        results[name] = R


def _model_state(model) -> tuple:
    """What a function analyzer must leave as it found it: every module's train/eval mode, the in-place
    versions of parameters and buffers, and the registered hooks."""
    modules = list(model.modules())
    hooks = tuple(len(getattr(m, k, ())) for m in modules for k in (
        "_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"))
    return (tuple(m.training for m in modules),
            tuple(p._version for p in (*model.parameters(), *model.buffers())), hooks)


def _unflatten(trace: Trace, i: int, R: torch.Tensor) -> torch.Tensor:
    """Undo the implicit flatten before a Linear (torchvision VGG/AlexNet call torch.flatten in forward()):
    the relevance at layer i's input must have the shape of layer i-1's output."""
    if i > 0 and R.shape != trace.outputs[i - 1].shape:
        R = R.reshape(trace.outputs[i - 1].shape)
    return R


def _ctx(members) -> dict:
    return {"patterns": members[0][2].get("patterns")}


def _specs(analyzers, options) -> dict:
    if isinstance(analyzers, str):
        analyzers = [analyzers]
    if not isinstance(analyzers, dict):
        analyzers = {name: {} for name in analyzers}
    if not analyzers:
        raise ValueError("no analyzers given")
    taken = set().union(*(composites.option_names(composites.get(name)) for name in analyzers))
    unknown = set(options) - taken
    if unknown:
        raise ValueError(f"option(s) {sorted(unknown)} are taken by none of the analyzers {list(analyzers)}; "
                         f"known: {sorted(taken) or 'none'}")
    specs = {}
    for name, opts in analyzers.items():
        analyzer = composites.get(name)
        specs[name] = (analyzer, composites.resolve_options(analyzer, dict(opts or {}), shared=options))
    return specs


def _check_inputs(model, inputs, targets):
    if not isinstance(inputs, torch.Tensor) or inputs.ndim != 4:
        raise ValueError(f"inputs must be a (N, C, H, W) tensor, got {type(inputs).__name__} "
                         f"{tuple(getattr(inputs, 'shape', ()))}")
    param = next(model.parameters(), None)
    if param is not None and (param.device != inputs.device or param.dtype != inputs.dtype):
        raise ValueError(f"inputs are {inputs.dtype} on {inputs.device} but the model is {param.dtype} on "
                         f"{param.device}; move one of them")
    t = torch.as_tensor(targets, device=inputs.device).long().reshape(-1)
    if t.shape[0] != inputs.shape[0]:
        raise ValueError(f"{t.shape[0]} targets for {inputs.shape[0]} inputs")
    if t.numel() and int(t.min()) < 0:
        raise ValueError("targets must be class indices ≥ 0")
    return inputs.detach(), t


@contextlib.contextmanager
def _precision(tf32: bool):
    """Set TF32 for the call and restore the caller's setting afterwards."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
