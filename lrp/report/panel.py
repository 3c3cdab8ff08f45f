"""Fig. 1-style qualitative panels: what each analyzer's map looks like on a few images.

Numbers (Table 1) say which analyzer localises best; the panel lets a reader see why, and catches what
numbers hide (a map that is all noise, a flipped sign, a model that looks at the border). Two figures:
- analyzers: one row per image (title: class and logit, as the paper's Fig. 1), one column per analyzer;
- flat layers: the flat rule on the first n = 1 … all conv layers (the paper's Fig. 1 e–g), one column per n.
Heatmaps are channel sums, each scaled by its own max |R| and drawn with a diverging colour map centred at
zero (red positive, blue negative), as LRP papers do; the colour scale is therefore comparable in sign and
shape, not in magnitude, across maps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure

from lrp.io import atomic_path

CMAP = "bwr"
DPI = 150
CELL_IN = 1.05  # inches per heatmap cell


@dataclass
class PanelSamples:
    images: np.ndarray  # uint8 (N, H, W, 3) RGB, model input size
    class_index: np.ndarray  # (N,)
    sample_id: list[str]


def select_samples(image_shards: list, sample_ids: list[str] | None = None, n: int = 4) -> PanelSamples:
    """The given samples (looked up in the image shards, in the given order), or the first `n` samples of
    distinct images. Unknown ids are an error naming them, not a silently shorter panel."""
    from lrp.storage.images import read_samples

    want = list(dict.fromkeys(sample_ids)) if sample_ids else None
    found: dict[str, tuple] = {}
    for path in image_shards:
        if want is not None:
            found.update({sid: (img, cls) for sid, img, cls in read_samples(path, sample_ids=want)})
            if len(found) == len(want):
                break
        else:
            for sid, img, cls in read_samples(path, n_images=n - len(found)):
                found[sid] = (img, cls)
            if len(found) >= n:
                break
    if want is not None:
        missing = [s for s in want if s not in found]
        if missing:
            raise ValueError(f"panel samples not found in the image shards: {missing}")
        order = want
    else:
        order = list(found)
    if not order:
        raise ValueError(f"no samples in the image shards {list(map(str, image_shards))}")
    return PanelSamples(np.stack([found[s][0] for s in order]), np.array([found[s][1] for s in order]), order)


def n_conv_layers(model: torch.nn.Module) -> int:
    from lrp.graph import layers_of

    return sum(layer.kind == "conv" for layer in layers_of(model))


def compute_maps(bundle, samples: PanelSamples, analyzers: dict[str, dict], device, flat_analyzer: str | None,
                 flat_options: dict | None = None) -> dict:
    """Channel-summed maps: {"logits": (N,), "maps": {analyzer: (N,H,W)}, "flat": {n: (N,H,W)}}.

    The analyzer maps come from one `attribute_many` call (one forward pass); each flat-layer variant is its
    own call because `flat_layers` is an option of one analyzer, and a panel has only a few images.
    """
    from lrp.attribution import attribute_many

    x = bundle.preprocessing(torch.from_numpy(samples.images), device=device)
    t = torch.as_tensor(samples.class_index, device=device)
    with torch.no_grad():
        logits = bundle.module(x).gather(1, t[:, None])[:, 0]
    maps = {name: R.sum(1).cpu().numpy() for name, R in attribute_many(bundle.module, x, t, analyzers).items()}
    flat = {}
    if flat_analyzer:
        for n in range(1, n_conv_layers(bundle.module) + 1):
            R = attribute_many(bundle.module, x, t, {flat_analyzer: {**(flat_options or {}), "flat_layers": n}})
            flat[n] = R[flat_analyzer].sum(1).cpu().numpy()
    return {"logits": logits.cpu().numpy(), "maps": maps, "flat": flat}


def heatmap_rgb(R: np.ndarray) -> np.ndarray:
    """(H, W) relevance -> (H, W, 3) float RGB: 0 maps to white, ±max|R| to full red / blue."""
    R = np.asarray(R, dtype=np.float64)
    scale = np.abs(R).max()
    v = R / scale if scale > 0 and np.isfinite(scale) else np.zeros_like(R)
    return colormaps[CMAP]((v + 1) / 2)[..., :3]


def plot_panel(images: np.ndarray, columns: dict[str, np.ndarray], row_titles: list[str], out_png, out_pdf,
               title: str) -> None:
    """A grid: the input image, then one heatmap per column label (each (N, H, W)), one row per image."""
    n = len(images)
    if not columns:
        raise ValueError("plot_panel() got no maps")
    for label, m in columns.items():
        if m.shape[0] != n or m.shape[1:] != images.shape[1:3]:
            raise ValueError(f"maps of {label!r} have shape {m.shape}, expected ({n}, {images.shape[1]}, "
                             f"{images.shape[2]})")
    if len(row_titles) != n:
        raise ValueError(f"{len(row_titles)} row titles for {n} images")
    ncol = len(columns) + 1
    fig = Figure(figsize=(CELL_IN * ncol, CELL_IN * n + 0.45), layout="constrained")
    axes = np.asarray(fig.subplots(n, ncol, squeeze=False))
    for i in range(n):
        axes[i, 0].imshow(images[i])
        axes[i, 0].set_ylabel(row_titles[i], fontsize=6)
        for j, (label, m) in enumerate(columns.items(), start=1):
            axes[i, j].imshow(heatmap_rgb(m[i]), interpolation="nearest")
            if not np.any(m[i]):  # e.g. PA on a class whose logit was never positive in training
                axes[i, j].text(0.5, 0.5, "R ≡ 0", transform=axes[i, j].transAxes, ha="center", va="center",
                                fontsize=6, color="0.4")
            if i == 0:
                axes[i, j].set_title(label, fontsize=6.5)
    axes[0, 0].set_title("input", fontsize=6.5)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=8)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None})
    with atomic_path(out_pdf) as tmp:
        fig.savefig(tmp, format="pdf", metadata={"CreationDate": None, "Creator": None, "Producer": None})


def row_titles(samples: PanelSamples, logits: np.ndarray, class_names: list[str] | None) -> list[str]:
    """'class (logit)' per row, as in the paper's Fig. 1."""
    out = []
    for cls, z in zip(samples.class_index, logits):
        name = class_names[cls] if class_names and cls < len(class_names) else f"class {cls}"
        out.append(f"{name.split(',')[0]} ({z:.2f})")
    return out


def write_panels(bundle, samples: PanelSamples, analyzers: dict[str, dict], device, out: dict, title: str,
                 labels: dict[str, str] | None = None, flat_analyzer: str | None = "lrp_cmp_alpha1_flat",
                 flat_options: dict | None = None) -> dict:
    """Compute and draw both panels; `out` has keys analyzers_png/_pdf and flat_png/_pdf."""
    labels = labels or {}
    res = compute_maps(bundle, samples, analyzers, device, flat_analyzer, flat_options)
    rows = row_titles(samples, res["logits"], bundle.class_names)
    plot_panel(samples.images, {labels.get(k, k): v for k, v in res["maps"].items()}, rows,
               out["analyzers_png"], out["analyzers_pdf"], title=f"{title}: every analyzer")
    if flat_analyzer:
        base = labels.get(flat_analyzer, flat_analyzer).split("+")[0]
        plot_panel(samples.images, {f"♭ on conv 1–{n}" if n > 1 else "♭ on conv 1": v
                                    for n, v in res["flat"].items()}, rows, out["flat_png"], out["flat_pdf"],
                   title=f"{title}: {base} with the flat rule on the first n conv layers")
    return res
