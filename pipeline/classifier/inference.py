"""Using a trained classifier: rebuild it from its weights, its logits in eval mode, its accuracy."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn as nn

from pipeline.classifier.resnet import ResNet, build_classifier


def load_classifier(arch: str, n_classes: int, state_dict: Mapping) -> ResNet:
    """Rebuild a trained classifier (CPU, eval mode) from its state_dict."""
    model = build_classifier(arch, n_classes)
    model.load_state_dict(state_dict)
    return model.eval()


@torch.no_grad()
def logits_of(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Eval-mode logits (N, n_classes) of a tensor already on the model's device; restores the mode after."""
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(x[k:k + batch_size]) for k in range(0, x.shape[0], batch_size)])
    finally:
        model.train(was_training)


def predict_logits(model: nn.Module, x, batch_size: int = 500) -> np.ndarray:
    """Logits (N, n_classes) float32 of images x (N, 1, H, W) in [0, 1] (numpy or tensor), in eval mode."""
    dev = next(model.parameters()).device
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32) if not torch.is_tensor(x) else x, dtype=torch.float32)
    if xt.ndim != 4:
        raise ValueError(f"x must be (N, C, H, W), got shape {tuple(xt.shape)}")
    if xt.shape[0] == 0:
        return np.zeros((0, model.n_classes), np.float32)
    return logits_of(model, xt.to(dev), batch_size).cpu().numpy().astype(np.float32)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    """Fraction of x (on the model's device) classified as y."""
    if x.shape[0] == 0:
        return float("nan")
    return (logits_of(model, x, batch_size).argmax(1) == y).float().mean().item()
