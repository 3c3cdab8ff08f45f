"""The subset of BVLC caffe.proto that deployment nets use, as protobuf message classes built at run time.

Why: reading `.prototxt` and `.caffemodel` files needs Caffe's message types, but a generated `caffe_pb2` needs
protoc (or Caffe itself). Here the subset is written down as proto text, parsed by a tiny line parser into a
FileDescriptorProto and registered in a private descriptor pool, so only the `protobuf` package is needed and no
generated `caffe_pb2` elsewhere in the process can clash. Fields outside the subset are skipped when parsing, in
binary and text files alike.
"""

from __future__ import annotations

import functools
import re

# The subset of caffe.proto read here. Field names, numbers, types and defaults as in BVLC caffe
# src/caffe/proto/caffe.proto (commit 8a65ae316b34e7c8fdefa6e18bf08a23b78caa0e as stored in the reference
# index); PoolingParameter.round_mode (13) is the later addition of upstream caffe (absent from that commit).
# One statement per line; `_file_descriptor` turns this into a FileDescriptorProto.
CAFFE_PROTO_SUBSET = """
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


@functools.lru_cache(maxsize=1)
def messages() -> dict:
    """{message name: class} for `CAFFE_PROTO_SUBSET` (NetParameter, LayerParameter, BlobProto, ...).

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
    """Parse `CAFFE_PROTO_SUBSET` (one statement per line, enums nested at most one level) into a
    FileDescriptorProto; a line it does not understand is an AssertionError (a bug in the subset, not in a file)."""
    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="lrp_caffe_subset.proto", package="caffe", syntax="proto2")
    stack, fields = [], []  # stack: open DescriptorProto / EnumDescriptorProto
    for line in (s.strip() for s in CAFFE_PROTO_SUBSET.splitlines()):
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
