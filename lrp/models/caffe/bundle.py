"""The Caffe importer's entry points: `from_caffe` (an `nn.Sequential`) and `caffe_bundle` (a ModelBundle).

Why: the paper's PVOC model is the CaffeNet of Lapuschkin et al. (CVPR 2016), distributed as
`pascalvoc2012_train_simple2_iter_30000.caffemodel` + `deploy_x30.prototxt` (BVLC Model Zoo). The study's default
PVOC model is the torchvision AlexNet fine-tuned on VOC 2012 (docs/models.md); this importer is for users who
hold the original files. Here the files are read (`files`), the net built (`builder`) and, for a bundle, given
Caffe's preprocessing and class names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from torch import nn

from lrp.io import sha256_file
from lrp.models.base import ModelBundle, Preprocessing
from lrp.models.caffe.builder import NetBuilder
from lrp.models.caffe.errors import CaffeFormatError
from lrp.models.caffe.files import blobs_by_name, read_caffemodel, read_prototxt

#: ImageNet mean pixel in BGR order, 0–255 units: the per-channel average of Caffe's `ilsvrc_2012_mean.npy`
#: (as in Caffe's classification example). The LRP Toolbox demonstrator subtracts the centre-cropped mean
#: IMAGE instead; the per-pixel difference is a few grey levels. Pass `mean=` to use other values.
CAFFENET_BGR_MEAN = (104.00698793, 116.66876762, 122.67891434)
DEFAULT_INPUT_SIZE = 227  # CaffeNet; used only when the prototxt declares no input shape


def _import(caffemodel_path, prototxt_path, input_size: int) -> tuple[nn.Sequential, NetBuilder]:
    """The frozen module and the builder that made it (its input/output shapes and dropped layers)."""
    proto, model = Path(prototxt_path), Path(caffemodel_path)
    net = read_prototxt(proto)
    builder = NetBuilder(net, blobs_by_name(read_caffemodel(model)), proto, model, input_size)
    module = builder.build(input_size)
    for param in module.parameters():
        param.requires_grad_(False)
    return module, builder


def from_caffe(caffemodel_path: str | Path, prototxt_path: str | Path,
               input_size: int = DEFAULT_INPUT_SIZE) -> nn.Sequential:
    """The prototxt's net with the caffemodel's weights: an eval-mode `nn.Sequential` ending in the logits.

    Input: NCHW float in Caffe's preprocessed space (CaffeNet: BGR, mean subtracted, 0–255). Module names are
    the Caffe layer names ('.' and '/' replaced by '_'), plus 'flatten' before the first InnerProduct.
    `input_size` (square side, 3 channels) is used only when the prototxt declares no input shape. Raises
    FileNotFoundError, or CaffeFormatError (a ValueError) naming the file, the layer and the problem.
    """
    return _import(caffemodel_path, prototxt_path, input_size)[0]


def caffe_bundle(caffemodel_path: str | Path, prototxt_path: str | Path,
                 mean: Sequence[float] | None = None, class_names: Sequence[str] | None = None,
                 input_size: int = DEFAULT_INPUT_SIZE) -> ModelBundle:
    """A Caffe net as a ModelBundle: BGR, minus `mean` (BGR, 0–255; default the ImageNet mean pixel
    CAFFENET_BGR_MEAN), no scaling, input size from the prototxt (CaffeNet: 227, images warped to it).

    Class names: `class_names`, else VOC_CLASSES for 20 outputs (the PVOC model), the ImageNet WNIDs for 1000.
    Raises what `from_caffe` raises, and ValueError for a non-3×S×S input, a bad `mean` or class count.
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
