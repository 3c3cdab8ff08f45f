"""lrp-bench: LRP attributions and the localisation study of Kohlbrenner et al. (IJCNN 2020)."""

__version__ = "0.1.0"

from . import allocator  # noqa: E402  (lrp.allocator.retain_freed_memory(): faster CPU runs)
from .attribution import attribute, attribute_many  # noqa: E402
from .composites import names as analyzer_names  # noqa: E402

__all__ = ["attribute", "attribute_many", "analyzer_names", "__version__"]
