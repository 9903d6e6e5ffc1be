"""Where computation runs: one rule for the predictor, the classifier and the robustness evaluation."""

from __future__ import annotations

import torch

from pipeline.errors import ConfigError


def resolve_device(device=None, model: torch.nn.Module | None = None) -> torch.device:
    """None or 'auto': the model's device if a model is given, else CUDA when available, else the CPU.

    Anything else is taken as a torch device; a CUDA device on a machine without CUDA is an error (it would
    otherwise fail later, deep inside a training run).
    """
    if device is None or str(device) == "auto":
        if model is not None:
            for parameter in model.parameters():
                return parameter.device
            return torch.device("cpu")
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"device {device!r} is not a torch device ({err}). Fix: use 'auto', 'cpu' or 'cuda[:K]'")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {str(device)!r} asked for, but CUDA is not available. Fix: use 'auto' or 'cpu'")
    return device
