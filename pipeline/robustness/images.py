"""Image batches in, labels out: the validation of test images and the batched prediction every evaluation uses.

Images are grayscale float32 arrays of shape (N, 1, H, W) with pixels in [0, 1]; a model is a torch
``nn.Module`` mapping such a batch to logits (N, n_classes).
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.checks import positive_int
from pipeline.devices import resolve_device

from .errors import RobustnessInputError

__all__ = ["check_images", "check_batch_size", "predict_labels"]


def check_images(
    x: np.ndarray, y: np.ndarray | None = None, *, name: str = "x"
) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate a batch of grayscale images and (optionally) its labels.

    Args:
        x: (N, 1, H, W) images, pixels in [0, 1]; any real dtype, returned as float32.
        y: (N,) integer class labels, or None.
    Returns:
        (x (N, 1, H, W) float32 C-contiguous, y (N,) int64 or None).
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


def check_batch_size(batch_size) -> int:
    """``batch_size`` as a positive int, else RobustnessInputError."""
    return positive_int(batch_size, "batch_size", error=RobustnessInputError)


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
        device: where to run (None: the model's device, ``pipeline.devices.resolve_device``).
    Returns:
        (N,) int64 predicted labels.
    """
    batch_size = check_batch_size(batch_size)
    dev = resolve_device(device, model)
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
