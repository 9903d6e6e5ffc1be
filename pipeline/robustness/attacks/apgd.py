"""Auto-PGD (APGD, Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks"), Linf and L2, with the cross-entropy or the DLR loss, one radius per sample.

Written here in torch because Foolbox 3.3.4 has no APGD (it arrived with AutoAttack, outside Foolbox). It follows
the reference implementation (autoattack/autopgd_base.py): step size 2 * eps, momentum 0.75, checkpoints at
22%, then shrinking by 3% of the steps down to 6%; at a checkpoint a sample's step is halved and it restarts
from its best point when fewer than rho = 75% of the steps since the last checkpoint raised its loss, or when
its step was not halved last time and its best loss did not improve.

Differences, for minimal perturbations: every iterate is judged as ``verify`` judges it (``fixed.Tracker``),
so the smallest-norm adversarial iterate is kept, not only the last; the run may be warm-started (the epsilon
search starts each round from the previous round's strongest point, projected into the new ball) instead of
a random start; the radius is a tensor, one per sample.

Losses: 'ce' cross-entropy; 'dlr' the difference of logits ratio -(z_y - max_{i != y} z_i) / (z_1 - z_3),
z sorted descending, invariant to the logits' scale and shift (needs at least 3 classes).

Targets (``targets`` = k > 0): an untargeted loss climbs towards whichever wrong class leads at its start and
stays there, which need not be the class of the nearest boundary (on a linear model it misses the exact
minimum by up to 15% that way). With k > 0 each sample is attacked towards each of its k most promising
classes (one batch): ranked by the linearised distance to their boundary at the clean image,
(z_y - z_j) / ||grad(z_j - z_y)||_dual (DeepFool's estimate, exact for a linear model; one forward and
n_classes - 1 backward passes per sample, counted as queries), with the targeted losses: 'ce' the log-
probability of the target, 'dlr' -(z_y - z_t) / (z_1 - (z_3 + z_4) / 2) (AutoAttack's, 4 classes or more).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .fixed import FixedRun, Tracker, lp_norms, per_sample, project, start_or_random

__all__ = ["APGD", "LOSSES", "dlr_loss", "dlr_targeted_loss", "rank_targets"]

LOSSES = ("ce", "dlr")


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B,) DLR loss of Croce & Hein 2020 (higher = closer to misclassified)."""
    if logits.shape[1] < 3:
        raise ValueError(f"the DLR loss needs at least 3 classes, the model has {logits.shape[1]}; use loss='ce'")
    z, order = logits.sort(dim=1)
    true = logits.gather(1, y[:, None])[:, 0]
    other = torch.where(order[:, -1] == y, z[:, -2], z[:, -1])
    return -(true - other) / (z[:, -1] - z[:, -3] + 1e-12)


def dlr_targeted_loss(logits: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(B,) targeted DLR loss of Croce & Hein 2020 towards classes t (B,) (higher = closer to class t)."""
    if logits.shape[1] < 4:
        raise ValueError(f"the targeted DLR loss needs at least 4 classes, the model has {logits.shape[1]}")
    z, _ = logits.sort(dim=1)
    true, target = logits.gather(1, y[:, None])[:, 0], logits.gather(1, t[:, None])[:, 0]
    return -(true - target) / (z[:, -1] - 0.5 * (z[:, -3] + z[:, -4]) + 1e-12)


def rank_targets(model: torch.nn.Module, x0: torch.Tensor, y: torch.Tensor, norm: str, k: int) -> torch.Tensor:
    """(B, k) classes of the k nearest linearised boundaries at x0 (see the module); the query counter of
    ``model`` (if it is one) is charged one gradient query per sample and class."""
    x = x0.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        n_classes = logits.shape[1]
        dist = torch.full((len(x0), n_classes), float("inf"), dtype=torch.float64, device=x0.device)
        true = logits.gather(1, y[:, None])[:, 0]
        for j in range(n_classes):
            f = logits[:, j] - true
            (g,) = torch.autograd.grad(f.sum(), x, retain_graph=j < n_classes - 1)
            dual = g.reshape(len(x0), -1).abs().sum(dim=1) if norm == "Linf" else g.reshape(len(x0), -1).norm(dim=1)
            dist[:, j] = (-f.detach()).double().clamp(min=0) / dual.double().clamp(min=1e-12)
    dist[torch.arange(len(x0)), y] = float("inf")
    if hasattr(model, "queries"):  # one forward above; the other classes' backward passes cost as much
        model.queries += (n_classes - 2) * len(x0)
        model.grad_queries += (n_classes - 2) * len(x0)
    return dist.argsort(dim=1)[:, :min(k, n_classes - 1)]


class APGD:
    """Auto-PGD at one radius per sample; the kind ``pgd.EpsilonSearchAttack`` makes it minimal.

    Args (the hyper-parameters a sweep may set):
        steps: iterations per run (each one gradient; plus one at the start).
        loss: 'ce' or 'dlr'.
        rho: the share of loss-raising steps below which a checkpoint halves the step (0.75 in the paper).
        momentum: weight of the new step against the last one (0.75 in the paper).
    """

    def __init__(self, *, steps: int = 50, loss: str = "ce", rho: float = 0.75, momentum: float = 0.75,
                 targets: int = 0):
        self.steps, self.loss, self.rho, self.momentum, self.targets = steps, loss, rho, momentum, targets

    @staticmethod
    def check(params: dict) -> None:
        """ValueError for a setting that cannot run (the resolver turns it into a config error)."""
        if params.get("loss", "ce") not in LOSSES:
            raise ValueError(f"loss={params['loss']!r}: choose from {list(LOSSES)}")
        if params.get("steps", 1) < 1:
            raise ValueError(f"steps={params['steps']!r} must be >= 1")
        if not 0 < params.get("rho", 0.75) <= 1 or not 0 < params.get("momentum", 0.75) <= 1:
            raise ValueError("rho and momentum must lie in (0, 1]")
        if params.get("targets", 0) < 0:
            raise ValueError(f"targets={params['targets']!r} must be >= 0 (0: untargeted)")

    def _loss_grad(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None):
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(x)
            if t is None:
                loss = F.cross_entropy(logits, y, reduction="none") if self.loss == "ce" else dlr_loss(logits, y)
            elif self.loss == "ce":
                loss = -F.cross_entropy(logits, t, reduction="none")
            else:
                loss = dlr_targeted_loss(logits, y, t)
            (grad,) = torch.autograd.grad(loss.sum(), x)
        return loss.detach(), grad.detach(), logits.detach()

    def prepare(self, model: torch.nn.Module, x0: torch.Tensor, y: torch.Tensor, norm: str) -> torch.Tensor | None:
        """Per-sample state for every round of a search: the (B, k) target classes, or None (untargeted)."""
        return rank_targets(model, x0, y, norm, self.targets) if self.targets > 0 else None

    @torch.no_grad()
    def run_fixed(self, model: torch.nn.Module, x0: torch.Tensor, y: torch.Tensor, eps: torch.Tensor, norm: str,
                  margin: float, start: torch.Tensor | None = None, aux: torch.Tensor | None = None,
                  restart: int = 0) -> FixedRun:
        """APGD on clean images x0 (B, 1, H, W), labels y (B,), radii eps (B,) in ``norm`` ('Linf' | 'L2').

        aux: (B, k) target classes (``prepare``): each sample is attacked towards each, in one batch, and the
        best of the k runs is returned per sample. restart: the search's confirmation runs (1, 2, ...) use the
        other loss on odd restarts (CE and DLR fail on different samples: on a demo ResNet, one sample that
        CE flipped from 8 of 8 random starts, DLR flipped from none), the configured loss on even ones.
        """
        if restart % 2 == 1:
            other = APGD(steps=self.steps, loss="dlr" if self.loss == "ce" else "ce", rho=self.rho,
                         momentum=self.momentum, targets=self.targets)
            return other.run_fixed(model, x0, y, eps, norm, margin, start, aux)
        if aux is None:
            return self._run(model, x0, y, eps, norm, margin, start, None)
        b, k = aux.shape
        rep = lambda v: v.repeat_interleave(k, dim=0)  # noqa: E731
        run = self._run(model, rep(x0), rep(y), rep(eps), norm, margin, None if start is None else rep(start),
                        aux.reshape(-1))
        slack = run.slack.reshape(b, k)
        pick = slack.argmin(dim=1)
        rows = torch.arange(b, device=x0.device) * k
        norms = lp_norms(torch.nan_to_num(run.adv, nan=float("inf")).double() - rep(x0).double(), norm)
        norms = torch.where(torch.isfinite(norms), norms, torch.full_like(norms, float("inf"))).reshape(b, k)
        small = norms.argmin(dim=1)
        return FixedRun(adv=run.adv[rows + small], strong=run.strong[rows + pick], slack=slack.min(dim=1).values)

    def _run(self, model, x0, y, eps, norm, margin, start, t) -> FixedRun:
        n_iter = self.steps
        k = max(int(0.22 * n_iter), 1)
        k_min, k_decr = max(int(0.06 * n_iter), 1), max(int(0.03 * n_iter), 1)
        tracker = Tracker(x0, y, norm, margin)
        x = start_or_random(x0, eps, norm, start)
        loss, grad, logits = self._loss_grad(model, x, y, t)
        tracker.see(x, logits)
        x_best, grad_best, loss_best = x.clone(), grad.clone(), loss.clone()
        step = 2.0 * eps.to(x0.dtype)
        x_old = x.clone()
        since, raised = 0, torch.zeros(len(x0), device=x0.device)
        best_at_check = loss_best.clone()
        halved_last = torch.ones(len(x0), dtype=torch.bool, device=x0.device)
        prev_loss = loss.clone()
        for i in range(n_iter):
            last_move = x - x_old
            x_old = x
            a = self.momentum if i > 0 else 1.0
            if norm == "Linf":
                direction = grad.sign()
            else:
                direction = grad / per_sample(lp_norms(grad, "L2").clamp(min=1e-12), grad)
            z = project(x + per_sample(step, x) * direction, x0, eps, norm)
            x = project(x + a * (z - x) + (1 - a) * last_move, x0, eps, norm)
            loss, grad, logits = self._loss_grad(model, x, y, t)
            tracker.see(x, logits)
            raised += (loss > prev_loss).to(raised.dtype)
            prev_loss = loss
            better = loss > loss_best
            x_best[better], grad_best[better], loss_best[better] = x[better], grad[better], loss[better]
            since += 1
            if since == k:
                oscillating = raised <= k * self.rho
                stuck = ~halved_last & (best_at_check >= loss_best)
                halve = oscillating | stuck
                halved_last, best_at_check = halve, loss_best.clone()
                step = torch.where(halve, step / 2, step)
                x[halve], grad[halve] = x_best[halve], grad_best[halve]
                k, since = max(k - k_decr, k_min), 0
                raised = torch.zeros_like(raised)
        return tracker.result()
