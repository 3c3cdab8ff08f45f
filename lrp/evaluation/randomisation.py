"""Cascading model-parameter randomisation (Adebayo et al., "Sanity checks for saliency maps", NeurIPS 2018).

The layers with weights (conv, linear) are re-initialised one after another from the output down, cumulatively;
after each step every analyzer's map is compared with its map on the trained model by Spearman's rank
correlation over the pixels (of the channel-summed map, and of its absolute value). A method whose maps stay
highly correlated while the model is destroyed explains the input, not the model.

Re-initialisation draws from each layer's own `reset_parameters` (PyTorch's default init) under a fixed seed
per step, on a deep copy: the user's model is never changed. PatternAttribution keeps the patterns learned on
the trained model (they are an input to the analyzer, not a parameter of the model).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch

from lrp.evaluation.ranks import spearman


def randomisable_layers(model: torch.nn.Module) -> list[str]:
    """Names of the conv/linear layers, output first (registration order reversed)."""
    kinds = (torch.nn.Conv2d, torch.nn.Linear)
    return [name for name, m in model.named_modules() if isinstance(m, kinds)][::-1]


def cascading_randomisation(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor, analyzers: dict,
                            seed: int = 0, progress: Callable[[int, int, str], None] | None = None) -> pd.DataFrame:
    """One row per (stage, analyzer, unit): stage 0 is the trained model (ρ = 1), stage k has the k layers
    nearest the output re-initialised; columns stage, layer (the last one re-initialised), analyzer, unit,
    spearman, spearman_abs. `analyzers` as for lrp.attribute_many. Raises ValueError (from attribute_many) for
    bad analyzers or inputs, and for a model without conv/linear layers."""
    from lrp.attribution import attribute_many

    layers = randomisable_layers(model)
    if not layers:
        raise ValueError("cascading randomisation needs a model with conv or linear layers")

    def maps(m):
        out = attribute_many(m, inputs, targets, analyzers)
        return {k: v.sum(1).reshape(len(inputs), -1).detach().double().cpu().numpy() for k, v in out.items()}

    trained = maps(model)
    work = copy.deepcopy(model)
    modules = dict(work.named_modules())
    rows = []
    n = len(inputs)
    for stage, layer in enumerate(["", *layers]):
        if stage:
            with torch.random.fork_rng():  # every device's generator restored afterwards
                torch.manual_seed(seed + stage)
                with torch.no_grad():
                    modules[layer].reset_parameters()
        current = trained if stage == 0 else maps(work)
        for name, r in current.items():
            rho = spearman(trained[name], r)
            rho_abs = spearman(np.abs(trained[name]), np.abs(r))
            rows.append(pd.DataFrame({"stage": stage, "layer": layer or "(trained)", "analyzer": name,
                                      "unit": np.arange(n), "spearman": rho, "spearman_abs": rho_abs}))
        if progress is not None and stage:
            progress(stage, len(layers), layer)
    return pd.concat(rows, ignore_index=True)
