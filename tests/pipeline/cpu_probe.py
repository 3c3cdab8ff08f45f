"""Run in a subprocess by test_cpu_numerics.py under one set of CPU-dispatch switches (ATEN_CPU_CAPABILITY,
ONEDNN_MAX_CPU_ISA, MKL_ENABLE_INSTRUCTIONS): a few training steps of a demo net (the VGG, or with `resnet` the
ResNet and its BatchNorms), then one attribution batch of the trained net; prints the sha256 of the weights and
of the maps as JSON. Fast (a few seconds) and
self-contained (random data from a fixed seed), so that CI can take the kernel paths other CPUs take."""

from __future__ import annotations

import hashlib
import json
import sys

import torch

import lrp
from lrp.models.architectures import DemoResNet, DemoVGG


def digest(tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def main(threads: int, arch: str = "vgg") -> None:
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(96, 3, 32, 32, generator=g)
    y = (torch.rand(96, 6, generator=g) > 0.7).float()
    torch.manual_seed(0)
    model = DemoResNet(6, width=8, image_size=32) if arch == "resnet" else \
        DemoVGG(6, width=8, image_size=32, hidden=32, dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(6):
        batch = slice(16 * step, 16 * (step + 1))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x[batch]), y[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    maps = lrp.attribute_many(model, x[:8], torch.zeros(8, dtype=torch.long),
                              ["lrp_cmp_alpha2_flat", "lrp_epsilon", "guided_backprop"])
    print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(), "loss": float(loss.detach()),
                      "weights": digest(model.state_dict().values()),
                      "maps": digest(maps[k] for k in sorted(maps))}))


def demo_images(root: str) -> None:
    """The demo data path alone: generate a few demo images (numpy, libjpeg-turbo's encoder) and decode them
    as the image shards do; prints the sha256 of the JPEG bytes and of the decoded pixels."""
    from pathlib import Path

    import numpy as np

    from lrp.datasets.demo import generate_demo
    from lrp.storage.images import load_rgb

    generate_demo(Path(root), n_train=12, n_test=6, image_size=64, seed=0, progress=False)
    files = sorted(Path(root).rglob("*.jpg"))
    print(json.dumps({"jpeg": digest_bytes(f.read_bytes() for f in files),
                      "pixels": digest_bytes(np.asarray(load_rgb(f)[0]).tobytes() for f in files)}))


def digest_bytes(chunks) -> str:
    h = hashlib.sha256()
    for c in chunks:
        h.update(c)
    return h.hexdigest()[:16]


if __name__ == "__main__":
    if sys.argv[1:2] == ["demo-images"]:
        demo_images(sys.argv[2])
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 2, *sys.argv[2:3])
