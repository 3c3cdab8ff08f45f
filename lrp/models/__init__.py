"""Models: one config entry -> a ready-to-explain ModelBundle (`load`), the networks the project builds
(`architectures`), its checkpoint format, and the importers of the paper's Keras and Caffe files.

`lrp.models.load(spec, device)` and `lrp.models.from_keras_h5(path)` are imported on first use, so that
`import lrp.models.base` stays light (the importers need h5py / protobuf).
"""

_LAZY = {"load": ("lrp.models.zoo", "load_model"), "from_keras_h5": ("lrp.models.keras", "from_keras_h5")}
__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'lrp.models' has no attribute {name!r}")
