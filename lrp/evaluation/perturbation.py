"""Region perturbation (Samek et al., TNNLS 2017): does the map point at what the model uses?

Per unit, the channel-summed map is pooled into non-overlapping r × r regions; the regions are removed one per
step, most relevant first (MoRF), least relevant first (LeRF) or in a random order, and the target logit is
recorded after every step. AOPC = 1/(L+1) · Σ_{k=0..L} (f(x⁰) − f(xᵏ)): large for MoRF when the map is
faithful, small for LeRF.

Conventions (docs/metrics.md names where Quantus' `RegionPerturbation` differs):
  grid      when r does not divide the side, the grid is padded by r − (side mod r) split floor before /
            ceil after, as Quantus does, so the border regions are smaller; a region's relevance is the sum
            over its real pixels.
  order     a stable sort: ties (e.g. an all-zero region) are removed in row-major region order. LeRF is a
            stable ascending sort, so it is not MoRF reversed where there are ties.
  fill      a removed pixel takes the fill value: a number (0 = the training-set mean in the preprocessed input
            of every model here), a per-channel tensor, a tensor broadcastable to the inputs, or "uniform": one
            noise image per unit, uniform in `value_range`, drawn once from the unit's seed, so MoRF, LeRF and
            random order remove towards the same image (Quantus draws new noise at every step).
  seed      an int, or one int per unit: a unit's random order and noise depend on its own seed only, so a
            pipeline that derives them from sample ids gets the same curves under any sharding; the order
            and the noise draw from independent streams of it (`derive_seed`).
Every step of every unit is one row of a large forward batch (`batch_size` rows), so the cost is
N · (steps + 1) forward passes in batches, on the inputs' device.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import torch

ORDERS = ("morf", "lerf", "random")


def region_size(input_size: int, region_224: int = 9) -> int:
    """The region side for a square input of `input_size`: `region_224` at 224, scaled with the side, at least 1
    (9 at 224 → 3 at 64). Raises ValueError for a non-positive size."""
    if input_size < 1 or region_224 < 1:
        raise ValueError(f"input_size and region must be positive, got {input_size}, {region_224}")
    return max(1, round(region_224 * input_size / 224))


def region_grid(height: int, width: int, region: int) -> tuple[torch.Tensor, int]:
    """(H, W) int64 region index of every pixel (row-major over the grid), and the number of regions.
    Raises ValueError when the region does not fit the input."""
    if not 1 <= region <= min(height, width):
        raise ValueError(f"region size {region} does not fit a {height} × {width} input (1 ≤ region ≤ "
                         f"{min(height, width)})")

    def axis(n):
        pad = (region - n % region) % region
        return (torch.arange(n) + pad // 2) // region, (n + pad) // region

    rows, n_rows = axis(height)
    cols, n_cols = axis(width)
    return rows[:, None] * n_cols + cols[None, :], n_rows * n_cols


def region_relevance(relevance: torch.Tensor, grid: torch.Tensor, n_regions: int) -> torch.Tensor:
    """(N, H, W) maps → (N, M) float64 relevance summed over each region."""
    flat = relevance.reshape(len(relevance), -1).double()
    out = torch.zeros(len(relevance), n_regions, dtype=torch.float64, device=relevance.device)
    return out.index_add_(1, grid.reshape(-1).to(relevance.device), flat)


def derive_seed(seed: int, purpose: str) -> int:
    """An independent seed for one use of a unit's seed ("order", "fill", a caller's "random_map"): two
    generators seeded alike draw the same numbers, so a random order, its noise fill and a random map drawn
    from one seed would be correlated (a noise map would then remove the brightest fill first)."""
    return seed_of(f"{int(seed)}/{purpose}")


def seed_of(text: str) -> int:
    """A 63-bit seed from a text (its sha256): the same on every machine and Python."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def _unit_seeds(seed, n: int) -> list[int]:
    if isinstance(seed, int) and not isinstance(seed, bool):
        return [seed + i for i in range(n)]
    seeds = [int(s) for s in seed]
    if len(seeds) != n:
        raise ValueError(f"seed: got {len(seeds)} per-unit seeds for {n} units")
    return seeds


def removal_order(scores: torch.Tensor, order: str, seeds: Sequence[int]) -> torch.Tensor:
    """(N, M) region indices in the order they are removed. Raises ValueError for an unknown order."""
    if order == "morf":
        return torch.sort(-scores, dim=1, stable=True).indices
    if order == "lerf":
        return torch.sort(scores, dim=1, stable=True).indices
    if order == "random":
        m = scores.shape[1]
        perms = [torch.randperm(m, generator=torch.Generator().manual_seed(derive_seed(s, "order"))) for s in seeds]
        return torch.stack(perms).to(scores.device)
    raise ValueError(f"order must be one of {ORDERS}, got {order!r}")


def _fill_tensor(fill, inputs: torch.Tensor, seeds: Sequence[int], value_range) -> torch.Tensor:
    """The fill as a tensor broadcastable to `inputs` (per unit for "uniform")."""
    n, c = inputs.shape[:2]
    if isinstance(fill, str):
        if fill != "uniform":
            raise ValueError(f"fill must be a number, a tensor or 'uniform', got {fill!r}")
        if value_range is None:
            raise ValueError("fill='uniform' needs value_range=(low, high): the range of a valid input "
                             "(scalars or per-channel tensors, in the model's input space)")
        low, high = (torch.as_tensor(v, dtype=inputs.dtype, device="cpu").reshape(-1) for v in value_range)
        if low.numel() not in (1, c) or high.numel() not in (1, c):
            raise ValueError(f"value_range: expected scalars or {c} values per bound")
        if not bool(torch.all(high >= low)):
            raise ValueError("value_range: high must not be below low")
        low, high = low.reshape(1, -1, 1, 1), high.reshape(1, -1, 1, 1)
        noise = torch.stack([torch.rand(inputs.shape[1:], dtype=inputs.dtype,
                                        generator=torch.Generator().manual_seed(derive_seed(s, "fill")))
                             for s in seeds])
        return (low + (high - low) * noise).to(inputs.device)
    t = torch.as_tensor(fill, dtype=inputs.dtype, device=inputs.device)
    if t.ndim == 1 and t.numel() == c:
        t = t.reshape(1, c, 1, 1)
    try:
        torch.broadcast_shapes(t.shape, inputs.shape)
    except RuntimeError:
        raise ValueError(f"fill of shape {tuple(t.shape)} does not broadcast to the inputs "
                         f"{tuple(inputs.shape)} (give a number, {c} per-channel values or an input-shaped "
                         "tensor)") from None
    if not bool(torch.isfinite(t).all()):
        raise ValueError("fill holds NaN or infinite values")
    return t


def _check(inputs, targets, relevance, steps, n_regions):
    n, _, h, w = inputs.shape
    if relevance.ndim == 4:
        relevance = relevance.sum(1)
    if tuple(relevance.shape) != (n, h, w):
        raise ValueError(f"relevance must be (N, H, W) or (N, C, H, W) matching the inputs {tuple(inputs.shape)},"
                         f" got {tuple(relevance.shape)}")
    if not bool(torch.isfinite(relevance).all()):
        bad = torch.nonzero(~torch.isfinite(relevance.reshape(n, -1)).all(1))[:, 0].tolist()
        raise ValueError(f"relevance holds NaN or infinite values (units {bad[:5]})")
    targets = torch.as_tensor(targets).reshape(-1).long()
    if len(targets) != n:
        raise ValueError(f"targets: {len(targets)} for {n} inputs")
    if not 1 <= steps <= n_regions:
        raise ValueError(f"steps must be in 1..{n_regions} (the number of regions), got {steps}")
    return relevance, targets


def region_perturbation(model: Callable, inputs: torch.Tensor, targets, relevance: torch.Tensor, region: int = 9,
                        steps: int = 100, order: str = "morf", fill=0.0, seed=0, batch_size: int = 256,
                        value_range=None, progress: Callable[[int, int], None] | None = None):
    """Perturbation curves and AOPC of N maps.

    model: maps (B, C, H, W) to (B, K) logits (in eval mode: this function does not change it);
    inputs (N, C, H, W) preprocessed; targets (N,) class indices; relevance (N, H, W) or (N, C, H, W)
    (summed over channels); region: side of a region in pixels; steps: regions removed (L); order:
    "morf" | "lerf" | "random"; fill, seed, value_range: see the module docstring; batch_size: rows per forward
    batch; progress(done, total) is called after each batch.

    Returns (curves (N, steps + 1) float64 target logits, step 0 the unperturbed input; aopc (N,) float64).
    Raises ValueError for shapes that do not match, non-finite maps or fill, steps beyond the number of regions,
    an unknown order or fill.
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if inputs.ndim != 4:
        raise ValueError(f"inputs must be (N, C, H, W), got shape {tuple(inputs.shape)}")
    grid, n_regions = region_grid(inputs.shape[-2], inputs.shape[-1], region)
    relevance, targets = _check(inputs, targets, relevance, steps, n_regions)
    n = len(inputs)
    seeds = _unit_seeds(seed, n)
    dev = inputs.device
    scores = region_relevance(relevance.to(dev), grid, n_regions)
    ordered = removal_order(scores, order, seeds)
    rank = torch.empty_like(ordered)
    rank.scatter_(1, ordered, torch.arange(n_regions, device=dev).expand(n, -1))
    pixel_rank = rank[:, grid.reshape(-1).to(dev)].reshape(n, *grid.shape)  # step at which a pixel goes
    fill_t = _fill_tensor(fill, inputs, seeds, value_range)
    per_unit_fill = fill_t.ndim == 4 and fill_t.shape[0] == n and n > 1

    total = n * (steps + 1)
    unit = torch.arange(n, device=dev).repeat_interleave(steps + 1)
    step = torch.arange(steps + 1, device=dev).repeat(n)
    curves = torch.empty(total, dtype=torch.float64, device=dev)
    with torch.no_grad():
        for start in range(0, total, batch_size):
            u, k = unit[start:start + batch_size], step[start:start + batch_size]
            removed = (pixel_rank[u] < k[:, None, None])[:, None]
            f = fill_t[u] if per_unit_fill else fill_t
            out = model(torch.where(removed, f, inputs[u]))
            if out.ndim != 2 or out.shape[0] != len(u):
                raise ValueError(f"the model returned shape {tuple(out.shape)} for a batch of {len(u)}: "
                                 "expected (batch, classes) logits")
            curves[start:start + len(u)] = out.gather(1, targets.to(dev)[u][:, None])[:, 0].double()
            if progress is not None:
                progress(start + len(u), total)
    curves = curves.reshape(n, steps + 1).cpu()
    return curves, aopc(curves)


def aopc(curves: torch.Tensor) -> torch.Tensor:
    """AOPC of (N, L + 1) curves: 1/(L+1) · Σ_{k=0..L} (f(x⁰) − f(xᵏ)) (Samek et al. 2017, eq. 12)."""
    return (curves[:, :1] - curves).mean(1)
