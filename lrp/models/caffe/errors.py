"""The one error type of the Caffe importer, in its own module because every step raises it.

Why a ValueError subclass: callers (the zoo, the pipeline's one-line errors) treat a file that cannot be converted
exactly like any other bad input; the message always starts with the file and, where there is one, the layer.
"""


class CaffeFormatError(ValueError):
    """The files are not a Caffe net this importer can convert exactly."""
