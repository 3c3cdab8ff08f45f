"""The paper's Fig. 2 check: does the model decide on the object or on its context?

For every evaluation unit, the WHOLE object region (union of the class's boxes) or the WHOLE context
(its complement) is replaced by the training-set mean — 0 in the preprocessed input of every model here —
and the target logit is recorded: one forward pass for the original, one per occlusion.
"""

from __future__ import annotations

import numpy as np
import torch


def occlusion_logits(module: torch.nn.Module, x: torch.Tensor, masks: torch.Tensor, targets: torch.Tensor):
    """Logits of the unperturbed, object-occluded and context-occluded inputs.

    x: preprocessed (N, C, H, W); masks: bool (N, H, W) object regions; targets: (N,) class indices.
    Returns (all_logits (N, K), target logit, object-occluded target logit, context-occluded target logit).
    """
    m = masks[:, None].to(x.dtype)
    with torch.no_grad():
        batch = torch.cat([x, x * (1 - m), x * m])
        out = module(batch)
    n = x.shape[0]
    t = targets.long()[:, None]
    full, obj, ctx = out[:n], out[n:2 * n], out[2 * n:]
    return full, full.gather(1, t)[:, 0], obj.gather(1, t)[:, 0], ctx.gather(1, t)[:, 0]


def target_rank(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based rank of the target class among all logits (0 = the model's top prediction)."""
    own = logits[np.arange(len(targets)), targets]
    return (logits > own[:, None]).sum(1)
