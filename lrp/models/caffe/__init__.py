"""Import a Caffe deployment net (`.prototxt` + `.caffemodel`) as a PyTorch `nn.Sequential`, without Caffe.

Why: the paper's PVOC model is the original CaffeNet (docs/models.md). Only the `protobuf` package is needed:
the message types of the caffe.proto subset that deployment nets use are built at run time (no protoc, no
generated code). A file goes through these modules in turn, each with one job:

- `schema`: the caffe.proto subset and its message classes (`messages()`);
- `files`: reading the prototxt and the caffemodel (`read_prototxt`, `read_caffemodel`, `blobs_by_name`);
- `net`: which layers a deploy net keeps (include/exclude rules) and their types (V1 names upgraded);
- `builder`: each layer -> torch modules with Caffe's shape arithmetic, blobs checked and loaded (`NetBuilder`);
- `bundle`: the entry points, with Caffe's preprocessing and class names for a bundle;
- `errors`: `CaffeFormatError`, a ValueError naming the file, the layer and the problem.

The public entry points `from_caffe` and `caffe_bundle` are re-exported here, as `lrp.models.caffe.from_caffe`
and `lrp.models.caffe.caffe_bundle`; every other name is imported from the module that defines it.
"""

from lrp.models.caffe.bundle import caffe_bundle, from_caffe

__all__ = ["caffe_bundle", "from_caffe"]
