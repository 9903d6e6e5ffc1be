"""What a fixed-epsilon attack hands the epsilon search: its best iterates, judged as ``verify`` judges them.

A fixed-epsilon attack (``pgd``'s Foolbox PGD, ``apgd``, ``square``) runs at one radius per sample and, with
``Tracker``, watches every iterate it evaluates anyway (the logits of its gradient or query step), so nothing
it reached mid-run is lost. It returns a ``FixedRun``:
    adv     the smallest-norm iterate that was adversarial (NaN rows: none was)
    strong  the iterate with the lowest slack (the most adversarial one; the start of the next round and of
            the ray search)
    slack   that lowest slack, true - best other logit + required margin (< 0: adversarial), see
            ``verify.logit_slack``

Helpers for per-sample radii: ``project`` onto the eps ball (one radius per sample, then the [0, 1] box) and
``lp_norms``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .verify import logit_slack

__all__ = ["FixedRun", "Tracker", "lp_norms", "project", "per_sample"]


@dataclass
class FixedRun:
    adv: torch.Tensor     # (B, 1, H, W), NaN rows: no adversarial iterate
    strong: torch.Tensor  # (B, 1, H, W)
    slack: torch.Tensor   # (B,) float64


def per_sample(eps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """eps (B,) reshaped to broadcast over images like ``like`` (B, 1, H, W), in its dtype."""
    return eps.to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def lp_norms(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """(B,) norms of the perturbations delta (B, ...), 'Linf' or 'L2' (others: L1)."""
    d = delta.reshape(len(delta), -1)
    if norm == "Linf":
        return d.abs().amax(dim=1)
    if norm == "L2":
        return d.norm(dim=1)
    return d.abs().sum(dim=1)


def project(x: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor, norm: str) -> torch.Tensor:
    """x moved into the ``norm`` ball of radius eps (B,) around x0, then clipped to the [0, 1] box.

    Linf: clip per pixel (exact); L2: scale the perturbation down to eps (the ball's projection) then clip to
    the box (which only shrinks it, so the result stays in the ball).
    """
    e = per_sample(eps, x)
    d = x - x0
    if norm == "Linf":
        d = torch.maximum(torch.minimum(d, e), -e)
    else:
        n = per_sample(lp_norms(d, norm).clamp(min=1e-12), x)
        d = d * torch.clamp(e / n, max=1.0)
    return (x0 + d).clamp(0.0, 1.0)


class Tracker:
    """Per sample: the smallest-norm adversarial iterate seen and the lowest-slack iterate (see the module)."""

    def __init__(self, x0: torch.Tensor, y: torch.Tensor, norm: str, margin: float):
        self.x0, self.y, self.norm, self.margin = x0, y, norm, margin
        self.adv = torch.full_like(x0, float("nan"))
        self.adv_norm = torch.full((len(x0),), float("inf"), dtype=torch.float64, device=x0.device)
        self.strong = x0.clone()
        self.slack = torch.full((len(x0),), float("inf"), dtype=torch.float64, device=x0.device)

    @torch.no_grad()
    def see(self, x: torch.Tensor, logits: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Record iterates x (k, ...) with their logits (k, C), of the samples ``rows`` (k,) (None: all).

        Returns their slack (k,) float64.
        """
        rows = torch.arange(len(self.x0), device=x.device) if rows is None else rows
        x = x.detach()
        s = logit_slack(logits, self.y[rows], self.margin)
        lower = s < self.slack[rows]
        self.slack[rows[lower]] = s[lower]
        self.strong[rows[lower]] = x[lower]
        n = lp_norms(x.double() - self.x0[rows].double(), self.norm)
        smaller = (s < 0) & (n < self.adv_norm[rows])
        self.adv_norm[rows[smaller]] = n[smaller]
        self.adv[rows[smaller]] = x[smaller]
        return s

    def result(self) -> FixedRun:
        return FixedRun(adv=self.adv, strong=self.strong, slack=self.slack)


def start_or_random(x0: torch.Tensor, eps: torch.Tensor, norm: str, start: torch.Tensor | None) -> torch.Tensor:
    """The warm start projected into the ball, else a uniform point of the Linf ball / a random L2 direction."""
    if start is not None:
        ok = torch.isfinite(start.reshape(len(start), -1)).all(dim=1)
        if bool(ok.all()):
            return project(start, x0, eps, norm)
        rand = start_or_random(x0, eps, norm, None)
        return torch.where(per_sample(ok, x0).bool(), project(torch.where(torch.isfinite(start), start, x0), x0,
                                                              eps, norm), rand)
    if norm == "Linf":
        d = (2 * torch.rand_like(x0) - 1) * per_sample(eps, x0)
    else:
        r = torch.randn_like(x0)
        r = r / per_sample(lp_norms(r, "L2").clamp(min=1e-12), x0)
        d = r * per_sample(eps, x0) * torch.rand(len(x0), device=x0.device, dtype=x0.dtype).reshape(
            -1, *([1] * (x0.ndim - 1)))
    return (x0 + d).clamp(0.0, 1.0)


def as_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()
