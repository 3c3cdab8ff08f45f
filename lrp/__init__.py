"""lrp-bench: LRP attributions and the localisation study of Kohlbrenner et al. (IJCNN 2020).

The engine lives at the top of the package, as in zennit: `graph` (the layer graph, traced by `tracing`,
BatchNorm folded by `canonizers`; a model it cannot explain raises `UnsupportedModelError`), `rules` (per-layer
backward rules), `kernels` (their elementwise steps), `composites` (the one analyzer registry: name -> rule
per layer, labels included), `attribution` (one forward pass for every analyzer), `patterns`, `plugins`.
Around it, one package per concern: `datasets`, `models`, `storage`, `evaluation`, `training`, `report`,
and `pipeline` (the only code that knows Snakemake). `import lrp` needs only torch and numpy.
"""

__version__ = "0.1.0"

from lrp import allocator  # noqa: E402,F401  (lrp.allocator.retain_freed_memory(): faster CPU runs)
from lrp.attribution import attribute, attribute_many  # noqa: E402
from lrp.composites import analyzers, register, register_function  # noqa: E402
from lrp.composites import names as analyzer_names  # noqa: E402
from lrp.layers import UnsupportedModelError  # noqa: E402
from lrp.rules import BiasConventionWarning, Rule  # noqa: E402

__all__ = ["attribute", "attribute_many", "analyzers", "analyzer_names", "register", "register_function", "Rule",
           "UnsupportedModelError", "BiasConventionWarning", "__version__"]
