"""The two oracle networks of ../shared/oracles (copied to tests/data), rebuilt in PyTorch.

Origin: iNNvestigate 2.1.2 (TF 2.14.1) and LRP Toolbox 1.3.1 numpy outputs, see tests/data/README.md.
"""

from pathlib import Path

import numpy as np
import torch
from torch import nn

DATA = Path(__file__).parent / "data"


def innvestigate_toy(dtype=torch.float64):
    """(model, inputs, classes, relevances) of the iNNvestigate oracle; relevances keyed by iNNvestigate name."""
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(256, 32), nn.ReLU(), nn.Linear(32, 5),
    )
    w = np.load(DATA / "innvestigate_toy" / "weights_torch.npz")
    model.load_state_dict({k: torch.tensor(w[k]) for k in w.files})
    model = model.to(dtype).eval().requires_grad_(False)
    inp = np.load(DATA / "innvestigate_toy" / "inputs.npz")
    rel = np.load(DATA / "innvestigate_toy" / "innvestigate_relevances.npz")
    maps = {k[: -len("__nchw")]: rel[k] for k in rel.files if k.endswith("__nchw")}
    return model, torch.tensor(inp["x_nchw"], dtype=dtype), torch.tensor(inp["cls"]), maps, inp["logits"]


def toolbox_toy(dtype=torch.float64):
    """(model, inputs, classes, relevances) of the LRP Toolbox oracle (valid convs, 18×18 input)."""
    d = np.load(DATA / "lrp_toolbox_toy" / "toolbox_numpy_oracle.npz")
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(144, 32), nn.ReLU(), nn.Linear(32, 5),
    )
    w3 = d["w3"].reshape(3, 3, 16, 32).transpose(2, 0, 1, 3).reshape(144, 32).T  # H,W,C rows -> C,H,W
    sd = {
        "0.weight": d["k1"].transpose(3, 2, 0, 1), "0.bias": d["b1"],
        "3.weight": d["k2"].transpose(3, 2, 0, 1), "3.bias": d["b2"],
        "7.weight": w3, "7.bias": d["b3"], "9.weight": d["w4"].T, "9.bias": d["b4"],
    }
    model.load_state_dict({k: torch.tensor(np.ascontiguousarray(v)) for k, v in sd.items()})
    model = model.to(dtype).eval().requires_grad_(False)
    x = torch.tensor(d["x_nhwc"].transpose(0, 3, 1, 2).copy(), dtype=dtype)
    keys = ["eps0.1_all", "alphabeta_a1_all", "alphabeta_a2_all", "cmp_a1", "cmp_a2_flat"]
    return model, x, torch.tensor(d["cls"]), {k: d[k] for k in keys}, d["logits"]
