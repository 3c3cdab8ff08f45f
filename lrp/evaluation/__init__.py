"""Evaluation measures. `region_perturbation` is re-exported lazily: the metrics stages import their own
modules (sums, localisation, pointing) without loading the perturbation code."""


def __getattr__(name):
    if name == "region_perturbation":
        from lrp.evaluation.perturbation import region_perturbation

        return region_perturbation
    raise AttributeError(f"module 'lrp.evaluation' has no attribute {name!r}")
