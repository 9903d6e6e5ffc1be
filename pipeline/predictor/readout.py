"""Per-neuron spatial readouts: where in the core's feature map each neuron looks, and which features it weights.

Each neuron a has a position mu_a in [-1, 1]^2 (x = width, y = height; -1 / +1 are the centres of the edge
pixels), a feature weight vector w_a (one weight per core channel) and a bias b_a:

    readout_a(image) = sum_c w_ca * F_c(image)[mu_a + shift] + b_a

where F(image)[p] is the feature map bilinearly interpolated at p (``grid_sample``) and ``shift`` is the
shifter's per-trial eye-movement shift, common to all neurons. Two kinds:

- :class:`PointReadout`: the spatial-transformer readout, one learned point per neuron.
- :class:`GaussianReadout`: during training the point is drawn from N(mu_a, diag(sigma_a^2)) on every
  forward pass (sigma_a learned, so it anneals as the position settles); at evaluation the mean mu_a is used.

Regulariser: gamma_readout * sum |w| (L1 on the feature weights, Sinz et al. 2018).

Positions may start at a data-driven guess, :func:`receptive_field_positions` (the peak of each neuron's
response-weighted average of the images and of their local contrast energy), instead of at random: the
gradient of a point readout only sees its neighbourhood, so a neuron that starts far from its receptive
field takes many epochs to walk there; a good start makes short CPU trainings work.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def _zscore_columns(x: torch.Tensor) -> torch.Tensor:
    """Centre each column and scale it to unit norm (so X^T Y is a matrix of correlations); 0 stays 0."""
    x = x - x.mean(dim=0)
    return x / x.norm(dim=0).clamp_min(1e-12)


def _gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (n, 1, H, W) maps, zero padded; sigma in pixels (0 = no blur).

    Hand-written (two 1-D convolutions) because torchvision is not a dependency and scipy would force the
    maps off the GPU.
    """
    if sigma <= 0:
        return maps
    radius = max(1, int(math.ceil(3 * sigma)))
    g = torch.exp(-torch.arange(-radius, radius + 1, dtype=maps.dtype, device=maps.device) ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    maps = F.conv2d(maps, g.view(1, 1, 1, -1), padding=(0, radius))
    return F.conv2d(maps, g.view(1, 1, -1, 1), padding=(radius, 0))


@torch.no_grad()
def receptive_field_positions(images: torch.Tensor, responses: torch.Tensor, grid_shape: tuple[int, int],
                              blur_sigma: float = 1.0, chunk: int = 2048) -> torch.Tensor:
    """A guess of each neuron's receptive-field centre, as readout positions (n_neurons, 2) in [-1, 1]^2.

    images (n_trials, H, W) standardised pixels; responses (n_trials, n_neurons); grid_shape (h, w): the
    resolution of the search (the core's feature map). On that grid, for every neuron, two correlation maps
    over trials: with the pixels (a response-weighted average, finds linear 'simple' receptive fields) and
    with the local contrast energy (the 3 x 3 mean of squared pixels, finds 'complex' ones). The score
    blur(corr_pixel^2) + relu(corr_energy)^2 peaks at the receptive field; its arg-max is the position.
    Cost: one (h*w) x n_trials x n_neurons matrix product, done ``chunk`` neurons at a time.
    """
    if images.ndim != 3 or responses.ndim != 2 or images.shape[0] != responses.shape[0]:
        raise ValueError(f"receptive_field_positions: fields 'images' {tuple(images.shape)} and 'responses' "
                         f"{tuple(responses.shape)} must be (n_trials, H, W) and (n_trials, n_neurons). "
                         "Fix: pass the training trials")
    h, w = grid_shape
    pix = F.adaptive_avg_pool2d(images[:, None].float(), (h, w))
    energy = F.avg_pool2d(pix ** 2, 3, stride=1, padding=1, count_include_pad=False)
    pix = _zscore_columns(pix.flatten(1))
    energy = _zscore_columns(energy.flatten(1))
    positions = []
    for start in range(0, responses.shape[1], chunk):
        r = _zscore_columns(responses[:, start:start + chunk].float())
        linear = (pix.T @ r).T.reshape(-1, 1, h, w) ** 2
        score = _gaussian_blur(linear, blur_sigma).flatten(1) + (energy.T @ r).T.clamp_min(0) ** 2
        idx = score.argmax(dim=1)
        x, y = (idx % w).float(), torch.div(idx, w, rounding_mode="floor").float()
        positions.append(torch.stack([2 * x / max(w - 1, 1) - 1, 2 * y / max(h - 1, 1) - 1], dim=1))
    return torch.cat(positions)


class PointReadout(nn.Module):
    """Spatial-transformer readout: one learned position, feature weights and bias per neuron.

    in_channels: core output channels C; n_neurons: N; init_mu_range: positions start uniform in
    [-init_mu_range, init_mu_range]^2; gamma_readout: L1 weight on the feature weights.
    """

    def __init__(self, in_channels: int, n_neurons: int, init_mu_range: float = 0.5,
                 gamma_readout: float = 0.0):
        super().__init__()
        if not 0 <= init_mu_range <= 1:
            raise ValueError(f"readout: field 'init_mu_range' must lie in [0, 1], got {init_mu_range}. "
                             "Fix: positions live in [-1, 1]^2; use e.g. 0.5")
        self.in_channels, self.n_neurons = int(in_channels), int(n_neurons)
        self.gamma_readout = float(gamma_readout)
        self.mu = nn.Parameter(torch.empty(n_neurons, 2).uniform_(-init_mu_range, init_mu_range))
        # Start every neuron on the mean feature (as neuralpredictors does); learning breaks the symmetry.
        self.features = nn.Parameter(torch.full((in_channels, n_neurons), 1.0 / in_channels))
        self.bias = nn.Parameter(torch.zeros(n_neurons))

    def initialize_bias(self, bias: np.ndarray | torch.Tensor) -> None:
        """Set the per-neuron bias (n_neurons,), e.g. to the drive that gives each neuron's mean rate."""
        bias = torch.as_tensor(bias, dtype=self.bias.dtype)
        if bias.shape != self.bias.shape:
            raise ValueError(f"readout: field 'bias' must have shape ({self.n_neurons},), got "
                             f"{tuple(bias.shape)}. Fix: pass one value per neuron")
        with torch.no_grad():
            self.bias.copy_(bias.to(self.bias.device))

    def initialize_positions(self, positions: np.ndarray | torch.Tensor) -> None:
        """Set the mean positions (n_neurons, 2) in [-1, 1]^2, e.g. from receptive_field_positions."""
        positions = torch.as_tensor(positions, dtype=self.mu.dtype)
        if positions.shape != self.mu.shape:
            raise ValueError(f"readout: field 'positions' must have shape ({self.n_neurons}, 2), got "
                             f"{tuple(positions.shape)}. Fix: pass one (x, y) per neuron")
        with torch.no_grad():
            self.mu.copy_(positions.clamp(-1, 1).to(self.mu.device))

    def positions(self, batch: int, shift: torch.Tensor | None = None) -> torch.Tensor:
        """Readout positions (batch, n_neurons, 2) in [-1, 1]^2 for one forward pass."""
        if self.training:
            with torch.no_grad():  # keep the learned means inside the feature map
                self.mu.clamp_(-1.0, 1.0)
        grid = self.mu.unsqueeze(0).expand(batch, -1, -1)
        if shift is not None:
            grid = grid + shift.unsqueeze(1)
        return grid

    def forward(self, features: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
        """features (batch, C, H, W), shift (batch, 2) or None -> drive (batch, n_neurons)."""
        if features.ndim != 4 or features.shape[1] != self.in_channels:
            raise ValueError(f"readout: field 'features' must have shape (batch, {self.in_channels}, H, W), "
                             f"got {tuple(features.shape)}. Fix: build the readout with the core's out_channels")
        grid = self.positions(features.shape[0], shift).clamp(-1.0, 1.0)
        sampled = F.grid_sample(features, grid.unsqueeze(2), mode="bilinear", padding_mode="border",
                                align_corners=True)  # (batch, C, n_neurons, 1)
        # A broadcast multiply-and-sum: on CPU it is several times faster than einsum's batched matmul here.
        return (sampled[..., 0] * self.features).sum(dim=1) + self.bias

    def feature_l1(self) -> torch.Tensor:
        """Unweighted L1 norm of the feature weights (scalar >= 0)."""
        return self.features.abs().sum()

    def regularizer(self) -> torch.Tensor:
        """gamma_readout * sum |w|."""
        return self.gamma_readout * self.feature_l1()


class GaussianReadout(PointReadout):
    """Gaussian readout: positions sampled from N(mu_a, diag(sigma_a^2)) in training, mu_a at evaluation.

    init_sigma: starting standard deviation of the sampled position (in [-1, 1] grid units); it is learned.
    """

    def __init__(self, in_channels: int, n_neurons: int, init_mu_range: float = 0.5, init_sigma: float = 0.5,
                 gamma_readout: float = 0.0):
        super().__init__(in_channels, n_neurons, init_mu_range, gamma_readout)
        if init_sigma <= 0:
            raise ValueError(f"readout: field 'init_sigma' must be > 0, got {init_sigma}. Fix: use e.g. 0.5")
        self.sigma = nn.Parameter(torch.full((n_neurons, 2), float(init_sigma)))

    def positions(self, batch: int, shift: torch.Tensor | None = None) -> torch.Tensor:
        grid = super().positions(batch, shift)
        if self.training:
            noise = torch.randn(batch, self.n_neurons, 2, device=grid.device, dtype=grid.dtype)
            grid = grid + noise * self.sigma.abs()
        return grid


READOUTS = {"gaussian": GaussianReadout, "point": PointReadout}


def build_readout(kind: str, in_channels: int, n_neurons: int, init_mu_range: float = 0.5,
                  init_sigma: float = 0.5, gamma_readout: float = 0.0) -> PointReadout:
    """Make a readout of ``kind`` ('gaussian' or 'point')."""
    if kind not in READOUTS:
        raise ValueError(f"readout: field 'readout' must be one of {sorted(READOUTS)}, got {kind!r}. "
                         "Fix: set config['readout'] to 'gaussian' or 'point'")
    if kind == "gaussian":
        return GaussianReadout(in_channels, n_neurons, init_mu_range, init_sigma, gamma_readout)
    return PointReadout(in_channels, n_neurons, init_mu_range, gamma_readout)
