"""The networks the project builds itself, and the registry checkpoints are rebuilt from (`ARCHS`).

Why a registry: a checkpoint stores an architecture *name* and its kwargs, never code (torch.load runs with
weights_only=True); loading rebuilds the module from here. Builders register where they are defined, with
`@register_arch(name)`, as torchvision's `register_model` does; nothing registers as a side effect of
importing another module.

- demo_vgg: a miniature VGG-16 for the procedural demo set. The LRP composites of the paper are defined per
  VGG layer type (conv / ReLU / max-pool / dense), so it keeps torchvision VGG's exact module layout
  (`features`, `avgpool`, `classifier`) and its module types only; everything that explains torchvision
  VGG-16 explains it, but it trains on two CPU cores in minutes. Outputs are multi-label logits.
- demo_resnet: a ResNet in miniature for the same demo set, the demo's second architecture ("which method, on
  which model"). Built of torchvision's own `BasicBlock` (BatchNorm, residual sums) in torchvision ResNet's
  module layout (`conv1`, `bn1`, `relu`, `maxpool`, `layer1`..., `avgpool`, `fc`), so that zennit's
  `ResNetCanonizer` recognises it and it exercises what the VGG does not: BatchNorm merging, residual sums,
  global average pooling into a single dense layer.
- torchvision_alexnet_multilabel: torchvision AlexNet with a new head, the PVOC substitute (lrp.training.finetune).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock

ARCHS: dict[str, Callable[..., nn.Module]] = {}
"""name -> builder(**kwargs) -> nn.Module: what a checkpoint's `arch` may name."""

DEMO_STD = (64.0, 64.0, 64.0)  # fixed scale: inputs land roughly in [-2, 2], like torchvision's
# Bounds on a demo net's size: a checkpoint's arch_kwargs come from a file, and a hostile one must not build a
# network that takes hours or terabytes (VGG-16 itself has 13 convs of width 512 on 224² inputs).
MAX_CONVS, MAX_WIDTH, MAX_IMAGE_SIZE = 64, 4096, 1024
ALEXNET_MULTILABEL = "torchvision_alexnet_multilabel"


def register_arch(name: str, builder: Callable[..., nn.Module] | None = None):
    """Make `name` loadable; re-registering the same builder is a no-op, a different one an error. Without
    `builder`, a decorator: `@register_arch("demo_vgg")` above the class or function.

    load_bundle first calls the builder on the meta device (to check a file's tensors before allocating), so it
    must build with plain layers there; it should raise TypeError/ValueError for kwargs it does not take.
    """
    if builder is None:
        def decorate(fn):
            register_arch(name, fn)
            return fn
        return decorate
    if name in ARCHS and ARCHS[name] is not builder:
        raise ValueError(f"architecture {name!r} is already registered to {ARCHS[name]!r}")
    ARCHS[name] = builder
    return builder


@register_arch("demo_vgg")
class DemoVGG(nn.Module):
    """VGG in miniature: `blocks[b]` 3x3 convs of `width * 2**b` channels, then 2x2 max-pool, per block.

    `avgpool` is AdaptiveAvgPool2d to the features' own spatial size, i.e. the identity at `image_size`,
    exactly as torchvision VGG's 7x7 pool is at 224 px.
    """

    arch_name = "demo_vgg"

    def __init__(self, n_classes: int, width: int = 16, image_size: int = 64, blocks=(2, 2, 2),
                 hidden: int = 128, dropout: float = 0.3):
        super().__init__()
        blocks = [int(b) for b in blocks]
        if n_classes < 1 or width < 1 or hidden < 1 or not blocks or min(blocks) < 1:
            raise ValueError(f"invalid DemoVGG config: n_classes={n_classes} width={width} "
                             f"hidden={hidden} blocks={blocks}")
        if sum(blocks) > MAX_CONVS or width > MAX_WIDTH or hidden > MAX_WIDTH or image_size > MAX_IMAGE_SIZE:
            raise ValueError(f"DemoVGG config beyond the sizes a demo model has (at most {MAX_CONVS} convs, width "
                             f"and hidden {MAX_WIDTH}, image size {MAX_IMAGE_SIZE}): width={width} hidden={hidden} "
                             f"blocks={blocks} image_size={image_size}")
        if image_size % 2 ** len(blocks):
            raise ValueError(f"image_size {image_size} must be divisible by 2**{len(blocks)} (one pool per block)")
        self.arch_kwargs = dict(n_classes=int(n_classes), width=int(width), image_size=int(image_size),
                                blocks=blocks, hidden=int(hidden), dropout=float(dropout))
        layers: list[nn.Module] = []
        c_in = 3
        for b, n_conv in enumerate(blocks):
            c_out = width * 2**b
            for _ in range(n_conv):
                layers += [nn.Conv2d(c_in, c_out, kernel_size=3, padding=1), nn.ReLU()]
                c_in = c_out
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        self.features = nn.Sequential(*layers)
        side = image_size // 2 ** len(blocks)
        self.avgpool = nn.AdaptiveAvgPool2d((side, side))
        self.classifier = nn.Sequential(
            nn.Linear(c_in * side * side, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, n_classes),
        )
        self._init_weights()

    def _init_weights(self):
        """torchvision VGG's conv init; He init for the dense layers too, so that this small net without
        BatchNorm starts with well-scaled activations (torchvision's N(0, 0.01) dense init shrinks them)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    @property
    def arch_spec(self) -> dict:
        """What `lrp.models.checkpoint` stores to rebuild this module: registry name + constructor kwargs."""
        return {"name": self.arch_name, "kwargs": dict(self.arch_kwargs)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


@register_arch("demo_resnet")
class DemoResNet(nn.Module):
    """ResNet in miniature: a 3x3 conv stem with BatchNorm and a 2x2 max-pool, then `blocks[s]` torchvision
    `BasicBlock`s of `width * 2**s` channels per stage (stride 2 from the second stage on, a 1x1 conv + BatchNorm
    shortcut where the shape changes), global average pooling and one dense layer to the logits.

    At 64 px the stages see 32², 16² and 8² maps, as ResNet-18's last three do at 224 px / 4. Outputs are
    multi-label logits.
    """

    arch_name = "demo_resnet"

    def __init__(self, n_classes: int, width: int = 16, image_size: int = 64, blocks=(1, 1, 1)):
        super().__init__()
        blocks = [int(b) for b in blocks]
        if n_classes < 1 or width < 1 or not blocks or min(blocks) < 1:
            raise ValueError(f"invalid DemoResNet config: n_classes={n_classes} width={width} blocks={blocks}")
        if 2 * sum(blocks) + 1 > MAX_CONVS or width * 2 ** (len(blocks) - 1) > MAX_WIDTH or \
                image_size > MAX_IMAGE_SIZE:
            raise ValueError(f"DemoResNet config beyond the sizes a demo model has (at most {MAX_CONVS} convs, "
                             f"width {MAX_WIDTH}, image size {MAX_IMAGE_SIZE}): width={width} blocks={blocks} "
                             f"image_size={image_size}")
        if image_size % 2 ** len(blocks):
            raise ValueError(f"image_size {image_size} must be divisible by 2**{len(blocks)} (the stem's pool and "
                             f"one stride-2 stage each after the first)")
        self.arch_kwargs = dict(n_classes=int(n_classes), width=int(width), image_size=int(image_size),
                                blocks=blocks)
        self.conv1 = nn.Conv2d(3, width, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=2, stride=2)
        c_in = width
        for s, n_blocks in enumerate(blocks):
            c_out, stride = width * 2**s, 1 if s == 0 else 2
            layers = []
            for b in range(n_blocks):
                down = None
                if b == 0 and (stride != 1 or c_in != c_out):
                    down = nn.Sequential(nn.Conv2d(c_in, c_out, kernel_size=1, stride=stride, bias=False),
                                         nn.BatchNorm2d(c_out))
                layers.append(BasicBlock(c_in, c_out, stride=stride if b == 0 else 1, downsample=down))
                c_in = c_out
            setattr(self, f"layer{s + 1}", nn.Sequential(*layers))
        self.n_stages = len(blocks)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(c_in, n_classes)
        for m in self.modules():  # torchvision ResNet's init
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def arch_spec(self) -> dict:
        return {"name": self.arch_name, "kwargs": dict(self.arch_kwargs)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for s in range(self.n_stages):
            x = getattr(self, f"layer{s + 1}")(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


DEMO_ARCHS = {"demo_vgg": DemoVGG, "demo_resnet": DemoResNet}
"""The architectures the demo recipe trains (models.<m>.train.recipe), by name."""


@register_arch(ALEXNET_MULTILABEL)
def alexnet_multilabel(n_classes: int) -> nn.Module:
    """torchvision AlexNet with `classifier[6]` = Linear(4096, n_classes): logits, no softmax."""
    model = torchvision.models.alexnet(weights=None)
    model.classifier[6] = nn.Linear(model.classifier[6].in_features, int(n_classes))
    return model
