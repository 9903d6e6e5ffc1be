"""Square attack, Linf (Andriushchenko et al. 2020): random search with square-shaped updates, no gradients.

The gradient-masking check: a model whose gradients mislead the gradient attacks (masked, shattered or
obfuscated gradients) is still fooled by a random search that only reads the logits. If Square finds smaller
perturbations than the gradient attacks on a noticeable share of samples, the gradient attacks' scores are
not to be trusted (``scores.masking_check`` counts them). Written here in torch (Foolbox 3.3.4 has no Square
attack); made minimal by the per-sample epsilon search (``search``).

Follows the reference implementation (square.py of Andriushchenko et al.): start from vertical stripes of
+-eps; each query changes one random square window of side sqrt(p * pixels) to +-eps per channel and keeps
it when the margin loss (true logit - best other) falls; p follows the paper's schedule from p_init (halved
at 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 of 10000 iterations, rescaled to ``steps``). A sample
stops being queried once it is adversarial (judged as ``verify`` judges it).
"""

from __future__ import annotations

import torch

from .fixed import FixedRun, Tracker, per_sample, project, start_or_random

__all__ = ["SquareLinf"]

_SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128), (8000, 256),
             (10000, 512))


def _p_at(p_init: float, i: int, n_iter: int) -> float:
    it = int(i / max(n_iter, 1) * 10000)
    for bound, div in _SCHEDULE:
        if it <= bound:
            return p_init / div
    return p_init / 512


class SquareLinf:
    """Square attack at one Linf radius per sample (``run_fixed``); one forward query per step and sample.

    Args: steps (queries per run and sample, after the first), p_init (the first share of pixels changed).
    """

    def __init__(self, *, steps: int = 300, p_init: float = 0.05):
        self.steps, self.p_init = steps, p_init

    @staticmethod
    def check(params: dict) -> None:
        if params.get("steps", 1) < 1:
            raise ValueError(f"steps={params['steps']!r} must be >= 1")
        if not 0 < params.get("p_init", 0.05) <= 1:
            raise ValueError(f"p_init={params['p_init']!r} must lie in (0, 1]")

    @torch.no_grad()
    def run_fixed(self, model: torch.nn.Module, x0: torch.Tensor, y: torch.Tensor, eps: torch.Tensor, norm: str,
                  margin: float, start: torch.Tensor | None = None) -> FixedRun:
        if norm != "Linf":
            raise ValueError("SquareLinf runs in the Linf norm only")
        b, c, h, w = x0.shape
        e = per_sample(eps, x0)
        tracker = Tracker(x0, y, norm, margin)
        if start is not None:
            x_best = start_or_random(x0, eps, norm, start)
        else:  # vertical stripes of +-eps
            signs = torch.randint(0, 2, (b, c, 1, w), device=x0.device).to(x0.dtype) * 2 - 1
            x_best = (x0 + e * signs).clamp(0.0, 1.0)
        loss = tracker.see(x_best, model(x_best))
        for i in range(self.steps):
            active = torch.nonzero(loss >= 0).flatten()  # not yet adversarial
            if active.numel() == 0:
                break
            xa, x0a, ea = x_best[active], x0[active], e[active]
            p = _p_at(self.p_init, i, self.steps)
            s = max(int(round((p * h * w) ** 0.5)), 1)
            s = min(s, h - 1, w - 1) if min(h, w) > 1 else 1
            top = int(torch.randint(0, h - s + 1, (1,)))
            left = int(torch.randint(0, w - s + 1, (1,)))
            delta = xa - x0a
            window = torch.randint(0, 2, (len(active), c, 1, 1), device=x0.device).to(x0.dtype) * 2 - 1
            before = xa[:, :, top:top + s, left:left + s]
            same = ((x0a[:, :, top:top + s, left:left + s] + window * ea).clamp(0.0, 1.0) - before).abs().reshape(
                len(active), -1).amax(dim=1) < 1e-7
            window[same] = -window[same]  # a window that would change nothing: the other sign (as the reference)
            delta[:, :, top:top + s, left:left + s] = window * ea
            x_new = project(x0a + delta, x0a, eps[active], norm)
            new_loss = tracker.see(x_new, model(x_new), active)
            better = new_loss < loss[active]
            x_best[active[better]] = x_new[better]
            loss[active[better]] = new_loss[better]
        return tracker.result()
