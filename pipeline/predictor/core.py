"""The shared convolutional core of the predictive model (Sinz et al. 2018; Walker et al. 2019).

A small CNN with dense skip connections: layer l sees the concatenation of the outputs of all earlier
layers (the first layer sees the image), and the core's output concatenates every layer's output, so the
readout can pick simple (layer 1) as well as more complex (layers 2-3) features. Every convolution pads
to keep the spatial size ('same' padding), so a readout position in [-1, 1]^2 names the same place in the
image and in the feature map. The first layer may stride (``input_stride`` s > 1) to make a feature map of
ceil(H / s) x ceil(W / s), which cuts the cost of every layer by about s^2 (the fast CPU preset uses 2).

Shapes: input (batch, in_channels, H, W) standardised pixels; output (batch, channels * n_layers, H', W')
with H' = ceil(H / input_stride), W' = ceil(W / input_stride).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

# 3x3 discrete Laplacian (diagonals weighted 1/2), the smoothness operator of Sinz et al. 2018.
_LAPLACE_3X3 = torch.tensor([[0.5, 1.0, 0.5],
                             [1.0, -6.0, 1.0],
                             [0.5, 1.0, 0.5]])


def laplace_penalty(weight: torch.Tensor) -> torch.Tensor:
    """Sum of squared Laplacians of a conv weight, a smoothness penalty on each 2-D filter.

    weight: (out_channels, in_channels, k, k). Zero padding outside the filter also penalises filters that
    do not fall off towards their border. Returns a scalar >= 0 (0 only for the all-zero filter).
    """
    if weight.ndim != 4:
        raise ValueError(f"laplace_penalty: field 'weight' must be a 4-D conv weight, got shape "
                         f"{tuple(weight.shape)}. Fix: pass conv.weight of a Conv2d")
    filters = weight.reshape(-1, 1, *weight.shape[-2:])
    kernel = _LAPLACE_3X3.to(weight)[None, None]
    return F.conv2d(filters, kernel, padding=1).pow(2).sum()


class DenseCore(nn.Module):
    """3-layer (configurable) CNN, batch norm + ELU, dense skip connections.

    in_channels: image channels (1 for grayscale); channels: feature maps per layer; n_layers: depth;
    input_kernel: first (large) kernel size, odd; hidden_kernel: later kernel size, odd;
    input_stride: stride of the first layer (1 = full resolution);
    gamma_input: weight of the Laplace smoothness penalty on the first layer's filters;
    gamma_hidden: weight of an L2 penalty on the hidden layers' filters (0 = off).
    """

    def __init__(self, in_channels: int = 1, channels: int = 32, n_layers: int = 3, input_kernel: int = 13,
                 hidden_kernel: int = 5, gamma_input: float = 0.0, gamma_hidden: float = 0.0,
                 input_stride: int = 1, bn_momentum: float = 0.1):
        super().__init__()
        for name, k in (("input_kernel", input_kernel), ("hidden_kernel", hidden_kernel)):
            if k < 1 or k % 2 == 0:
                raise ValueError(f"DenseCore: field '{name}' must be a positive odd kernel size, got {k}. "
                                 "Fix: use e.g. 9, 13 for the input kernel and 3, 5, 7 for hidden kernels")
        if input_stride < 1:
            raise ValueError(f"DenseCore: field 'input_stride' must be >= 1, got {input_stride}. Fix: use 1 or 2")
        if channels < 1 or n_layers < 1:
            raise ValueError(f"DenseCore: fields 'channels' ({channels}) and 'n_layers' ({n_layers}) must be "
                             ">= 1. Fix: use e.g. 32 channels and 3 layers")
        self.channels, self.n_layers = int(channels), int(n_layers)
        self.gamma_input, self.gamma_hidden = float(gamma_input), float(gamma_hidden)
        self.layers = nn.ModuleList()
        for layer in range(n_layers):
            k = input_kernel if layer == 0 else hidden_kernel
            c_in = in_channels if layer == 0 else channels * layer
            stride = input_stride if layer == 0 else 1
            self.layers.append(nn.Sequential(
                nn.Conv2d(c_in, channels, k, stride=stride, padding=k // 2, bias=False),  # BN supplies the bias
                nn.BatchNorm2d(channels, momentum=bn_momentum),
                nn.ELU(),
            ))

    @property
    def out_channels(self) -> int:
        return self.channels * self.n_layers

    def output_shape(self, height: int, width: int) -> tuple[int, int]:
        """Spatial shape (H', W') of the feature map for H x W inputs."""
        conv = self.layers[0][0]
        k, s, p = conv.kernel_size[0], conv.stride[0], conv.padding[0]
        return (height + 2 * p - k) // s + 1, (width + 2 * p - k) // s + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (batch, in_channels, H, W) -> features (batch, channels * n_layers, H', W')."""
        outputs = []
        for layer in self.layers:
            outputs.append(layer(x if not outputs else torch.cat(outputs, dim=1)))
        return torch.cat(outputs, dim=1)

    def laplace(self) -> torch.Tensor:
        """Unweighted Laplace smoothness of the first layer's filters (scalar >= 0)."""
        return laplace_penalty(self.layers[0][0].weight)

    def hidden_l2(self) -> torch.Tensor:
        """Unweighted sum of squared hidden-layer filter weights (scalar >= 0; 0 for a 1-layer core)."""
        total = self.layers[0][0].weight.new_zeros(())
        for layer in self.layers[1:]:
            total = total + layer[0].weight.pow(2).sum()
        return total

    def regularizer(self) -> torch.Tensor:
        """gamma_input * Laplace(first layer) + gamma_hidden * L2(hidden layers)."""
        reg = self.gamma_input * self.laplace()
        if self.gamma_hidden:
            reg = reg + self.gamma_hidden * self.hidden_l2()
        return reg
