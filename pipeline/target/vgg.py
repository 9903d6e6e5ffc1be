"""VGG19 convolutional part, for the 'VGG' control target (conv3_1 features of an ImageNet-pretrained VGG19).

Written here because torchvision cannot be installed. The module layout copies torchvision's
``vgg19().features`` index for index (conv, ReLU, ..., max-pool), so the ``features.*`` entries of
torchvision's ImageNet state_dict ``vgg19-dcbb9e9d.pth`` load unchanged (its ``classifier.*`` entries are
ignored). There is no fallback to random weights: without the weights file, loading fails.

Inputs: grayscale images (n, H, W), pixels in [0, 1] after division by ``pixel_scale`` (pass 255 for 8-bit
pixels). Gray is replicated to 3 channels and normalised with the ImageNet mean and std, as torchvision's
pretrained models expect. On 36 x 64 stimuli conv3_1 gives (n, 256, 9, 16).
"""

from __future__ import annotations

from pipeline.errors import NeuralRegError

from pathlib import Path

import torch
from torch import nn

# torchvision's configuration "E" (VGG19): channels of each 3x3 conv, "M" a 2x2 max-pool.
VGG19_CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
                512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WEIGHTS_FILE = "vgg19-dcbb9e9d.pth"


class VGGWeightsError(NeuralRegError):
    """The VGG19 weights file is missing or does not match torchvision's VGG19 layout."""


class VGGInputError(NeuralRegError):
    """Images handed to VGG19 are not grayscale (n, H, W) pixels in [0, 1]."""


def vgg19_layer_names() -> list[str]:
    """Names of the modules of ``features``, in torchvision's index order: conv1_1, relu1_1, ..., pool5."""
    names, block, conv = [], 1, 1
    for item in VGG19_CONFIG:
        if item == "M":
            names.append(f"pool{block}")
            block, conv = block + 1, 1
        else:
            names += [f"conv{block}_{conv}", f"relu{block}_{conv}"]
            conv += 1
    return names


def _make_features() -> nn.Sequential:
    layers, channels = [], 3
    for item in VGG19_CONFIG:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, item, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = item
    return nn.Sequential(*layers)


def grayscale_to_vgg_input(images: torch.Tensor, pixel_scale: float = 1.0) -> torch.Tensor:
    """(n, H, W) or (n, 1, H, W) grayscale -> (n, 3, H, W) float32, ImageNet-normalised.

    Pixels divided by ``pixel_scale`` must lie in [0, 1] (a tolerance of 1e-3 allows rounding).
    """
    x = torch.as_tensor(images, dtype=torch.float32)
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 3:
        raise VGGInputError(f"'images': expected grayscale (n, H, W), got shape {tuple(x.shape)}. "
                            "Fix: pass one 2-D grayscale image per row")
    x = x / float(pixel_scale)
    if x.numel() and (not torch.isfinite(x).all() or x.min() < -1e-3 or x.max() > 1 + 1e-3):
        raise VGGInputError(f"'images': pixels / pixel_scale span [{float(x.min()):.4g}, {float(x.max()):.4g}], "
                            "VGG19 expects [0, 1]. Fix: pass pixel_scale=255 for 8-bit pixels, or rescale")
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x[:, None].expand(-1, 3, -1, -1) - mean) / std


class VGG19Features(nn.Module):
    """torchvision's ``vgg19().features`` (same module indices), run up to a named layer.

    Construct with :func:`load_vgg19_features`; a bare ``VGG19Features()`` has untrained weights.
    """

    def __init__(self):
        super().__init__()
        self.features = _make_features()
        self.layer_names = vgg19_layer_names()

    def layer_index(self, layer: str) -> int:
        if layer not in self.layer_names:
            raise VGGInputError(f"'layer': unknown VGG19 layer {layer!r}. Fix: use one of {self.layer_names}")
        return self.layer_names.index(layer)

    def forward(self, x: torch.Tensor, layer: str = "conv3_1") -> torch.Tensor:
        """x: (n, 3, H, W) ImageNet-normalised -> the output of ``layer`` (e.g. conv3_1: before its ReLU,
        relu3_1: after it). Only the modules up to that layer run."""
        last = self.layer_index(layer)
        for module in self.features[: last + 1]:
            x = module(x)
        return x

    def grayscale_activations(self, images, layer: str = "conv3_1", pixel_scale: float = 1.0) -> torch.Tensor:
        """Extractor for :func:`pipeline.target.controls.feature_similarity`: grayscale (n, H, W) pixels in
        [0, pixel_scale] -> activations of ``layer``, (n, C, H', W')."""
        return self(grayscale_to_vgg_input(images, pixel_scale), layer)


def load_vgg19_features(weights_path, map_location: str | torch.device = "cpu") -> VGG19Features:
    """Load torchvision's ImageNet VGG19 weights (``vgg19-dcbb9e9d.pth`` or any state_dict with the same
    ``features.*`` keys and shapes) into :class:`VGG19Features`, in eval mode with gradients off.

    Raises VGGWeightsError if the file is missing, unreadable, or its ``features.*`` keys or shapes differ.
    """
    path = Path(weights_path)
    if not path.is_file():
        raise VGGWeightsError(
            f"VGG19 weights not found at '{path}'. Fix: put torchvision's ImageNet-pretrained {WEIGHTS_FILE} "
            "(https://download.pytorch.org/models/vgg19-dcbb9e9d.pth) there; this project never falls back "
            "to random weights")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for a corrupt or non-tensor pickle
        raise VGGWeightsError(f"'{path}': cannot be read as a torch state_dict ({err}). "
                              f"Fix: use torchvision's {WEIGHTS_FILE}") from err
    if not isinstance(state, dict):
        raise VGGWeightsError(f"'{path}': holds a {type(state).__name__}, not a state_dict. "
                              "Fix: save model.state_dict(), not the model")
    model = VGG19Features()
    expected = model.state_dict()
    given = {k: v for k, v in state.items() if k.startswith("features.")}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    if missing or unexpected:
        raise VGGWeightsError(f"'{path}': features keys do not match torchvision's VGG19: missing {missing[:6]}, "
                              f"unexpected {unexpected[:6]}. Fix: use the state_dict of torchvision's vgg19 "
                              f"({WEIGHTS_FILE}), not another VGG depth or a batch-norm variant")
    wrong = [f"{k}: {tuple(given[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if tuple(given[k].shape) != tuple(v.shape)]
    if wrong:
        raise VGGWeightsError(f"'{path}': tensor shapes differ from VGG19: {wrong[:4]}. "
                              f"Fix: use torchvision's {WEIGHTS_FILE}")
    model.load_state_dict(given, strict=True)
    model.eval()
    model.requires_grad_(False)
    return model
