"""Accuracy under additive Gaussian pixel noise (Fig 4 of Li et al. 2019).

Images are grayscale float32 arrays of shape (N, 1, H, W) with pixels in [0, 1]; a model is a torch
``nn.Module`` mapping such a batch to logits (N, n_classes).

Fair comparison between models: the noise is drawn from a numpy Generator seeded by ``seed`` alone,
never from torch or from the model, so every model evaluated with the same (x, stds, seed) sees exactly
the same noisy images. One standard-normal draw z (N, 1, H, W) is shared by all stds (common random
numbers): the noisy image at std s is clip(x + s * z, 0, 1). The accuracy curve over s is then
a function of s alone, not of s plus a fresh noise draw per level.

Configuration (``noise_config``, a plain dict a DataJoint paramset can hold; ``resolve_noise_config`` checks it
and fills the defaults when it is entered):
    stds        non-empty list of noise standard deviations >= 0, in [0, 1] pixel units (required)
    n_samples   how many test samples (a seeded subset, see ``samples.select_samples``); None = all (default)
    seed        picks the samples and seeds the noise, default 0
"""

from __future__ import annotations

from typing import Iterator, Mapping, Sequence

import numpy as np
import torch

from pipeline.checks import check_keys
from pipeline.devices import resolve_device

from .errors import RobustnessConfigError, RobustnessInputError
from .images import check_batch_size, check_images, predict_labels
from .samples import resolve_n_samples, resolve_seed

__all__ = ["NOISE_KEYS", "resolve_noise_config", "iter_noise_batches", "noise_accuracy"]

NOISE_KEYS = ("stds", "n_samples", "seed")


def _check_stds(stds: Sequence[float], what: str = "stds", error: type[Exception] = RobustnessInputError
                ) -> np.ndarray:
    """``stds`` as a (k,) float64 array, k >= 1, every entry finite and >= 0; else ``error`` naming ``what``."""
    try:
        arr = None if isinstance(stds, (str, bytes, Mapping)) else np.asarray(stds, dtype=np.float64)
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.ndim != 1 or arr.size == 0:
        raise error(f"{what}={stds!r} must be a non-empty list of noise stds. Fix: e.g. [0.0, 0.1, 0.2]")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise error(f"{what}: noise stds must be finite and >= 0, got {arr.tolist()}")
    return arr


def resolve_noise_config(params: Mapping) -> dict:
    """The complete, checked noise configuration: {'stds': [float], 'n_samples': int | None, 'seed': int}.

    Defaults: n_samples None (every test sample), seed 0; 'stds' is required. Unknown keys are an error.
    Plain Python types, idempotent (resolving a resolved config returns it unchanged).
    Raises RobustnessConfigError (a ``pipeline.errors.ConfigError``) naming the field and the fix.
    """
    if not isinstance(params, Mapping):
        raise RobustnessConfigError(f"noise config must be a dict with keys {list(NOISE_KEYS)}, "
                                    f"got {type(params).__name__}")
    check_keys(params, NOISE_KEYS, "noise config", error=RobustnessConfigError)
    if "stds" not in params:
        raise RobustnessConfigError("noise config has no 'stds'. Fix: add the noise levels, e.g. "
                                    "{'stds': [0.0, 0.1, 0.2]}")
    return {
        "stds": [float(s) for s in _check_stds(params["stds"], "noise config stds", RobustnessConfigError)],
        "n_samples": resolve_n_samples(params.get("n_samples"), "noise config"),
        "seed": resolve_seed(params.get("seed", 0), "noise config"),
    }


def iter_noise_batches(
    x: np.ndarray, stds: Sequence[float], seed: int, batch_size: int = 256
) -> Iterator[tuple[slice, np.ndarray]]:
    """Yield (rows, noisy) batches: noisy (len(stds), B, 1, H, W) float32 = clip(x[rows] + std * z, 0, 1).

    z is one standard-normal draw per image, from ``np.random.default_rng(seed)`` consumed in image order,
    so the noise of image i does not depend on ``batch_size`` (the Generator's stream is the same whether
    drawn at once or in chunks; the tests check this).
    """
    stds = _check_stds(stds)
    batch_size = check_batch_size(batch_size)
    rng = np.random.default_rng(seed)
    s = stds.astype(np.float32)[:, None, None, None, None]
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size]
        z = rng.standard_normal(size=xb.shape, dtype=np.float32)
        noisy = np.clip(xb[None] + s * z[None], 0.0, 1.0)
        yield slice(start, start + len(xb)), noisy


def noise_accuracy(
    model: torch.nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    stds: Sequence[float],
    seed: int,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Classification accuracy under additive Gaussian noise of each std.

    Args:
        model: torch classifier, (B, 1, H, W) in [0, 1] -> logits; set to eval mode here.
        x: (N, 1, H, W) float images in [0, 1].
        y: (N,) integer labels.
        stds: noise standard deviations, in pixel units of the [0, 1] range (e.g. 0.0 ... 0.1).
        seed: seeds the noise; the same (x, stds, seed) gives the same noisy images for every model.
        batch_size: images per forward pass (the noise does not depend on it).
        device: where to run (None: the model's device).
    Returns:
        (len(stds),) float64 accuracies in [0, 1].
    """
    x, y = check_images(x, y)
    stds = _check_stds(stds)
    model.eval()
    dev = resolve_device(device, model)
    correct = np.zeros(len(stds), dtype=np.int64)
    with torch.no_grad():
        for rows, noisy in iter_noise_batches(x, stds, seed, batch_size):
            flat = noisy.reshape((-1,) + x.shape[1:])  # (len(stds) * B, 1, H, W)
            pred = predict_labels(model, flat, batch_size=batch_size, device=dev)
            correct += (pred.reshape(len(stds), -1) == y[rows][None]).sum(axis=1)
    return correct / len(x)
