"""The predictive model of mouse V1: core + readout (+ shifter, + modulator) -> positive firing rates.

    rate_a = f(readout_a(core(standardised image), shift(pupil centre))) * gain_a(behaviour) * scale_a

with f = ELU + 1 (or softplus) so rates are positive, shift from the :class:`Shifter`, gain from the
:class:`Modulator`, and scale_a the training-set standard deviation of neuron a's responses: the network
works on responses in units of their std (as neuralpredictors normalises responses), and ``forward``
returns rates in the units of the recorded responses, which Eq 6 needs (it scales them by w_a v_a).

The model standardises its own inputs with statistics of the training trials, kept as buffers (so they
travel in the state_dict): images (batch, 1, H, W) or (batch, H, W) in raw pixels, behaviour (batch, 3)
(pupil size, its derivative, running speed) and pupil centre (batch, 2) in recorded units. Behaviour or
pupil centre ``None`` means "held at the training mean" (a z-score of 0), as Eq 6 requires.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .core import DenseCore
from .modulator import Modulator
from .readout import PointReadout, build_readout, receptive_field_positions
from .shifter import Shifter

N_BEHAVIOR = 3
NONLINEARITIES = ("elu1", "softplus")

# The architecture part of a predictor config (config.DEFAULT_CONFIG adds the training part).
MODEL_DEFAULTS = {
    "core_channels": 32,
    "core_layers": 3,
    "input_kernel": 13,
    "hidden_kernel": 5,
    "input_stride": 1,         # 2 halves the feature map's resolution (4x less compute)
    "gamma_input": 10.0,       # Laplace smoothness of the first-layer filters
    "gamma_hidden": 0.0,       # L2 on hidden filters
    "readout": "gaussian",     # 'gaussian' | 'point'
    "init_mu_range": 0.5,
    "init_sigma": 0.1,
    "gamma_readout": 0.01,     # L1 on the readout feature weights
    "shifter": True,
    "shifter_hidden": 5,
    "shifter_layers": 1,
    "gamma_shifter": 0.0,
    "modulator": True,
    "modulator_hidden": 10,
    "modulator_gain": "exp",   # 'exp' | 'softplus'
    "gamma_modulator": 0.0,
    "output_nonlinearity": "elu1",  # 'elu1' | 'softplus'
}


def _inverse_nonlinearity(kind: str, rate: torch.Tensor) -> torch.Tensor:
    """The drive x with f(x) == rate (rate > 0) for the output nonlinearity ``kind``."""
    rate = rate.clamp_min(1e-4)
    if kind == "elu1":
        return torch.where(rate >= 1, rate - 1, torch.log(rate))
    return torch.log(torch.expm1(rate))


def _mean_std(x: np.ndarray, axis) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std over ``axis`` in float64, a zero std replaced by 1 (a constant input stays 0 after z-scoring)."""
    x = np.asarray(x, dtype=np.float64)
    mean, std = x.mean(axis=axis), x.std(axis=axis)
    return mean, np.where(std > 0, std, 1.0)


class PredictiveModel(nn.Module):
    """Core + readout + optional shifter and modulator, with the input/response statistics as buffers.

    image_shape: (H, W) of the images it was built for; n_neurons is the readout's.
    """

    def __init__(self, core: DenseCore, readout: PointReadout, shifter: Shifter | None = None,
                 modulator: Modulator | None = None, image_shape: tuple[int, int] = (36, 64),
                 output_nonlinearity: str = "elu1"):
        super().__init__()
        if output_nonlinearity not in NONLINEARITIES:
            raise ValueError(f"PredictiveModel: field 'output_nonlinearity' must be one of {NONLINEARITIES}, "
                             f"got {output_nonlinearity!r}. Fix: use 'elu1' or 'softplus'")
        self.core, self.readout, self.shifter, self.modulator = core, readout, shifter, modulator
        self.image_shape = tuple(int(s) for s in image_shape)
        self.output_nonlinearity = output_nonlinearity
        n = readout.n_neurons
        self.register_buffer("image_mean", torch.tensor(0.0))
        self.register_buffer("image_std", torch.tensor(1.0))
        self.register_buffer("behavior_mean", torch.zeros(N_BEHAVIOR))
        self.register_buffer("behavior_std", torch.ones(N_BEHAVIOR))
        self.register_buffer("pupil_mean", torch.zeros(2))
        self.register_buffer("pupil_std", torch.ones(2))
        self.register_buffer("response_scale", torch.ones(n))

    @property
    def n_neurons(self) -> int:
        return self.readout.n_neurons

    # ---- statistics of the training trials -------------------------------------------------------------
    def set_statistics(self, images: np.ndarray, behavior: np.ndarray, pupil_center: np.ndarray,
                       responses: np.ndarray) -> None:
        """Store the training-set statistics and start each neuron's bias at its mean rate.

        images (n, H, W) raw pixels; behavior (n, 3); pupil_center (n, 2); responses (n, n_neurons) >= 0.
        """
        img_mean, img_std = _mean_std(images, axis=None)
        beh_mean, beh_std = _mean_std(behavior, axis=0)
        pc_mean, pc_std = _mean_std(pupil_center, axis=0)
        _, resp_std = _mean_std(responses, axis=0)
        mean_rate = np.asarray(responses, dtype=np.float64).mean(axis=0) / resp_std
        values = {"image_mean": img_mean, "image_std": img_std, "behavior_mean": beh_mean,
                  "behavior_std": beh_std, "pupil_mean": pc_mean, "pupil_std": pc_std,
                  "response_scale": resp_std}
        with torch.no_grad():
            for name, value in values.items():
                buf = getattr(self, name)
                buf.copy_(torch.as_tensor(value, dtype=buf.dtype).reshape(buf.shape))
            drive = _inverse_nonlinearity(self.output_nonlinearity, torch.as_tensor(mean_rate, dtype=torch.float32))
        self.readout.initialize_bias(drive)

    def initialize_positions(self, images: torch.Tensor, responses: torch.Tensor, blur_sigma: float = 1.0) -> None:
        """Start the readout positions at each neuron's estimated receptive field (see readout.py).

        images (n, H, W) raw pixels and responses (n, n_neurons) of the training trials, torch tensors.
        """
        grid = self.core.output_shape(*self.image_shape)
        z = (images.to(self.image_mean) - self.image_mean) / self.image_std
        self.readout.initialize_positions(receptive_field_positions(z, responses, grid, blur_sigma))

    # ---- forward ---------------------------------------------------------------------------------------
    def _standardise_images(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim == 3:
            images = images.unsqueeze(1)
        if images.ndim != 4 or images.shape[1] != 1 or tuple(images.shape[-2:]) != self.image_shape:
            raise ValueError(f"PredictiveModel: field 'images' must have shape (batch, 1, {self.image_shape[0]}, "
                             f"{self.image_shape[1]}) or (batch, {self.image_shape[0]}, {self.image_shape[1]}), "
                             f"got {tuple(images.shape)}. Fix: resize the images to the shape the model was "
                             "trained on")
        return (images - self.image_mean) / self.image_std

    @staticmethod
    def _zscore(x: torch.Tensor | None, mean: torch.Tensor, std: torch.Tensor, batch: int,
                name: str) -> torch.Tensor:
        """z-score per column; None -> zeros (the training mean)."""
        if x is None:
            return mean.new_zeros(batch, mean.shape[0])
        if x.shape != (batch, mean.shape[0]):
            raise ValueError(f"PredictiveModel: field '{name}' must have shape ({batch}, {mean.shape[0]}), got "
                             f"{tuple(x.shape)}. Fix: pass one row per image, or None to hold it at its mean")
        return (x - mean) / std

    def forward(self, images: torch.Tensor, behavior: torch.Tensor | None = None,
                pupil_center: torch.Tensor | None = None) -> torch.Tensor:
        """images (batch, 1, H, W) raw pixels, behavior (batch, 3) or None, pupil_center (batch, 2) or None
        -> rates (batch, n_neurons) > 0 in response units."""
        x = self._standardise_images(images)
        batch = x.shape[0]
        shift = None
        if self.shifter is not None:
            shift = self.shifter(self._zscore(pupil_center, self.pupil_mean, self.pupil_std, batch, "pupil_center"))
        drive = self.readout(self.core(x), shift)
        rate = F.elu(drive) + 1.0 if self.output_nonlinearity == "elu1" else F.softplus(drive)
        if self.modulator is not None:
            rate = rate * self.modulator(self._zscore(behavior, self.behavior_mean, self.behavior_std, batch,
                                                      "behavior"))
        return rate * self.response_scale

    def regularizer(self) -> torch.Tensor:
        """Sum of the parts' regularisers (scalar >= 0)."""
        reg = self.core.regularizer() + self.readout.regularizer()
        for part in (self.shifter, self.modulator):
            if part is not None:
                reg = reg + part.regularizer()
        return reg


def build_model(config: dict, n_neurons: int, image_shape: tuple[int, int]) -> PredictiveModel:
    """A fresh PredictiveModel from a config (missing keys take MODEL_DEFAULTS; other keys are ignored)."""
    if n_neurons < 1:
        raise ValueError(f"build_model: field 'n_neurons' must be >= 1, got {n_neurons}. Fix: record some neurons")
    if len(image_shape) != 2 or min(image_shape) < 1:
        raise ValueError(f"build_model: field 'image_shape' must be (H, W), got {image_shape}. "
                         "Fix: pass images.shape[-2:]")
    c = {**MODEL_DEFAULTS, **{k: v for k, v in config.items() if k in MODEL_DEFAULTS}}
    core = DenseCore(in_channels=1, channels=c["core_channels"], n_layers=c["core_layers"],
                     input_kernel=c["input_kernel"], hidden_kernel=c["hidden_kernel"],
                     gamma_input=c["gamma_input"], gamma_hidden=c["gamma_hidden"],
                     input_stride=c["input_stride"])
    readout = build_readout(c["readout"], core.out_channels, n_neurons, init_mu_range=c["init_mu_range"],
                            init_sigma=c["init_sigma"], gamma_readout=c["gamma_readout"])
    shifter = (Shifter(hidden=c["shifter_hidden"], n_layers=c["shifter_layers"], gamma_shifter=c["gamma_shifter"])
               if c["shifter"] else None)
    modulator = (Modulator(n_neurons, n_behavior=N_BEHAVIOR, hidden=c["modulator_hidden"],
                           gain=c["modulator_gain"], gamma_modulator=c["gamma_modulator"])
                 if c["modulator"] else None)
    return PredictiveModel(core, readout, shifter, modulator, image_shape=tuple(image_shape),
                           output_nonlinearity=c["output_nonlinearity"])
