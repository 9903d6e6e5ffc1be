"""The modulator: behaviour -> a positive gain per neuron (Sinz et al. 2018; Walker et al. 2019).

Arousal and locomotion scale visual responses. The modulator maps the standardised behaviour of a trial
(pupil size, its derivative, running speed) through a small MLP to one positive gain per neuron, which
multiplies that neuron's predicted rate. The gain is 1 when the MLP outputs 0:

- 'exp':      gain = exp(m)
- 'softplus': gain = softplus(m) / log(2)

Regulariser: gamma_modulator * sum of squared weights (0 = off).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

GAINS = ("exp", "softplus")


class Modulator(nn.Module):
    """MLP: behaviour z-score (batch, n_behavior) -> gain (batch, n_neurons) > 0.

    The last layer starts at zero, so an untrained modulator has gain 1 everywhere.
    """

    def __init__(self, n_neurons: int, n_behavior: int = 3, hidden: int = 10, gain: str = "exp",
                 gamma_modulator: float = 0.0):
        super().__init__()
        if gain not in GAINS:
            raise ValueError(f"Modulator: field 'modulator_gain' must be one of {GAINS}, got {gain!r}. "
                             "Fix: use 'exp' or 'softplus'")
        if hidden < 1:
            raise ValueError(f"Modulator: field 'modulator_hidden' must be >= 1, got {hidden}. Fix: use e.g. 10")
        self.n_behavior, self.gain_kind = int(n_behavior), gain
        self.gamma_modulator = float(gamma_modulator)
        last = nn.Linear(hidden, n_neurons)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(nn.Linear(n_behavior, hidden), nn.ELU(), last)

    def forward(self, behavior: torch.Tensor) -> torch.Tensor:
        """behavior (batch, n_behavior) standardised -> gain (batch, n_neurons), positive, 1 at output 0."""
        if behavior.ndim != 2 or behavior.shape[1] != self.n_behavior:
            raise ValueError(f"Modulator: field 'behavior' must have shape (batch, {self.n_behavior}), got "
                             f"{tuple(behavior.shape)}. Fix: pass pupil size, its derivative and running speed")
        m = self.net(behavior)
        if self.gain_kind == "exp":
            return torch.exp(m)
        return F.softplus(m) / math.log(2.0)

    def regularizer(self) -> torch.Tensor:
        """gamma_modulator * sum of squared weights (scalar >= 0)."""
        return self.gamma_modulator * sum(m.weight.pow(2).sum() for m in self.net if isinstance(m, nn.Linear))
