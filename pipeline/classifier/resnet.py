"""ResNet18 / ResNet34 for small single-channel images (the CIFAR variant of He et al. 2016).

Stem: 3 x 3 conv (stride 1, no max-pool) + batch norm + ReLU; 4 stages of BasicBlocks with width, 2 width,
4 width, 8 width channels (strides 1, 2, 2, 2); global average pool; linear. Any input size works (the
regulariser feeds 36 x 64 stimuli; the task images are 32 x 32).

Layers the similarity regulariser can read (the paper's conv 1, 5, 9, 13, 17 of ResNet18):
``'conv1'`` (stem output, after ReLU) and ``'layer1'`` .. ``'layer4'`` (output of each stage, after its last
ReLU). Written here rather than taken from torchvision, whose ResNets are the ImageNet variant (7 x 7 stem,
max-pool, 3 input channels) and which this project does not depend on.

``ARCHITECTURES`` names the networks that can be trained (name -> description); the schema's Architecture
lookup is built from it and :func:`build_classifier` accepts exactly its keys.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.errors import ConfigError

LAYER_NAMES = ("conv1", "layer1", "layer2", "layer3", "layer4")
BLOCKS = {"resnet10": (1, 1, 1, 1), "resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
STANDARD_WIDTH = 64
NARROW_WIDTH = 16

# The architectures that can be trained: what the schema's Architecture lookup lists, and exactly the names
# build_classifier accepts. A name says how to build its network (see parse_arch).
ARCHITECTURES: dict[str, str] = {
    "resnet18": "ResNet18 for 32x32 grayscale (3x3 stem, no max-pool), width 64: the paper's CIFAR-10 net",
    "resnet34": "ResNet34 for 32x32 grayscale, width 64: the paper's CIFAR-100 net",
    "resnet18-narrow": f"ResNet18 at width {NARROW_WIDTH}: for CPU runs",
    "resnet10-w8": "ResNet10 (one BasicBlock per stage, the same five readable layers) at width 8: the demo's "
                   "net, small enough for 4 seeds x 9 conditions on a 2-core CPU",
}


class ArchitectureError(ConfigError):
    """An unknown architecture name or layer name."""


class BasicBlock(nn.Module):
    """Two 3 x 3 conv + BN, ReLU between and after the residual sum; 1 x 1 conv shortcut when the shape changes."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR-style ResNet. x: (B, in_channels, H, W) -> logits (B, n_classes)."""

    def __init__(self, blocks: Sequence[int], n_classes: int, width: int = STANDARD_WIDTH, in_channels: int = 1):
        super().__init__()
        if len(blocks) != 4 or min(blocks) < 1:
            raise ArchitectureError(f"blocks must be 4 positive stage depths, got {blocks}")
        if width < 1 or n_classes < 1:
            raise ArchitectureError(f"width ({width}) and n_classes ({n_classes}) must be positive")
        self.width, self.n_classes, self.blocks = width, n_classes, tuple(blocks)
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        stages, channels = [], width
        for k, depth in enumerate(blocks):
            out_channels = width * 2 ** k
            stride = 1 if k == 0 else 2
            layers = []
            for d in range(depth):
                layers.append(BasicBlock(channels, out_channels, stride if d == 0 else 1))
                channels = out_channels
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(channels, n_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He (fan-out) init for convs, BN at identity, as torchvision's ResNets."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def layer_channels(self) -> dict[str, int]:
        """Channels of each readable layer: {'conv1': w, 'layer1': w, 'layer2': 2w, 'layer3': 4w, 'layer4': 8w}."""
        w = self.width
        return {"conv1": w, "layer1": w, "layer2": 2 * w, "layer3": 4 * w, "layer4": 8 * w}

    def features(self, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """Activations {name: (B, C_k, H_k, W_k)} of the named layers; stops after the deepest one asked for."""
        wanted = check_layers(layers)
        depth = max(LAYER_NAMES.index(n) for n in wanted)
        out, h = {}, F.relu(self.bn1(self.conv1(x)))
        stages = (None, self.layer1, self.layer2, self.layer3, self.layer4)
        for k in range(depth + 1):
            if k > 0:
                h = stages[k](h)
            if LAYER_NAMES[k] in wanted:
                out[LAYER_NAMES[k]] = h
        return out

    def forward(self, x: torch.Tensor, return_layers: Sequence[str] | None = None):
        """Logits (B, n_classes); with ``return_layers`` also the dict of those layers' activations."""
        feats = self.features(x, LAYER_NAMES)
        logits = self.linear(torch.flatten(F.adaptive_avg_pool2d(feats["layer4"], 1), 1))
        if return_layers is None:
            return logits
        wanted = check_layers(return_layers)
        return logits, {n: feats[n] for n in LAYER_NAMES if n in wanted}


def check_layers(layers: Sequence[str]) -> set[str]:
    if isinstance(layers, str):
        layers = [layers]
    wanted = set(layers)
    unknown = wanted - set(LAYER_NAMES)
    if unknown or not wanted:
        raise ArchitectureError(f"layers {sorted(unknown) or list(layers)} are not readable; choose a non-empty "
                                f"subset of {list(LAYER_NAMES)}")
    return wanted


ARCH_PATTERN = re.compile(r"^(resnet10|resnet18|resnet34)(?:-(narrow|w(\d+)))?$")


def parse_arch(arch: str) -> tuple[tuple[int, ...], int]:
    """What a name builds: 'resnet10' | 'resnet18' | 'resnet34' with optional '-narrow' (width 16) or '-w<N>' -> (blocks, width).

    Any such name parses; build_classifier builds only the names listed in ARCHITECTURES.
    """
    m = ARCH_PATTERN.match(arch)
    if m is None:
        raise ArchitectureError(f"architecture {arch!r} is unknown: use 'resnet18' or 'resnet34', optionally with "
                                "'-narrow' (width 16) or '-w<N>' (width N), e.g. 'resnet18-narrow'")
    width = STANDARD_WIDTH
    if m.group(2) == "narrow":
        width = NARROW_WIDTH
    elif m.group(3) is not None:
        width = int(m.group(3))
        if width < 1:
            raise ArchitectureError(f"architecture {arch!r}: width must be positive")
    return BLOCKS[m.group(1)], width


def build_classifier(arch: str, n_classes: int, in_channels: int = 1) -> ResNet:
    """A freshly initialised ResNet for ``arch``, a key of ARCHITECTURES (e.g. 'resnet18', 'resnet18-narrow')."""
    if arch not in ARCHITECTURES:
        raise ArchitectureError(f"architecture {arch!r} is unknown: use one of {sorted(ARCHITECTURES)}")
    blocks, width = parse_arch(arch)
    return ResNet(blocks, n_classes, width=width, in_channels=in_channels)
