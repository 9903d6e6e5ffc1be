"""Query counting (Fig 5): a model wrapper that counts the samples it is evaluated on.

One query = one model evaluation of one sample (a forward pass, with its backward pass when the attack took a
gradient; ``grad_queries`` counts those), so the reported queries are measured, not estimated.
"""

from __future__ import annotations

import torch

__all__ = ["QueryCounter"]


class QueryCounter(torch.nn.Module):
    """Wraps a model (B, 1, H, W) -> logits (B, n_classes) and counts the samples it is evaluated on."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.queries = 0
        self.grad_queries = 0

    def reset(self) -> None:
        self.queries = self.grad_queries = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.queries += x.shape[0]
        if x.requires_grad:
            self.grad_queries += x.shape[0]
        return self.model(x)
