"""Read a `.prototxt` (text) and a `.caffemodel` (binary protobuf) into NetParameter messages.

Why separate from building: parsing is where a truncated, corrupt, HDF5 or swapped file is told apart from a net
the builder cannot convert; every problem here is a CaffeFormatError (or FileNotFoundError) naming the file.
"""

from __future__ import annotations

from pathlib import Path

from lrp.models.caffe.errors import CaffeFormatError
from lrp.models.caffe.schema import messages


def read_prototxt(path: str | Path):
    """The text-format NetParameter of `path`; unknown fields (fillers, lr_mult, engines, ...) are skipped.

    Raises FileNotFoundError, or CaffeFormatError if the text does not parse."""
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
    """The binary NetParameter of `path` (blobs by layer).

    Raises FileNotFoundError, or CaffeFormatError for an HDF5, truncated, corrupt or layerless file."""
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


def blobs_by_name(net) -> dict[str, list]:
    """Layer name -> its blobs (BlobProto messages), for every layer of a caffemodel that has any; the first
    layer of a name wins, new-style `layer` entries before V1 `layers`."""
    out: dict[str, list] = {}
    for layer in [*net.layer, *net.layers]:
        if len(layer.blobs) and layer.name not in out:
            out[layer.name] = list(layer.blobs)
    return out
