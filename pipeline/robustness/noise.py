"""Accuracy under additive Gaussian pixel noise (Fig 4 of Li et al. 2019).

Images are grayscale float32 arrays of shape (N, 1, H, W) with pixels in [0, 1]; a model is a torch
``nn.Module`` mapping such a batch to logits (N, n_classes).

Fair comparison between models: the noise is drawn from a numpy Generator seeded by ``seed`` alone,
never from torch or from the model, so every model evaluated with the same (x, stds, seed) sees exactly
the same noisy images. One standard-normal draw z (N, 1, H, W) is shared by all stds (common random
numbers): the noisy image at std s is clip(x + s * z, 0, 1). The accuracy curve over s is then
a function of s alone, not of s plus a fresh noise draw per level.

This module also holds the two helpers the other robustness modules share: ``check_images`` (input
validation) and ``predict_labels`` (batched argmax of a model).
"""

from __future__ import annotations

from pipeline.errors import NeuralRegError

from typing import Iterator, Sequence

import numpy as np
import torch

__all__ = [
    "RobustnessInputError",
    "check_images",
    "resolve_device",
    "predict_labels",
    "iter_noise_batches",
    "noise_accuracy",
]


class RobustnessInputError(NeuralRegError):
    """Bad input to a robustness evaluation (wrong shape, range, dtype or configuration)."""


def check_images(
    x: np.ndarray, y: np.ndarray | None = None, *, name: str = "x"
) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate a batch of grayscale images and (optionally) its labels.

    Args:
        x: (N, 1, H, W) images, pixels in [0, 1]; any real dtype, returned as float32.
        y: (N,) integer class labels, or None.
    Returns:
        (x as float32 C-contiguous, y as int64 or None).
    Raises:
        RobustnessInputError naming the field and the fix.
    """
    x = np.asarray(x)
    if x.ndim != 4 or x.shape[1] != 1:
        raise RobustnessInputError(
            f"{name}: expected grayscale images of shape (N, 1, H, W), got {x.shape}; "
            "add the channel axis with x[:, None] if you have (N, H, W)"
        )
    if x.shape[0] == 0:
        raise RobustnessInputError(f"{name}: no images (N = 0)")
    if not np.issubdtype(x.dtype, np.floating):
        raise RobustnessInputError(
            f"{name}: expected float pixels in [0, 1], got dtype {x.dtype}; divide uint8 images by 255"
        )
    if not np.all(np.isfinite(x)) or x.min() < 0.0 or x.max() > 1.0:
        raise RobustnessInputError(
            f"{name}: pixels must be finite and in [0, 1] (got min {np.nanmin(x):.4g}, max {np.nanmax(x):.4g}); "
            "rescale the images to [0, 1]"
        )
    x = np.ascontiguousarray(x, dtype=np.float32)
    if y is None:
        return x, None
    y = np.asarray(y)
    if y.shape != (x.shape[0],):
        raise RobustnessInputError(f"y: expected labels of shape ({x.shape[0]},) to match {name}, got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise RobustnessInputError(f"y: expected integer class labels, got dtype {y.dtype}")
    if y.min() < 0:
        raise RobustnessInputError("y: class labels must be >= 0")
    return x, y.astype(np.int64)


def resolve_device(model: torch.nn.Module, device: str | torch.device | None) -> torch.device:
    """The device to run on: ``device`` if given, else that of the model's first parameter, else CPU."""
    if device is not None:
        return torch.device(device)
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _check_batch_size(batch_size: int) -> int:
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise RobustnessInputError(f"batch_size: expected a positive integer, got {batch_size!r}")
    return int(batch_size)


@torch.no_grad()
def predict_labels(
    model: torch.nn.Module,
    x: np.ndarray,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Predicted class (argmax of the logits) of every image.

    Args:
        model: maps (B, 1, H, W) float32 to logits (B, n_classes); put in eval mode by the caller.
        x: (N, 1, H, W) float32 images in [0, 1] (not re-validated here: callers validate once).
        batch_size: images per forward pass.
    Returns:
        (N,) int64 predicted labels.
    """
    batch_size = _check_batch_size(batch_size)
    dev = resolve_device(model, device)
    out = np.empty(len(x), dtype=np.int64)
    for start in range(0, len(x), batch_size):
        xb = torch.from_numpy(np.ascontiguousarray(x[start:start + batch_size], dtype=np.float32)).to(dev)
        logits = model(xb)
        if logits.ndim != 2 or logits.shape[0] != xb.shape[0]:
            raise RobustnessInputError(
                f"model: expected logits of shape ({xb.shape[0]}, n_classes), got {tuple(logits.shape)}"
            )
        out[start:start + len(xb)] = logits.argmax(dim=1).cpu().numpy()
    return out


def _check_stds(stds: Sequence[float]) -> np.ndarray:
    stds = np.asarray(stds, dtype=np.float64)
    if stds.ndim != 1 or stds.size == 0:
        raise RobustnessInputError(f"stds: expected a non-empty 1-D sequence of noise stds, got shape {stds.shape}")
    if not np.all(np.isfinite(stds)) or np.any(stds < 0):
        raise RobustnessInputError(f"stds: noise stds must be finite and >= 0, got {stds.tolist()}")
    return stds


def iter_noise_batches(
    x: np.ndarray, stds: Sequence[float], seed: int, batch_size: int = 256
) -> Iterator[tuple[slice, np.ndarray]]:
    """Yield (rows, noisy) batches: noisy (len(stds), B, 1, H, W) float32 = clip(x[rows] + std * z, 0, 1).

    z is one standard-normal draw per image, from ``np.random.default_rng(seed)`` consumed in image order,
    so the noise of image i does not depend on ``batch_size`` (the Generator's stream is the same whether
    drawn at once or in chunks; the tests check this).
    """
    stds = _check_stds(stds)
    batch_size = _check_batch_size(batch_size)
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
    Returns:
        (len(stds),) float64 accuracies in [0, 1].
    """
    x, y = check_images(x, y)
    stds = _check_stds(stds)
    model.eval()
    dev = resolve_device(model, device)
    correct = np.zeros(len(stds), dtype=np.int64)
    with torch.no_grad():
        for rows, noisy in iter_noise_batches(x, stds, seed, batch_size):
            flat = noisy.reshape((-1,) + x.shape[1:])  # (len(stds) * B, 1, H, W)
            pred = predict_labels(model, flat, batch_size=batch_size, device=dev)
            correct += (pred.reshape(len(stds), -1) == y[rows][None]).sum(axis=1)
    return correct / len(x)
