"""Which layers of a deploy prototxt make up the net, and what type each one is.

Why apart from the builder: this is Caffe's own net description logic (net.cpp FilterNet / StateMeetsRule,
upgrade_proto.cpp's V1 type names), independent of torch. Layers (new-style `layer {}` or V1 `layers {}`) are kept
or left out by their `include`/`exclude` rules as Caffe does for a deploy net: phase TEST, level 0, the prototxt's
`state { stage }`; so `include { phase: TRAIN }`, `exclude { phase: TEST }` and an empty `exclude {}` leave a layer
out. Input/data layers may only come first and Softmax/Sigmoid/loss/accuracy layers only last (`DATA_TYPES`,
`is_tail_type`); the builder drops both kinds.
"""

from __future__ import annotations

from pathlib import Path

from lrp.models.caffe.errors import CaffeFormatError

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
#: Layer types that only set the input blob (allowed before the first compute layer).
DATA_TYPES = frozenset({"Input", "Data", "ImageData", "MemoryData", "HDF5Data", "DummyData", "WindowData"})
_TAIL_TYPES = frozenset({"Softmax", "Sigmoid", "Accuracy", "Silence"})  # plus every "...Loss" type
_TEST = 1  # caffe.Phase.TEST


def is_tail_type(kind: str) -> bool:
    """True for the layer types dropped at the end of a net (LRP starts from the logits): Softmax, Sigmoid
    (multi-label deploy nets), accuracy, silence and every loss."""
    return kind in _TAIL_TYPES or kind.endswith("Loss")


def layer_type(layer) -> str:
    """The new-style type string of a `layer` (a string already) or V1 `layers` entry (an enum, upgraded)."""
    if hasattr(layer, "type") and isinstance(layer.type, str):
        return layer.type
    name = layer.DESCRIPTOR.fields_by_name["type"].enum_type.values_by_number[layer.type].name
    return V1_TYPES.get(name, name)


def kept_layers(net, proto: Path) -> list:
    """The layers of the prototxt's NetParameter `net` that Caffe keeps for a deploy net, in file order.

    net.cpp FilterNet for the state a deploy net is loaded in: phase TEST, the prototxt's stages, level 0 (Caffe's
    Net(file, phase, level = 0) constructor; older Caffe kept the prototxt's `state { level }`, so a non-zero one is
    rejected where a rule tests levels). Any met include rule keeps a layer, any met exclude rule drops it; no
    rules: kept. Raises CaffeFormatError (naming `proto` and the layer) for a net mixing `layer` and `layers`,
    a layer with both include and exclude rules, or level rules under a non-zero state level.
    """
    if len(net.layer) and len(net.layers):
        raise CaffeFormatError(f"{proto}: mixes new-style `layer` and V1 `layers` entries")
    return [layer for layer in (list(net.layer) or list(net.layers)) if _included(layer, net.state, proto)]


def _included(layer, state, proto: Path) -> bool:
    def fail(problem: str):
        raise CaffeFormatError(f"{proto}: layer '{layer.name}': {problem}")

    rules = [*layer.include, *layer.exclude]
    if len(layer.include) and len(layer.exclude):
        fail("has both include and exclude rules (Caffe: 'Specify either include rules or exclude rules; not both')")
    if state.level != 0 and any(r.HasField("min_level") or r.HasField("max_level") for r in rules):
        fail(f"level rules with `state {{ level: {state.level} }}`: Caffe versions disagree (newer ones load deploy "
             "nets at level 0); remove the state level or the rule")
    stages = set(state.stage)
    if len(layer.include):
        return any(_meets_rule(r, 0, stages) for r in layer.include)
    return not any(_meets_rule(r, 0, stages) for r in layer.exclude)


def _meets_rule(rule, level: int, stages: set[str]) -> bool:
    """net.cpp StateMeetsRule for a TEST-phase state: every condition the rule sets must hold (an empty rule
    is always met, so an empty `exclude {}` removes its layer)."""
    if rule.HasField("phase") and rule.phase != _TEST:
        return False
    if rule.HasField("min_level") and level < rule.min_level:
        return False
    if rule.HasField("max_level") and level > rule.max_level:
        return False
    return all(s in stages for s in rule.stage) and not any(s in stages for s in rule.not_stage)
