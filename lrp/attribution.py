"""`attribute` and `attribute_many`: every analyzer from ONE recorded forward pass.

Speed comes mostly from sharing: the forward pass runs once; quantities several rules need (w⁺, z⁺,
receptive-field counts) are computed once per layer; and analyzers whose rules agree from the output down to
a layer share that part of the backward pass (LRP_CMP:α1 and LRP_CMP:α1+♭ differ only at the first conv, so
the second one costs a single layer). Fused kernels (lrp.kernels; the default on CUDA) also compile the
rules' elementwise steps.
"""

from __future__ import annotations

import contextlib
import warnings
from collections import defaultdict
from collections.abc import Mapping

import torch

from lrp import composites, kernels
from lrp.graph import Trace, compile_model, forward_trace
from lrp.rules import AlphaBeta, BiasConventionWarning


class AnalyzerError(RuntimeError):
    """A function analyzer (your own code) raised; names the analyzer and its plugin file, keeps the cause."""


def attribute(model, inputs, targets, analyzer: str = "lrp_cmp_alpha2_flat", tf32: bool = False,
              fused: bool | None = None, **options) -> torch.Tensor:
    """Relevance of `inputs` (N, C, H, W) for class `targets` (N,) under one analyzer; same shape as inputs.
    `options`: those the analyzer takes (`lrp.composites.option_names`); `tf32` and `fused` as in
    `attribute_many`, which says what raises ValueError."""
    if not isinstance(analyzer, str):
        raise ValueError(f"analyzer must be the name of one analyzer, got {type(analyzer).__name__} {analyzer!r}; "
                         f"for several, use attribute_many")
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

    Raises ValueError for an unknown analyzer or option, an option value the analyzer or the model cannot take
    (e.g. flat_layers above the model's number of convolutions), inputs that are not a non-empty, finite,
    floating-point (N, C, H, W) batch, and targets that are not one class index in [0, outputs) per input.
    """
    specs = _specs(analyzers, options)
    x, t, t_max = _check_inputs(model, inputs, targets)
    engine = {name: spec for name, spec in specs.items() if spec[0].function is None}
    fused = kernels.resolve(fused, x.device)
    if engine:
        results = _engine_maps(model, x, t, t_max, engine, tf32, fused)
    else:
        results = {}
        _check_target_range(t, t_max, _n_outputs(model, x))
    for name, (analyzer, opts, _) in specs.items():
        if analyzer.function is not None:
            results[name] = _function_map(analyzer, model, x, t, opts, tf32)
    return {name: results[name].reshape(x.shape) for name in specs}


def _engine_maps(model, x, t, t_max: int, specs: dict, tf32: bool, fused: bool) -> dict[str, torch.Tensor]:
    """The rule-based analyzers: one recorded forward pass, then the shared backward passes."""
    with _precision(tf32), torch.no_grad():
        layers = compile_model(model, x)
        for name, (_, _, given) in specs.items():
            composites.check_against_model(name, given, layers)
        trace = forward_trace(layers, x, fused)
        logits = trace.logits
        if logits.ndim != 2:
            raise ValueError(f"the model's output must be (N, classes) logits, got shape {tuple(logits.shape)}")
        _check_target_range(t, t_max, logits.shape[1])
        onehot = torch.zeros_like(logits).scatter_(1, t[:, None], 1.0)
        results: dict[str, torch.Tensor] = {}
        groups: dict[str, list] = defaultdict(list)
        for name, (analyzer, opts, _) in specs.items():
            if analyzer.start == "uniform":
                results[name] = torch.ones_like(x)
                continue
            rules = composites.plan(analyzer, layers, opts)
            _warn_innvestigate_bias_on_merged_norms(name, rules, layers)
            groups[analyzer.start].append((name, rules, opts))
        for start, members in groups.items():
            R = onehot * logits if start == "logit" else onehot
            _backward_shared(trace, members, len(layers) - 1, {len(layers) - 1: R}, results)
    return results


def _warn_innvestigate_bias_on_merged_norms(name: str, rules: list, layers: list) -> None:
    """Warn (BiasConventionWarning) where an analyzer puts α-β with bias="innvestigate" on layers with a merged
    BatchNorm: a choice, not an error (the maps are what that convention defines), but one that broke α2β1 on
    the demo ResNet, so it is said once per call site rather than left to be found in a table."""
    hit = [layers[i].name for i, rule in enumerate(rules)
           if isinstance(rule, AlphaBeta) and rule.bias == "innvestigate" and layers[i].merged]
    if hit:
        warnings.warn(f"{name}: α-β with bias='innvestigate' on {len(hit)} layer(s) with a merged BatchNorm (first: "
                      f"{hit[0]!r}); the merged norms' biases sit whole in z⁺ + b, which made LRP_CMP:α2 worse than a "
                      f"uniform map on the demo ResNet. For BatchNorm nets pass bias='toolbox' (zennit's convention; "
                      f"docs/lrp_rules.md)", BiasConventionWarning, stacklevel=4)


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


def _backward_shared(trace: Trace, members: list, i: int, pending: dict, results: dict) -> None:
    """Backward over the graph in reverse topological order, depth-first over the rule trie: members agreeing
    on the rules of layers n-1 … i share their computation. `pending` holds, per layer index, the relevance
    arrived so far at its output (from every layer using it; -1: the model's input)."""
    while i >= 0:
        R = pending.pop(i)
        by_rule: dict = defaultdict(list)
        for m in members:
            by_rule[m[1][i]].append(m)
        if len(by_rule) > 1:
            version = R._version  # views share it: also catches edits through a Pass or Reshape below
            for rule, sub in by_rule.items():
                branch = dict(pending)  # the tensors are shared, never changed in place
                _send(trace, i, rule.backward(trace.layers[i], trace, R, _ctx(sub)), branch)
                _backward_shared(trace, sub, i - 1, branch, results)
                if R._version != version:
                    raise ValueError(f"rule {type(rule).__name__} at layer {trace.layers[i].name!r} (or a rule "
                                     f"below it) modified its input relevance in place, which other analyzers "
                                     f"({', '.join(m[0] for m in members)}) share; return a new tensor instead")
            return
        rule = next(iter(by_rule))
        _send(trace, i, rule.backward(trace.layers[i], trace, R, _ctx(members)), pending)
        i -= 1
    R = pending[-1] if -1 in pending else torch.zeros(trace.input_shape, dtype=trace.logits.dtype,
                                                      device=trace.logits.device)
    for name, _, _ in members:
        results[name] = R


def _send(trace: Trace, i: int, R, pending: dict) -> None:
    """Add layer i's input relevance (one tensor; a tuple for a sum or concatenation) to what its parents
    have received. Out of place: after a split of the trie, branches share the tensors already there."""
    parents = trace.layers[i].parents
    parts = R if isinstance(R, tuple) else (R,)
    if len(parts) != len(parents):
        raise ValueError(f"the rule of layer {trace.layers[i].name!r} returned {len(parts)} relevance tensor(s) "
                         f"for its {len(parents)} input(s)")
    for p, r in zip(parents, parts):
        shape = trace.outputs[p].shape if p >= 0 else trace.input_shape
        if r.shape != shape:
            r = r.reshape(shape)
        pending[p] = r if p not in pending else pending[p] + r


def _model_state(model) -> tuple:
    """What a function analyzer must leave as it found it: every module's train/eval mode, the in-place
    versions of parameters and buffers, and the registered hooks."""
    modules = list(model.modules())
    hooks = tuple(len(getattr(m, k, ())) for m in modules for k in (
        "_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"))
    return (tuple(m.training for m in modules),
            tuple(p._version for p in (*model.parameters(), *model.buffers())), hooks)


def _ctx(members) -> dict:
    return {"patterns": members[0][2].get("patterns")}


def _specs(analyzers, options) -> dict:
    """{name: (analyzer, its resolved options, the options the caller set for it)}; raises ValueError for an
    unknown analyzer or option, a bad value, or a keyword option that no analyzer of the call takes."""
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
        if opts is not None and not isinstance(opts, Mapping):
            raise ValueError(f"the options of analyzer {name!r} must be a mapping of option names to values "
                             f"(or None), got {type(opts).__name__} {opts!r}")
        analyzer, own = composites.get(name), dict(opts or {})
        given = {**{k: v for k, v in options.items() if k in composites.option_names(analyzer)}, **own}
        specs[name] = (analyzer, composites.resolve_options(analyzer, own, shared=options), given)
    return specs


def _check_inputs(model, inputs, targets) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The inputs (detached) and targets (int64 on the inputs' device), checked, and the largest target (the
    forward pass checks it against the model's outputs). Why one `tolist()`: on CUDA every value read back
    makes the host wait for the device; the inputs' finiteness and the targets' range come back together,
    and only where they fail do further reads name the culprits. Raises ValueError."""
    _check_input_tensor(model, inputs)
    x, t = inputs.detach(), _target_tensor(targets, inputs)
    finite, whole, t_min, t_max = _summary(x, t)
    bad = None if finite else (~torch.isfinite(x)).flatten(1).any(1)
    if bad is not None and bool(bad.any()):  # else finite values whose sum overflowed
        raise ValueError(f"inputs[{_indices(bad)}] contain NaN/Inf: check those images and their preprocessing "
                         f"(e.g. a division by a zero standard deviation), or leave them out")
    if not whole:
        bad = ~torch.isfinite(t) | (t != t.trunc())
        raise ValueError(f"targets[{_indices(bad)}] are not whole numbers ({_values(t, bad)}): give class "
                         f"indices, e.g. targets.round().long() if they are whole numbers stored as floats")
    if t_min < 0:
        bad = t < 0
        raise ValueError(f"targets[{_indices(bad)}] are negative ({_values(t, bad)}): give class indices ≥ 0")
    return x, t.long(), t_max


def _check_input_tensor(model, inputs) -> None:
    """A non-empty floating-point (N, C, H, W) tensor of the model's dtype and device; raises ValueError."""
    if not isinstance(inputs, torch.Tensor) or inputs.ndim != 4:
        raise ValueError(f"inputs must be a (N, C, H, W) tensor, got {type(inputs).__name__} "
                         f"{tuple(getattr(inputs, 'shape', ()))}")
    if not inputs.is_floating_point():
        raise ValueError(f"inputs are {inputs.dtype}; the models take floating-point images: convert them (e.g. "
                         f"x.float()) and preprocess them as the model expects (raw 0–255 pixels are not its input)")
    if inputs.numel() == 0:
        what = "no samples (N = 0)" if inputs.shape[0] == 0 else f"no pixels (shape {tuple(inputs.shape)})"
        raise ValueError(f"inputs hold {what}: pass at least one (C, H, W) image")
    param = next(model.parameters(), None)
    if param is not None and (param.device != inputs.device or param.dtype != inputs.dtype):
        raise ValueError(f"inputs are {inputs.dtype} on {inputs.device} but the model is {param.dtype} on "
                         f"{param.device}; move one of them")


def _target_tensor(targets, inputs: torch.Tensor) -> torch.Tensor:
    """`targets` as a flat real tensor on the inputs' device, one per input (values not yet checked)."""
    try:
        t = torch.as_tensor(targets, device=inputs.device)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"targets must be class indices, one integer per input; got {type(targets).__name__} "
                         f"({e})") from None
    if t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"targets are {t.dtype}; give class indices, one integer per input (a boolean mask "
                         f"or one-hot rows: use .nonzero() or .argmax(1))")
    n = inputs.shape[0]
    if t.numel() != n:
        shape = f" (shape {tuple(t.shape)}: one-hot or score rows? use targets.argmax(1))" if t.ndim > 1 else ""
        raise ValueError(f"{t.numel()} targets for {n} inputs{shape}: give one class index per input")
    return t.reshape(-1)


def _summary(x: torch.Tensor, t: torch.Tensor) -> tuple[bool, bool, int, int]:
    """(inputs' sum finite, targets all whole numbers, min target, max target), read back in one transfer.
    Why the sum: NaN and Inf reach it, and on CPU it is some 50× faster than `torch.isfinite(x).all()` (one
    vectorised pass, no mask); only finite inputs so large that their sum overflows make it a false alarm,
    which the caller's exact check then clears. Half precision is summed in float32, where images cannot."""
    acc = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    if t.is_floating_point():
        whole = (torch.isfinite(t) & (t == t.trunc())).all()
    else:
        whole = torch.ones((), dtype=torch.bool, device=t.device)
    t = t.long()  # a non-whole target makes min/max meaningless, but `whole` is checked first
    finite, whole, t_min, t_max = torch.stack([torch.isfinite(x.sum(dtype=acc)).long(), whole.long(), t.min(),
                                               t.max()]).tolist()
    return bool(finite), bool(whole), t_min, t_max


def _check_target_range(t: torch.Tensor, t_max: int, n_outputs: int | None) -> None:
    """Every target below the model's number of outputs (None: unknown, nothing to check); raises ValueError.
    Why before any backward pass: on CUDA an out-of-range index is a device-side assert that ends the process."""
    if n_outputs is not None and t_max >= n_outputs:
        bad = t >= n_outputs
        raise ValueError(f"targets[{_indices(bad)}] out of range ({_values(t, bad)}): the model has {n_outputs} "
                         f"outputs, so class indices are 0 to {n_outputs - 1}")


def _n_outputs(model, x: torch.Tensor) -> int | None:
    """The model's number of outputs, from one sample (function analyzers have no engine forward pass to tell);
    None where the model's output is not (N, classes) or the forward fails (the analyzers then report it)."""
    try:
        with torch.no_grad():
            out = model(x[:1])
    except Exception:
        return None
    return out.shape[1] if isinstance(out, torch.Tensor) and out.ndim == 2 else None


def _indices(bad: torch.Tensor, limit: int = 10) -> str:
    """'3, 7' for a boolean (N,) tensor true at 3 and 7; the first `limit`, then how many there are in all."""
    idx = bad.nonzero().flatten().tolist()
    shown = ", ".join(map(str, idx[:limit]))
    return shown if len(idx) <= limit else f"{shown}, … ({len(idx)} in all)"


def _values(t: torch.Tensor, bad: torch.Tensor, limit: int = 10) -> str:
    values = t[bad].tolist()
    return ", ".join(map(repr, values[:limit])) + (", …" if len(values) > limit else "")


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
