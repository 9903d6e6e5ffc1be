"""What a predictor training run is configured by: the model and training defaults, the presets, the resolver.

A configuration is resolved once, when it is entered: :func:`resolve_config` fills in a preset's values, checks
every field (type and range) and returns the COMPLETE configuration as plain Python values, without a 'preset'
key. That dict is what is stored and hashed, and what :func:`pipeline.predictor.train.train_predictor` runs, so
a stored configuration means the same whatever the presets say later. Resolving is idempotent and survives a
JSON round trip.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from pipeline.checks import apply_preset, is_int, is_number, non_negative_number, positive_int
from pipeline.errors import ConfigError

from .model import MODEL_DEFAULTS, NONLINEARITIES
from .modulator import GAINS
from .readout import READOUTS

TRAIN_DEFAULTS = {
    "readout_init": "receptive_field",  # 'receptive_field' (data-driven start, readout.py) | 'random'
    "lr": 5e-3,
    "batch_size": 64,
    "max_epochs": 200,
    "patience": 5,            # epochs without improvement before restoring the best weights and decaying lr
    "lr_decay_steps": 3,      # lr decays before stopping
    "lr_decay_factor": 0.3,
    "tolerance": 1e-4,        # a validation correlation must beat the best by this much to count
    "eval_batch_size": 256,
    "device": "auto",         # 'auto' (CUDA if available) | 'cpu' | 'cuda' | 'cuda:K'
}

DEFAULT_CONFIG = {**MODEL_DEFAULTS, **TRAIN_DEFAULTS}

# Small and fast: 1000 + 500 trials x 500 neurons of 36 x 64 pixels train in about 30-40 s on one CPU core
# (a strided first layer makes an 18 x 32 feature map; 12 channels; 30 epochs at most).
CPU_FAST_CONFIG = {
    **DEFAULT_CONFIG,
    "core_channels": 12,
    "input_kernel": 9,
    "hidden_kernel": 3,
    "input_stride": 2,
    "max_epochs": 30,
    "patience": 3,
    "lr_decay_steps": 1,
    "device": "cpu",
}

PREDICTOR_PRESETS: dict[str, dict] = {"paper": DEFAULT_CONFIG, "cpu-fast": CPU_FAST_CONFIG}

READOUT_INITS = ("receptive_field", "random")
POSITIVE_INTS = ("core_channels", "core_layers", "input_stride", "shifter_hidden", "shifter_layers",
                 "modulator_hidden", "batch_size", "max_epochs", "patience", "eval_batch_size")
ODD_KERNELS = ("input_kernel", "hidden_kernel")
PENALTIES = ("gamma_input", "gamma_hidden", "gamma_readout", "gamma_shifter", "gamma_modulator", "tolerance")
FLAGS = ("shifter", "modulator")
CHOICES = {"readout": tuple(READOUTS), "modulator_gain": GAINS, "output_nonlinearity": NONLINEARITIES,
           "readout_init": READOUT_INITS}


class PredictorConfigError(ConfigError):
    """A predictor configuration that cannot run: the message names the field and the fix."""


def resolve_config(config: Mapping | str | None) -> dict:
    """The complete, checked predictor configuration (every key of DEFAULT_CONFIG, plain values, no 'preset').

    config: a preset name (a key of PREDICTOR_PRESETS), or a dict of fields plus optionally 'preset' (default
    'paper') whose values fill the fields the dict leaves out; None is the 'paper' preset. A complete dict is
    returned as it is (checked and cast), so resolving a resolved configuration changes nothing.
    """
    out = apply_preset(dict(config) if isinstance(config, Mapping) else config, PREDICTOR_PRESETS, DEFAULT_CONFIG,
                       "predictor config", error=PredictorConfigError)
    for key in POSITIVE_INTS:
        out[key] = positive_int(out[key], f"predictor config: field '{key}'", error=PredictorConfigError)
    for key in ODD_KERNELS:
        if not is_int(out[key]) or out[key] < 1 or out[key] % 2 == 0:
            raise PredictorConfigError(f"predictor config: field '{key}'={out[key]!r} must be a positive odd "
                                       "kernel size. Fix: use e.g. 9, 13 for the input kernel, 3, 5, 7 for hidden")
        out[key] = int(out[key])
    if not is_int(out["lr_decay_steps"]) or out["lr_decay_steps"] < 0:
        raise PredictorConfigError(f"predictor config: field 'lr_decay_steps'={out['lr_decay_steps']!r} must be "
                                   "an integer >= 0")
    out["lr_decay_steps"] = int(out["lr_decay_steps"])
    for key in PENALTIES:
        out[key] = non_negative_number(out[key], f"predictor config: field '{key}'", error=PredictorConfigError)
    if not is_number(out["lr"]) or out["lr"] <= 0:
        raise PredictorConfigError(f"predictor config: field 'lr'={out['lr']!r} must be a number > 0")
    if not is_number(out["lr_decay_factor"]) or not 0 < out["lr_decay_factor"] < 1:
        raise PredictorConfigError(f"predictor config: field 'lr_decay_factor'={out['lr_decay_factor']!r} must "
                                   "lie in (0, 1)")
    if not is_number(out["init_mu_range"]) or not 0 <= out["init_mu_range"] <= 1:
        raise PredictorConfigError(f"predictor config: field 'init_mu_range'={out['init_mu_range']!r} must lie "
                                   "in [0, 1]. Fix: positions live in [-1, 1]^2; use e.g. 0.5")
    if not is_number(out["init_sigma"]) or out["init_sigma"] <= 0:
        raise PredictorConfigError(f"predictor config: field 'init_sigma'={out['init_sigma']!r} must be > 0")
    for key in ("lr", "lr_decay_factor", "init_mu_range", "init_sigma"):
        out[key] = float(out[key])
    for key in FLAGS:
        if not isinstance(out[key], (bool, np.bool_)):
            raise PredictorConfigError(f"predictor config: field '{key}'={out[key]!r} must be True or False")
        out[key] = bool(out[key])
    for key, allowed in CHOICES.items():
        if not isinstance(out[key], str) or out[key] not in allowed:
            raise PredictorConfigError(f"predictor config: field '{key}'={out[key]!r} must be one of {allowed}")
        out[key] = str(out[key])
    out["device"] = check_device(out["device"])
    return {key: out[key] for key in DEFAULT_CONFIG}


def check_device(device) -> str:
    """'auto' or a torch device name, as a string; whether CUDA is there is checked where the model trains."""
    if not isinstance(device, str):
        raise PredictorConfigError(f"predictor config: field 'device'={device!r} must be a string. Fix: use "
                                   "'auto', 'cpu' or 'cuda[:K]'")
    if device == "auto":
        return device
    try:
        torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise PredictorConfigError(f"predictor config: field 'device'={device!r} is not a torch device ({err}). "
                                   "Fix: use 'auto', 'cpu' or 'cuda[:K]'") from err
    return str(device)
