"""Import a Caffe deployment net (`.prototxt` + `.caffemodel`) as a PyTorch `nn.Sequential`, without Caffe.

Why: the paper's PVOC model is the CaffeNet of Lapuschkin et al. (CVPR 2016), distributed as
`pascalvoc2012_train_simple2_iter_30000.caffemodel` + `deploy_x30.prototxt` (BVLC Model Zoo). The study's
default PVOC model is the torchvision AlexNet fine-tuned on VOC 2012 (docs/models.md); this importer is for
users who hold the original files. Only the `protobuf` package is needed: the message types of the subset of
caffe.proto that deployment nets use are built at run time (no protoc, no generated code), with the field
numbers of BVLC caffe's src/caffe/proto/caffe.proto. Fields outside the subset are skipped, in binary and in
text files alike.

Rules (anything else is a ValueError naming the file, the layer and the problem, never a silently wrong net):
- The prototxt's layers (new-style `layer {}` or V1 `layers {}`) must form one chain: each layer reads the
  previous one's output. Layers are kept or left out by their `include`/`exclude` rules as Caffe's FilterNet
  does for a deploy net (net.cpp StateMeetsRule; phase TEST, level 0, the prototxt's `state { stage }`), so
  `include { phase: TRAIN }`, `exclude { phase: TEST }` and an empty `exclude {}` leave a layer out.
- Convolution (groups, dilation, stride/pad/kernel incl. _h/_w, read as base_conv_layer.cpp does) -> Conv2d;
  ReLU -> ReLU; Pooling MAX/AVE -> MaxPool2d/AvgPool2d with Caffe's ceil-mode output size (`round_mode: FLOOR`
  -> floor; if pad_h or pad_w is non-zero, pooling_layer.cpp drops a last window that starts in the padding in
  BOTH dims, as torch's ceil mode always does); global pooling -> a pool over the whole map; LRN
  ACROSS_CHANNELS -> LocalResponseNorm (same formula, see below); InnerProduct -> Flatten (once, before the
  first one) + Linear; Flatten -> Flatten; Dropout -> Dropout (identity in eval).
- Input/data layers at the start set the input blob; Softmax, Sigmoid (multi-label deploy nets), loss and
  accuracy layers at the end are dropped (LRP starts from the logits; the PVOC model has no softmax: "f_i(x) > 0
  denotes presence of class i"); a Sigmoid anywhere else is unsupported.
- Weights come from the caffemodel's layers (new-style `layer` or V1 `layers`) matched by layer NAME; every
  blob's shape is checked against what the prototxt implies (legacy 4-D num/channels/height/width shapes
  compare after dropping leading 1s, as Caffe's own check does). Caffe's layouts are torch's (OIHW; a
  Linear's input is the (C, H, W) flatten), so no permutation is needed.

LRN: Caffe ACROSS_CHANNELS computes b_c = a_c / (k + α/n Σ_{c' ∈ [c-(n-1)/2, c+(n-1)/2]} a_c'²)^β with zero
padding over channels and odd n (Caffe rejects even n); torch's `local_response_norm` pads (n//2, (n-1)//2)
zero channels and divides the window sum by n, which is the same for odd n. WITHIN_CHANNEL has no torch
module and is rejected. LRP analyzers pass relevance through LRN unchanged (the LRP Toolbox's lrn_backward_type
0), whereas the Toolbox demonstrator used type 1, so CaffeNet maps can differ from the Toolbox's at the LRN layers
(`lrp.rules`, docs/models.md).
"""

from __future__ import annotations

import functools
import math
import re
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from lrp.io import sha256_file
from lrp.models.base import ModelBundle, Preprocessing

#: ImageNet mean pixel in BGR order, 0–255 units: the per-channel average of Caffe's `ilsvrc_2012_mean.npy`
#: (as in Caffe's classification example). The LRP Toolbox demonstrator subtracts the centre-cropped mean
#: IMAGE instead; the per-pixel difference is a few grey levels. Pass `mean=` to use other values.
CAFFENET_BGR_MEAN = (104.00698793, 116.66876762, 122.67891434)
DEFAULT_INPUT_SIZE = 227  # CaffeNet; used only when the prototxt declares no input shape

# The subset of caffe.proto read here. Field names, numbers, types and defaults as in BVLC caffe
# src/caffe/proto/caffe.proto (commit 8a65ae316b34e7c8fdefa6e18bf08a23b78caa0e as stored in the reference
# index); PoolingParameter.round_mode (13) is the later addition of upstream caffe (absent from that commit).
# One statement per line; the tiny parser below turns this into a FileDescriptorProto.
_PROTO = """
message BlobShape {
  repeated int64 dim = 1 [packed = true];
}
message BlobProto {
  optional BlobShape shape = 7;
  repeated float data = 5 [packed = true];
  repeated double double_data = 8 [packed = true];
  optional int32 num = 1 [default = 0];
  optional int32 channels = 2 [default = 0];
  optional int32 height = 3 [default = 0];
  optional int32 width = 4 [default = 0];
}
message NetStateRule {
  optional Phase phase = 1;
  optional int32 min_level = 2;
  optional int32 max_level = 3;
  repeated string stage = 4;
  repeated string not_stage = 5;
}
message NetState {
  optional Phase phase = 1 [default = TEST];
  optional int32 level = 2 [default = 0];
  repeated string stage = 3;
}
message NetParameter {
  optional string name = 1;
  repeated string input = 3;
  repeated BlobShape input_shape = 8;
  repeated int32 input_dim = 4;
  optional NetState state = 6;
  repeated LayerParameter layer = 100;
  repeated V1LayerParameter layers = 2;
}
message LayerParameter {
  optional string name = 1;
  optional string type = 2;
  repeated string bottom = 3;
  repeated string top = 4;
  repeated BlobProto blobs = 7;
  repeated NetStateRule include = 8;
  repeated NetStateRule exclude = 9;
  optional ConvolutionParameter convolution_param = 106;
  optional DropoutParameter dropout_param = 108;
  optional FlattenParameter flatten_param = 135;
  optional InnerProductParameter inner_product_param = 117;
  optional InputParameter input_param = 143;
  optional LRNParameter lrn_param = 118;
  optional PoolingParameter pooling_param = 121;
  optional ReLUParameter relu_param = 123;
}
message ConvolutionParameter {
  optional uint32 num_output = 1;
  optional bool bias_term = 2 [default = true];
  repeated uint32 pad = 3;
  repeated uint32 kernel_size = 4;
  repeated uint32 stride = 6;
  repeated uint32 dilation = 18;
  optional uint32 pad_h = 9 [default = 0];
  optional uint32 pad_w = 10 [default = 0];
  optional uint32 kernel_h = 11;
  optional uint32 kernel_w = 12;
  optional uint32 stride_h = 13;
  optional uint32 stride_w = 14;
  optional uint32 group = 5 [default = 1];
  optional int32 axis = 16 [default = 1];
}
message DropoutParameter {
  optional float dropout_ratio = 1 [default = 0.5];
}
message FlattenParameter {
  optional int32 axis = 1 [default = 1];
  optional int32 end_axis = 2 [default = -1];
}
message InnerProductParameter {
  optional uint32 num_output = 1;
  optional bool bias_term = 2 [default = true];
  optional int32 axis = 5 [default = 1];
  optional bool transpose = 6 [default = false];
}
message InputParameter {
  repeated BlobShape shape = 1;
}
message LRNParameter {
  optional uint32 local_size = 1 [default = 5];
  optional float alpha = 2 [default = 1.];
  optional float beta = 3 [default = 0.75];
  enum NormRegion {
    ACROSS_CHANNELS = 0;
    WITHIN_CHANNEL = 1;
  }
  optional NormRegion norm_region = 4 [default = ACROSS_CHANNELS];
  optional float k = 5 [default = 1.];
}
message PoolingParameter {
  enum PoolMethod {
    MAX = 0;
    AVE = 1;
    STOCHASTIC = 2;
  }
  optional PoolMethod pool = 1 [default = MAX];
  optional uint32 pad = 4 [default = 0];
  optional uint32 pad_h = 9 [default = 0];
  optional uint32 pad_w = 10 [default = 0];
  optional uint32 kernel_size = 2;
  optional uint32 kernel_h = 5;
  optional uint32 kernel_w = 6;
  optional uint32 stride = 3 [default = 1];
  optional uint32 stride_h = 7;
  optional uint32 stride_w = 8;
  optional bool global_pooling = 12 [default = false];
  enum RoundMode {
    CEIL = 0;
    FLOOR = 1;
  }
  optional RoundMode round_mode = 13 [default = CEIL];
}
message ReLUParameter {
  optional float negative_slope = 1 [default = 0];
}
message V1LayerParameter {
  repeated string bottom = 2;
  repeated string top = 3;
  optional string name = 4;
  repeated NetStateRule include = 32;
  repeated NetStateRule exclude = 33;
  enum LayerType {
    NONE = 0;
    ABSVAL = 35;
    ACCURACY = 1;
    ARGMAX = 30;
    BNLL = 2;
    CONCAT = 3;
    CONTRASTIVE_LOSS = 37;
    CONVOLUTION = 4;
    DATA = 5;
    DECONVOLUTION = 39;
    DROPOUT = 6;
    DUMMY_DATA = 32;
    EUCLIDEAN_LOSS = 7;
    ELTWISE = 25;
    EXP = 38;
    FLATTEN = 8;
    HDF5_DATA = 9;
    HDF5_OUTPUT = 10;
    HINGE_LOSS = 28;
    IM2COL = 11;
    IMAGE_DATA = 12;
    INFOGAIN_LOSS = 13;
    INNER_PRODUCT = 14;
    LRN = 15;
    MEMORY_DATA = 29;
    MULTINOMIAL_LOGISTIC_LOSS = 16;
    MVN = 34;
    POOLING = 17;
    POWER = 26;
    RELU = 18;
    SIGMOID = 19;
    SIGMOID_CROSS_ENTROPY_LOSS = 27;
    SILENCE = 36;
    SOFTMAX = 20;
    SOFTMAX_LOSS = 21;
    SPLIT = 22;
    SLICE = 33;
    TANH = 23;
    WINDOW_DATA = 24;
    THRESHOLD = 31;
  }
  optional LayerType type = 5;
  repeated BlobProto blobs = 6;
  optional ConvolutionParameter convolution_param = 10;
  optional DropoutParameter dropout_param = 12;
  optional InnerProductParameter inner_product_param = 17;
  optional LRNParameter lrn_param = 18;
  optional PoolingParameter pooling_param = 19;
  optional ReLUParameter relu_param = 30;
}
enum Phase {
  TRAIN = 0;
  TEST = 1;
}
"""

#: V1 enum type -> the new-style type string (Caffe's upgrade_proto.cpp UpgradeV1LayerType).
V1_TYPES = {
    "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL", "CONCAT": "Concat",
    "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution", "DECONVOLUTION": "Deconvolution",
    "DATA": "Data", "DROPOUT": "Dropout", "DUMMY_DATA": "DummyData", "EUCLIDEAN_LOSS": "EuclideanLoss",
    "ELTWISE": "Eltwise", "EXP": "Exp", "FLATTEN": "Flatten", "HDF5_DATA": "HDF5Data",
    "HDF5_OUTPUT": "HDF5Output", "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col", "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct", "LRN": "LRN", "MEMORY_DATA": "MemoryData",
    "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss", "MVN": "MVN", "POOLING": "Pooling", "POWER": "Power",
    "RELU": "ReLU", "SIGMOID": "Sigmoid", "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss",
    "SILENCE": "Silence", "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split",
    "SLICE": "Slice", "TANH": "TanH", "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold",
}
_DATA_TYPES = {"Input", "Data", "ImageData", "MemoryData", "HDF5Data", "DummyData", "WindowData"}
_TAIL_TYPES = {"Softmax", "Sigmoid", "Accuracy", "Silence"}  # plus every "...Loss" type


class CaffeFormatError(ValueError):
    """The files are not a Caffe net this importer can convert exactly."""


# ----------------------------------------------------------------------------------------------- messages


@functools.lru_cache(maxsize=1)
def messages() -> dict:
    """{message name: class} for the caffe.proto subset above (NetParameter, LayerParameter, BlobProto, ...).

    Built once in a private descriptor pool, so it cannot clash with a generated `caffe_pb2` in the process.
    """
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fdp = _file_descriptor(descriptor_pb2)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {m.name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"caffe.{m.name}"))
            for m in fdp.message_type}


_SCALARS = {"string": "TYPE_STRING", "int32": "TYPE_INT32", "int64": "TYPE_INT64", "uint32": "TYPE_UINT32",
            "float": "TYPE_FLOAT", "double": "TYPE_DOUBLE", "bool": "TYPE_BOOL"}
_FIELD = re.compile(r"(optional|repeated) (\w+) (\w+) = (\d+)(?: \[(packed = true|default = ([^\]]+))\])?;$")


def _file_descriptor(descriptor_pb2):
    """Parse `_PROTO` (one statement per line, enums nested at most one level) into a FileDescriptorProto."""
    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="lrp_caffe_subset.proto", package="caffe", syntax="proto2")
    stack, fields = [], []  # stack: open DescriptorProto / EnumDescriptorProto
    for line in (s.strip() for s in _PROTO.splitlines()):
        if not line:
            continue
        if m := re.fullmatch(r"message (\w+) \{", line):
            stack.append(fdp.message_type.add(name=m.group(1)))
        elif m := re.fullmatch(r"enum (\w+) \{", line):
            parent = stack[-1] if stack else fdp
            stack.append(parent.enum_type.add(name=m.group(1)))
        elif line == "}":
            stack.pop()
        elif m := re.fullmatch(r"(\w+) = (-?\d+);", line):
            stack[-1].value.add(name=m.group(1), number=int(m.group(2)))
        elif m := _FIELD.fullmatch(line):
            label, typ, name, number, option, default = m.groups()
            f = stack[-1].field.add(name=name, number=int(number),
                                    label=F.LABEL_REPEATED if label == "repeated" else F.LABEL_OPTIONAL)
            if typ in _SCALARS:
                f.type = getattr(F, _SCALARS[typ])
            else:
                fields.append((f, typ, stack[-1]))
            if option == "packed = true":
                f.options.packed = True
            elif default is not None:
                f.default_value = {"true": "true", "false": "false"}.get(default, default.rstrip("."))
        else:
            raise AssertionError(f"bad line in the caffe.proto subset: {line!r}")
    messages_ = {m.name for m in fdp.message_type}
    enums = {e.name for e in fdp.enum_type}
    for f, typ, owner in fields:  # resolve message / enum type names (nested enums first)
        if typ in {e.name for e in owner.enum_type}:
            f.type, f.type_name = F.TYPE_ENUM, f".caffe.{owner.name}.{typ}"
        elif typ in enums:
            f.type, f.type_name = F.TYPE_ENUM, f".caffe.{typ}"
        elif typ in messages_:
            f.type, f.type_name = F.TYPE_MESSAGE, f".caffe.{typ}"
        else:
            raise AssertionError(f"unknown type {typ!r} in the caffe.proto subset")
    return fdp


# ----------------------------------------------------------------------------------------------- reading


def read_prototxt(path: str | Path):
    """The text-format NetParameter of `path`; unknown fields (fillers, lr_mult, engines, ...) are skipped."""
    from google.protobuf import text_format

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: prototxt not found")
    net = messages()["NetParameter"]()
    try:
        text_format.Parse(path.read_text(encoding="utf-8"), net, allow_unknown_field=True)
    except (UnicodeDecodeError, text_format.ParseError) as e:
        raise CaffeFormatError(f"{path}: not a Caffe text-format net (prototxt): {e}") from e
    return net


def read_caffemodel(path: str | Path):
    """The binary NetParameter of `path` (blobs by layer); a truncated or corrupt file is a ValueError."""
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: caffemodel not found")
    data = path.read_bytes()
    if data[:4] == b"\x89HDF":
        raise CaffeFormatError(f"{path}: HDF5 caffemodels are not supported; save the net as binary protobuf")
    net = messages()["NetParameter"]()
    try:
        net.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise CaffeFormatError(f"{path}: not a valid binary Caffe model (truncated or corrupt): {e}") from e
    if not len(net.layer) and not len(net.layers):
        raise CaffeFormatError(f"{path}: no layers in the file; is it a binary .caffemodel?")
    return net


def _blobs_by_name(net) -> dict[str, list]:
    out: dict[str, list] = {}
    for layer in [*net.layer, *net.layers]:
        if len(layer.blobs) and layer.name not in out:
            out[layer.name] = list(layer.blobs)
    return out


def _meets_rule(rule, level: int, stages: set[str]) -> bool:
    """net.cpp StateMeetsRule for a TEST-phase state: every condition the rule sets must hold (an empty rule
    is always met, so an empty `exclude {}` removes its layer)."""
    TEST = 1
    if rule.HasField("phase") and rule.phase != TEST:
        return False
    if rule.HasField("min_level") and level < rule.min_level:
        return False
    if rule.HasField("max_level") and level > rule.max_level:
        return False
    return all(s in stages for s in rule.stage) and not any(s in stages for s in rule.not_stage)


def _layer_type(layer) -> str:
    if hasattr(layer, "type") and isinstance(layer.type, str):
        return layer.type
    name = layer.DESCRIPTOR.fields_by_name["type"].enum_type.values_by_number[layer.type].name
    return V1_TYPES.get(name, name)


# ----------------------------------------------------------------------------------------------- building


class _Builder:
    """Walks the prototxt's layer chain, tracking the blob shape (C, H, W) or (D,), and loads the weights."""

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
        if len(self.net.layer) and len(self.net.layers):
            raise CaffeFormatError(f"{self.proto}: mixes new-style `layer` and V1 `layers` entries")
        layers = [lay for lay in (list(self.net.layer) or list(self.net.layers)) if self._included(lay)]
        tail: list[tuple[str, str]] = []  # (name, type) of the dropped softmax/sigmoid/loss/accuracy layers
        for layer in layers:
            kind = _layer_type(layer)
            if kind in _DATA_TYPES:
                if self.modules:
                    self.fail(layer.name, f"data layer of type {kind} after the first compute layer")
                self.current = layer.top[0] if len(layer.top) else self.current
                if kind == "Input" and len(layer.input_param.shape):
                    self.shape = self.input_shape = self._chw(list(layer.input_param.shape[0].dim),
                                                              f"layer '{layer.name}'", input_size)
                continue
            if kind in _TAIL_TYPES or kind.endswith("Loss"):
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

    def _included(self, layer) -> bool:
        """net.cpp FilterNet for the state a deploy net is loaded in: phase TEST, the prototxt's stages, level 0
        (Caffe's Net(file, phase, level = 0) constructor; older Caffe kept the prototxt's `state { level }`, so a
        non-zero one is rejected where a rule tests levels). Any met include rule keeps the layer, any met
        exclude rule drops it; no rules: kept."""
        rules = [*layer.include, *layer.exclude]
        if len(layer.include) and len(layer.exclude):
            self.fail(layer.name, "has both include and exclude rules (Caffe: 'Specify either include rules or "
                                  "exclude rules; not both')")
        state = self.net.state
        if state.level != 0 and any(r.HasField("min_level") or r.HasField("max_level") for r in rules):
            self.fail(layer.name, f"level rules with `state {{ level: {state.level} }}`: Caffe versions disagree "
                                  "(newer ones load deploy nets at level 0); remove the state level or the rule")
        stages = set(state.stage)
        if len(layer.include):
            return any(_meets_rule(r, 0, stages) for r in layer.include)
        return not any(_meets_rule(r, 0, stages) for r in layer.exclude)

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
        return np.fromiter(values, dtype=np.float32, count=len(values)).reshape(shape)


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


# ----------------------------------------------------------------------------------------------- public


def _import(caffemodel_path, prototxt_path, input_size: int):
    proto, model = Path(prototxt_path), Path(caffemodel_path)
    net = read_prototxt(proto)
    builder = _Builder(net, _blobs_by_name(read_caffemodel(model)), proto, model, input_size)
    module = builder.build(input_size)
    for param in module.parameters():
        param.requires_grad_(False)
    return module, builder


def from_caffe(caffemodel_path: str | Path, prototxt_path: str | Path,
               input_size: int = DEFAULT_INPUT_SIZE) -> nn.Sequential:
    """The prototxt's net with the caffemodel's weights: an eval-mode `nn.Sequential` ending in the logits.

    Input: NCHW float in Caffe's preprocessed space (CaffeNet: BGR, mean subtracted, 0–255). Module names are
    the Caffe layer names ('.' and '/' replaced by '_'), plus 'flatten' before the first InnerProduct.
    `input_size` (square side, 3 channels) is used only when the prototxt declares no input shape.
    """
    return _import(caffemodel_path, prototxt_path, input_size)[0]


def caffe_bundle(caffemodel_path: str | Path, prototxt_path: str | Path,
                 mean: Sequence[float] | None = None, class_names: Sequence[str] | None = None,
                 input_size: int = DEFAULT_INPUT_SIZE) -> ModelBundle:
    """A Caffe net as a ModelBundle: BGR, minus `mean` (BGR, 0–255; default the ImageNet mean pixel
    CAFFENET_BGR_MEAN), no scaling, input size from the prototxt (CaffeNet: 227, images warped to it).

    Class names: `class_names`, else VOC_CLASSES for 20 outputs (the PVOC model), the ImageNet WNIDs for 1000.
    """
    module, builder = _import(caffemodel_path, prototxt_path, input_size)
    c, h, w = builder.input_shape
    if c != 3 or h != w:
        raise CaffeFormatError(f"{prototxt_path}: input shape {builder.input_shape}; a bundle needs 3×S×S images")
    mean = tuple(float(m) for m in (CAFFENET_BGR_MEAN if mean is None else mean))
    if len(mean) != 3:
        raise ValueError(f"mean must be 3 numbers (B, G, R in 0–255), got {mean}")
    n_out = builder.shape[0]
    if class_names is None:
        if n_out == 20:
            from lrp.datasets.voc import VOC_CLASSES

            class_names = VOC_CLASSES
        elif n_out == 1000:
            from lrp.models.keras import imagenet_class_names

            class_names = imagenet_class_names()
        else:
            raise ValueError(f"{caffemodel_path}: {n_out} outputs; pass class_names (known: 20 = VOC, 1000 = ImageNet)")
    class_names = list(class_names)
    if len(class_names) != n_out:
        raise ValueError(f"{caffemodel_path}: {n_out} outputs but {len(class_names)} class names")
    return ModelBundle(
        module=module,
        preprocessing=Preprocessing(mean=mean, std=(1.0, 1.0, 1.0), channel_order="BGR"),
        input_size=h,
        class_names=class_names,
        name="caffe",
        checksum=sha256_file(caffemodel_path),
        info={"source": str(caffemodel_path), "prototxt": str(prototxt_path), "format": "caffe",
              "net_name": builder.net.name, "input_shape": list(builder.input_shape),
              "dropped_layers": builder.dropped},
    )
