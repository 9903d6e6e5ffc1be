"""Re-verification of candidate adversarials: clipped, classified with a logit margin, measured here in float64.

Foolbox's output is never trusted: a candidate counts only if the model, evaluated here, misclassifies it by
a margin, and its distance is computed here from the checked image.
"""

from __future__ import annotations

import numpy as np
import torch

from ..norms import L0_TOLERANCE, perturbation_norm

__all__ = ["PUSH_FACTORS", "logit_slack", "verify"]

PUSH_FACTORS = (1e-4, 1e-3, 1e-2, 3e-2)  # outward scalings tried on borderline candidates, in order


def logit_slack(logits: torch.Tensor, y: torch.Tensor, margin: float) -> torch.Tensor:
    """(B,) float64 true logit - best other logit + required margin: < 0 exactly where ``verify`` accepts.

    The attacks written here (``apgd``, ``square``, the ray search of ``search``) judge their iterates with
    this, so what they call adversarial is what ``verify`` will accept (required = margin * max(1, max |logit|)).
    """
    logits = logits.detach().double()
    true = logits.gather(1, y[:, None])[:, 0]
    other = logits.scatter(1, y[:, None], -np.inf).max(dim=1).values
    return true - other + margin * logits.abs().max(dim=1).values.clamp(min=1.0)


def _margins(model: torch.nn.Module, adv: torch.Tensor, y: torch.Tensor, margin: float
             ) -> tuple[np.ndarray, np.ndarray]:
    """(other - true logit (B,), required margin (B,)) of images adv (B, 1, H, W).

    required = margin * max(1, max |logit|).
    """
    logits = model(adv).double()
    true = logits.gather(1, y[:, None])[:, 0]
    other = logits.scatter(1, y[:, None], -np.inf).max(dim=1).values
    need = margin * logits.abs().max(dim=1).values.clamp(min=1.0)
    return (other - true).cpu().numpy(), need.cpu().numpy()


@torch.no_grad()
def verify(model: torch.nn.Module, x0: torch.Tensor, y: torch.Tensor, adv: torch.Tensor,
           norm: str, margin: float) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Re-check candidate adversarials of clean images x0 (B, 1, H, W) with labels y (B,).

    Args:
        adv: (B, 1, H, W) candidates; rows with a non-finite value mean "no candidate".
        norm: the norm distances are measured in; margin: the relative logit margin (see below).
    Returns:
        (checked candidates (B, 1, H, W), distances (B,) float64, is_adversarial (B,) bool).

    Clips to [0, 1] (for L0, also snaps changes <= L0_TOLERANCE back to the clean pixel, so the checked
    image is the one whose L0 is reported), classifies, and measures the distance here, in float64.

    A candidate counts only if the best other logit beats the true one by ``margin`` (relative to the
    logit scale). Attacks such as Brendel-Bethge and FMN stop right on the decision boundary, where the
    label of a float32 forward pass depends on the batch it is evaluated in (seen here: a point adversarial
    in its batch of 8 and not alone); the margin makes the verdict hold in any batch. A borderline
    candidate (|logit gap| below the margin) is pushed outwards, x0 + (1 + f) * (adv - x0) for f in
    PUSH_FACTORS, and the first push that clears the margin is kept, its own (larger) distance reported.
    """
    finite = torch.isfinite(adv.reshape(len(adv), -1)).all(dim=1).cpu().numpy()
    adv = torch.where(torch.isfinite(adv), adv, x0).clamp(0.0, 1.0)
    if norm == "L0":
        adv = torch.where((adv - x0).abs() <= L0_TOLERANCE, x0, adv)
    gap, need = _margins(model, adv, y, margin)
    ok = finite & (gap > need)
    borderline = np.flatnonzero(finite & ~ok & (gap > -need))
    for f in PUSH_FACTORS:
        if borderline.size == 0:
            break
        bt = torch.from_numpy(borderline).to(adv.device)
        pushed = (x0[bt] + (1.0 + f) * (adv[bt] - x0[bt])).clamp(0.0, 1.0)  # keeps the L0 support
        g, n = _margins(model, pushed, y[bt], margin)
        good = g > n
        gt = torch.from_numpy(good).to(adv.device)
        adv[bt[gt]] = pushed[gt]
        ok[borderline[good]] = True
        borderline = borderline[~good]
    dist = perturbation_norm((adv.double() - x0.double()).cpu().numpy(), norm)
    return adv, dist, ok
