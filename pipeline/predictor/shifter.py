"""The shifter: eye position -> a shift of every readout position (Sinz et al. 2018).

When the eye moves, every receptive field moves on the screen by the same amount; the shifter learns that
map from the (standardised) pupil centre to a 2-D shift in readout grid units ([-1, 1]^2 spans the image),
added to the positions of all neurons on that trial.

Regulariser: gamma_shifter * sum of squared weights (keeps the map small and smooth; 0 = off).
"""

from __future__ import annotations

import torch
from torch import nn


class Shifter(nn.Module):
    """tanh MLP: pupil centre z-score (batch, 2) -> shift (batch, 2), each coordinate in (-1, 1).

    hidden: units per hidden layer; n_layers: hidden layers (>= 1); gamma_shifter: L2 weight.
    The last layer starts at zero, so an untrained shifter shifts nothing.
    """

    def __init__(self, hidden: int = 5, n_layers: int = 1, gamma_shifter: float = 0.0):
        super().__init__()
        if hidden < 1 or n_layers < 1:
            raise ValueError(f"Shifter: fields 'shifter_hidden' ({hidden}) and 'shifter_layers' ({n_layers}) "
                             "must be >= 1. Fix: use e.g. 5 hidden units in 1 layer")
        self.gamma_shifter = float(gamma_shifter)
        layers: list[nn.Module] = []
        width = 2
        for _ in range(n_layers):
            layers += [nn.Linear(width, hidden), nn.Tanh()]
            width = hidden
        last = nn.Linear(width, 2)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*layers, last, nn.Tanh())

    def forward(self, pupil_center: torch.Tensor) -> torch.Tensor:
        """pupil_center (batch, 2) standardised (x, y) -> shift (batch, 2) in readout grid units."""
        if pupil_center.ndim != 2 or pupil_center.shape[1] != 2:
            raise ValueError(f"Shifter: field 'pupil_center' must have shape (batch, 2), got "
                             f"{tuple(pupil_center.shape)}. Fix: pass the eye position (x, y) of each trial")
        return self.net(pupil_center)

    def regularizer(self) -> torch.Tensor:
        """gamma_shifter * sum of squared weights (scalar >= 0)."""
        return self.gamma_shifter * sum(m.weight.pow(2).sum() for m in self.net if isinstance(m, nn.Linear))
