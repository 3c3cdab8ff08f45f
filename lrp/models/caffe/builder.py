"""Map a deploy net's layer chain to torch modules, with Caffe's shape arithmetic, and load its weights.

Why its own module: this is where "exactly as Caffe computes it" is decided, layer by layer; anything without an
exact torch equivalent is a CaffeFormatError naming the file, the layer and the problem, never a silently wrong net.
- The kept layers (`net.kept_layers`) must form one chain: each layer reads the previous one's output.
- Convolution (groups, dilation, stride/pad/kernel incl. _h/_w, read as base_conv_layer.cpp does) -> Conv2d;
  ReLU -> ReLU; Pooling MAX/AVE -> MaxPool2d/AvgPool2d with Caffe's ceil-mode output size (`round_mode: FLOOR`
  -> floor; if pad_h or pad_w is non-zero, pooling_layer.cpp drops a last window that starts in the padding in
  BOTH dims, as torch's ceil mode always does); global pooling -> a pool over the whole map; LRN
  ACROSS_CHANNELS -> LocalResponseNorm (same formula, see below); InnerProduct -> Flatten (once, before the
  first one) + Linear; Flatten -> Flatten; Dropout -> Dropout (identity in eval).
- Input/data layers at the start set the input blob; Softmax, Sigmoid (multi-label deploy nets), loss and
  accuracy layers at the end are dropped (LRP starts from the logits; the PVOC model has no softmax: "f_i(x) > 0
  denotes presence of class i"); a Sigmoid anywhere else is unsupported.
- Weights come from the caffemodel's layers matched by layer NAME; every blob's shape is checked against what the
  prototxt implies (legacy 4-D num/channels/height/width shapes compare after dropping leading 1s, as Caffe's own
  check does), and blobs holding NaN or ±Inf are refused. Caffe's layouts are torch's (OIHW; a Linear's input is
  the (C, H, W) flatten), so no permutation is needed.

LRN: Caffe ACROSS_CHANNELS computes b_c = a_c / (k + α/n Σ_{c' ∈ [c-(n-1)/2, c+(n-1)/2]} a_c'²)^β with zero
padding over channels and odd n (Caffe rejects even n); torch's `local_response_norm` pads (n//2, (n-1)//2)
zero channels and divides the window sum by n, which is the same for odd n. WITHIN_CHANNEL has no torch
module and is rejected. LRP analyzers pass relevance through LRN unchanged (the LRP Toolbox's lrn_backward_type
0), whereas the Toolbox demonstrator used type 1, so CaffeNet maps can differ from the Toolbox's at the LRN layers
(`lrp.rules`, docs/models.md).
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from lrp.models.base import non_finite_problem
from lrp.models.caffe.errors import CaffeFormatError
from lrp.models.caffe.net import DATA_TYPES, is_tail_type, kept_layers, layer_type


class NetBuilder:
    """Walks the prototxt's layer chain, tracking the blob shape (C, H, W) or (D,), and loads the weights.

    `blobs` is the caffemodel's layer name -> blobs (`files.blobs_by_name`); `proto` and `model` are the two paths
    that errors name. After `build`, `input_shape`, `shape` (the output's) and `dropped` (tail layers) describe
    the net. Every problem is a CaffeFormatError naming the file, the layer and the problem.
    """

    def __init__(self, net, blobs: dict, proto: Path, model: Path, input_size: int):
        self.net, self.blobs, self.proto, self.model = net, blobs, proto, model
        self.modules: OrderedDict[str, nn.Module] = OrderedDict()
        self.dropped: list[str] = []
        self.current, self.shape = self._net_input(input_size)
        self.input_shape = self.shape
        self.flattened = False

    def fail(self, layer_name: str, problem: str, file: Path | None = None):
        raise CaffeFormatError(f"{file or self.proto}: layer '{layer_name}': {problem}")

    def _net_input(self, input_size: int):
        net = self.net
        if len(net.input):
            if len(net.input_shape):
                dims = list(net.input_shape[0].dim)
            elif len(net.input_dim):
                dims = list(net.input_dim[:4])
            else:
                dims = []
            return net.input[0], self._chw(dims, f"input '{net.input[0]}'", input_size)
        return None, (3, input_size, input_size)

    def _chw(self, dims: Sequence[int], where: str, input_size: int):
        if not dims:
            return (3, input_size, input_size)
        if len(dims) != 4 or min(dims[1:]) < 1:
            raise CaffeFormatError(f"{self.proto}: {where}: expected a 4-D N×C×H×W input shape, got {list(dims)}")
        return tuple(int(d) for d in dims[1:])

    def build(self, input_size: int) -> nn.Sequential:
        layers = kept_layers(self.net, self.proto)
        tail: list[tuple[str, str]] = []  # (name, type) of the dropped softmax/sigmoid/loss/accuracy layers
        for layer in layers:
            kind = layer_type(layer)
            if kind in DATA_TYPES:
                if self.modules:
                    self.fail(layer.name, f"data layer of type {kind} after the first compute layer")
                self.current = layer.top[0] if len(layer.top) else self.current
                if kind == "Input" and len(layer.input_param.shape):
                    self.shape = self.input_shape = self._chw(list(layer.input_param.shape[0].dim),
                                                              f"layer '{layer.name}'", input_size)
                continue
            if is_tail_type(kind):
                tail.append((layer.name, kind))
                continue
            if tail:
                self.fail(tail[0][0], f"{tail[0][1]} before layer '{layer.name}'; Softmax/Sigmoid/loss/accuracy "
                                      "layers are only allowed at the end (where they are dropped)")
            self._check_chain(layer, kind)
            self._add(layer, kind)
            self.current = layer.top[0]
        self.dropped = [f"{name} ({kind})" for name, kind in tail]
        if not any(isinstance(m, (nn.Conv2d, nn.Linear)) for m in self.modules.values()):
            raise CaffeFormatError(f"{self.proto}: no Convolution or InnerProduct layer")
        return nn.Sequential(self.modules).eval()

    def _check_chain(self, layer, kind: str):
        if len(layer.bottom) != 1 or len(layer.top) != 1:
            self.fail(layer.name, f"{kind} with {len(layer.bottom)} bottoms and {len(layer.top)} tops; only a "
                                  "single chain of one-input, one-output layers is supported")
        if self.current is not None and layer.bottom[0] != self.current:
            self.fail(layer.name, f"reads blob '{layer.bottom[0]}' but the previous layer wrote '{self.current}'; "
                                  "only a single chain of layers is supported")

    def _name(self, caffe_name: str) -> str:
        """Module name: Caffe's, with '.' and '/' replaced (torch and the pattern files forbid them)."""
        name = re.sub(r"[./]", "_", caffe_name) or "layer"
        while name in self.modules:
            name += "_"
        return name

    def _add(self, layer, kind: str):
        name = layer.name
        if kind == "Convolution":
            self._conv(layer)
        elif kind == "InnerProduct":
            self._inner_product(layer)
        elif kind == "Pooling":
            self._pool(layer)
        elif kind == "ReLU":
            if layer.relu_param.negative_slope != 0:
                self.fail(name, f"ReLU with negative_slope={layer.relu_param.negative_slope} (leaky) is not supported")
            self.modules[self._name(name)] = nn.ReLU()
        elif kind == "LRN":
            self._lrn(layer)
        elif kind == "Dropout":
            self.modules[self._name(name)] = nn.Dropout(p=float(layer.dropout_param.dropout_ratio))
        elif kind == "Flatten":
            fp = layer.flatten_param
            if fp.axis != 1 or fp.end_axis != -1:
                self.fail(name, f"Flatten with axis={fp.axis}, end_axis={fp.end_axis} (only 1, -1 is supported)")
            self._flatten(name)
        else:
            self.fail(name, f"unsupported layer type {kind!r} (supported: Convolution, ReLU, Pooling MAX/AVE, "
                            "LRN, InnerProduct, Dropout, Flatten; Input/data at the start; Softmax/Sigmoid/loss at "
                            "the end)")

    def _spatial(self, name: str) -> tuple[int, int, int]:
        if len(self.shape) != 3:
            self.fail(name, f"needs a C×H×W input, but its input is already flattened to {self.shape}")
        return self.shape

    def _conv(self, layer):
        name, p = layer.name, layer.convolution_param
        c, h, w = self._spatial(name)
        if p.axis != 1:
            self.fail(name, f"convolution axis={p.axis} is not supported (only 1)")
        kh, kw = self._conv_hw(name, p, "kernel_size", "kernel", None)
        ph, pw = self._conv_hw(name, p, "pad", "pad", 0)
        sh, sw = self._conv_hw(name, p, "stride", "stride", 1)
        dh, dw = self._conv_hw(name, p, "dilation", None, 1)
        if min(kh, kw, sh, sw, dh, dw) < 1:
            self.fail(name, f"kernel {kh}×{kw}, stride {sh}×{sw} and dilation {dh}×{dw} must be nonzero")
        g, n_out = int(p.group), int(p.num_output)
        if n_out < 1 or g < 1 or c % g or n_out % g:
            self.fail(name, f"num_output={n_out} and input channels {c} must both be divisible by group={g}")
        oh = (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
        ow = (w + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
        if oh < 1 or ow < 1:
            self.fail(name, f"kernel {kh}×{kw} does not fit its {h}×{w} input (pad {ph}×{pw})")
        conv = nn.Conv2d(c, n_out, (kh, kw), (sh, sw), (ph, pw), (dh, dw), g, bias=bool(p.bias_term))
        self._load(layer, conv, (n_out, c // g, kh, kw), bool(p.bias_term))
        self.modules[self._name(name)] = conv
        self.shape = (n_out, oh, ow)

    def _conv_hw(self, name: str, p, field: str, hw: str | None, default):
        """(h, w) of a convolution field as base_conv_layer.cpp LayerSetUp reads it: if `{hw}_h` or `{hw}_w`
        is set, both are used (the unset one at its proto default 0, so a lone kernel_h or stride_h fails the
        nonzero check) and `field` must be empty; else `field` once for both dims or once per dim, or
        `default` if empty."""
        values = [int(v) for v in getattr(p, field)]
        if hw and (p.HasField(f"{hw}_h") or p.HasField(f"{hw}_w")):
            if values:
                self.fail(name, f"either {field} or {hw}_h/{hw}_w should be specified; not both (as Caffe requires)")
            return int(getattr(p, f"{hw}_h")), int(getattr(p, f"{hw}_w"))
        if not values and default is None:
            self.fail(name, f"no {field} (or {hw}_h/{hw}_w) given")
        if len(values) > 2:
            self.fail(name, f"{field} given {len(values)} times; must be once, or once per spatial dimension (2)")
        if not values:
            return default, default
        return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])

    def _inner_product(self, layer):
        name, p = layer.name, layer.inner_product_param
        if p.axis != 1:
            self.fail(name, f"inner product axis={p.axis} is not supported (only 1)")
        if len(self.shape) == 3:
            self._flatten(name)
        n_in, n_out = self.shape[0], int(p.num_output)
        if n_out < 1:
            self.fail(name, "num_output must be ≥ 1")
        linear = nn.Linear(n_in, n_out, bias=bool(p.bias_term))
        self._load(layer, linear, (n_out, n_in), bool(p.bias_term), transpose=bool(p.transpose))
        self.modules[self._name(name)] = linear
        self.shape = (n_out,)

    def _flatten(self, name: str):
        if self.flattened or len(self.shape) != 3:
            self.fail(name, "flattens an input that is already flat")
        self.modules[self._name("flatten" if "flatten" not in self.modules else f"flatten_{name}")] = nn.Flatten()
        self.shape = (math.prod(self.shape),)
        self.flattened = True

    def _pool(self, layer):
        name, p = layer.name, layer.pooling_param
        c, h, w = self._spatial(name)
        method = {0: "MAX", 1: "AVE", 2: "STOCHASTIC"}[p.pool]
        if method == "STOCHASTIC":
            self.fail(name, "STOCHASTIC pooling is not supported")
        # pooling_layer.cpp LayerSetUp: kernel_size OR both kernel_h and kernel_w (none with global pooling)
        has = p.HasField
        if p.global_pooling:
            if has("kernel_size") or has("kernel_h") or has("kernel_w"):
                self.fail(name, "global pooling must not set a kernel size")
            kh, kw = h, w
        elif has("kernel_size") == (has("kernel_h") and has("kernel_w")):
            self.fail(name, "the kernel is kernel_size OR both kernel_h and kernel_w (as Caffe requires)")
        else:
            kh, kw = (int(p.kernel_size),) * 2 if has("kernel_size") else (int(p.kernel_h), int(p.kernel_w))
        ph, pw = self._pool_hw(name, p, "pad")
        sh, sw = self._pool_hw(name, p, "stride")
        if p.global_pooling and (ph, pw, sh, sw) != (0, 0, 1, 1):
            self.fail(name, f"global pooling allows only pad 0 and stride 1, got pad {ph}×{pw}, stride {sh}×{sw}")
        if min(kh, kw, sh, sw) < 1:
            self.fail(name, f"kernel {kh}×{kw} and stride {sh}×{sw} must be nonzero")
        ceil = p.round_mode == 0  # CEIL, Caffe's default
        if ph > kh // 2 or pw > kw // 2:
            self.fail(name, f"pad {ph}×{pw} larger than half the {kh}×{kw} kernel is not supported")
        clip = bool(ph or pw)  # Caffe clips a last window starting in the padding, in both dims, if either pads
        oh, ow = _caffe_pool_size(h, kh, sh, ph, ceil, clip), _caffe_pool_size(w, kw, sw, pw, ceil, clip)
        torch_size = (_torch_pool_size(h, kh, sh, ph, ceil), _torch_pool_size(w, kw, sw, pw, ceil))
        if (oh, ow) != torch_size or min(oh, ow) < 1:
            self.fail(name, f"pool {kh}×{kw}/{sh}×{sw} pad {ph}×{pw} on {h}×{w}: Caffe's output size {oh}×{ow} "
                            "has no torch equivalent (e.g. a stride larger than the kernel)")
        if method == "MAX":
            pool = nn.MaxPool2d((kh, kw), (sh, sw), (ph, pw), ceil_mode=ceil)
        else:  # Caffe averages over the window clipped to the padded input: count_include_pad=True
            pool = nn.AvgPool2d((kh, kw), (sh, sw), (ph, pw), ceil_mode=ceil, count_include_pad=True)
        self.modules[self._name(name)] = pool
        self.shape = (c, oh, ow)

    def _pool_hw(self, name: str, p, field: str) -> tuple[int, int]:
        """(h, w) of a pooling pad/stride as pooling_layer.cpp reads it: `field` for both dims, or both
        `field_h` and `field_w` (Caffe rejects a lone one and a mix with `field`)."""
        has_h, has_w = p.HasField(f"{field}_h"), p.HasField(f"{field}_w")
        if not has_h and not has_w:
            return int(getattr(p, field)), int(getattr(p, field))
        if p.HasField(field) or not (has_h and has_w):
            self.fail(name, f"{field} is {field} OR both {field}_h and {field}_w (as Caffe requires)")
        return int(getattr(p, f"{field}_h")), int(getattr(p, f"{field}_w"))

    def _lrn(self, layer):
        name, p = layer.name, layer.lrn_param
        self._spatial(name)
        if p.norm_region != 0:
            self.fail(name, "LRN with norm_region WITHIN_CHANNEL is not supported (only ACROSS_CHANNELS)")
        if p.local_size % 2 == 0 or p.local_size < 1:
            self.fail(name, f"LRN local_size must be odd (as Caffe requires), got {p.local_size}")
        self.modules[self._name(name)] = nn.LocalResponseNorm(int(p.local_size), float(p.alpha), float(p.beta),
                                                              float(p.k))

    def _load(self, layer, module: nn.Module, weight_shape: tuple, bias: bool, transpose: bool = False):
        name = layer.name
        blobs = self.blobs.get(name)
        if blobs is None:
            self.fail(name, f"no weights in the caffemodel for this layer (needed by {self.proto})", self.model)
        want = 2 if bias else 1
        if len(blobs) != want:
            self.fail(name, f"has {len(blobs)} blob(s); the prototxt {self.proto} implies {want} "
                            f"({'weights and bias' if bias else 'weights only, bias_term: false'})", self.model)
        w_shape = (weight_shape[1], weight_shape[0]) if transpose else weight_shape
        w = self._blob(name, blobs[0], w_shape, "weight")
        if transpose:
            w = w.T
        with torch.no_grad():
            module.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
            if bias:
                module.bias.copy_(torch.from_numpy(self._blob(name, blobs[1], (weight_shape[0],), "bias")))

    def _blob(self, name: str, blob, shape: tuple, what: str) -> np.ndarray:
        """The float32 values of `blob` in `shape`; its element count, shape (legacy 4-D dims compare after
        dropping leading 1s, as Caffe's check does) and finiteness are checked first (CaffeFormatError)."""
        if blob.HasField("shape"):
            got = tuple(int(d) for d in blob.shape.dim)
        else:  # legacy 4-D dims
            got = (int(blob.num), int(blob.channels), int(blob.height), int(blob.width))
        values = blob.data if len(blob.data) else blob.double_data
        if len(values) != math.prod(got):
            self.fail(name, f"{what} blob holds {len(values)} values but its shape is {got}", self.model)
        if _strip_ones(got) != _strip_ones(shape):
            self.fail(name, f"{what} blob has shape {got} but the prototxt {self.proto} implies {shape}", self.model)
        # fromiter: twice as fast as np.asarray on a protobuf repeated field (~1.5 s for CaffeNet's fc6)
        array = np.fromiter(values, dtype=np.float32, count=len(values)).reshape(shape)
        if problem := non_finite_problem(torch.from_numpy(array)):
            self.fail(name, f"{what} blob: {problem} as float32; such weights give NaN attribution maps", self.model)
        return array


def _strip_ones(shape: tuple) -> tuple:
    i = 0
    while i < len(shape) and shape[i] == 1:
        i += 1
    return tuple(shape[i:])


def _caffe_pool_size(n: int, k: int, s: int, p: int, ceil: bool, clip: bool) -> int:
    """pooling_layer.cpp: ceil((n + 2p - k) / s) + 1, minus one if the last window starts in the padding (or,
    with p = 0, past the input), checked in both dims if the layer pads in either (`clip`: pad_h || pad_w)."""
    out = (-(-(n + 2 * p - k) // s) if ceil else (n + 2 * p - k) // s) + 1
    if clip and (out - 1) * s >= n + p:
        out -= 1
    return out


def _torch_pool_size(n: int, k: int, s: int, p: int, ceil: bool) -> int:
    """torch's pooling_output_shape: the same, but the last-window check applies without padding too."""
    out = (-(-(n + 2 * p - k) // s) if ceil else (n + 2 * p - k) // s) + 1
    if ceil and (out - 1) * s >= n + p:
        out -= 1
    return out
