"""PGD adversarial training (Madry et al. 2018): the positive control that proves the robustness tables can see a gain.

A train configuration's ``adversarial`` key is None (ordinary training) or a dict:

- ``norm``: 'Linf' or 'L2', the threat model;
- ``eps``: the radius of the ball the training perturbations live in, in pixel units of the [0, 1] images;
- ``steps``: PGD steps per training batch (each one forward and backward pass of the network);
- ``rel_stepsize``: the step size as a fraction of eps (steps x rel_stepsize >= 1 so a step can reach the edge);
- ``fraction``: the share of each batch replaced by its adversarial version (1.0 is Madry's recipe; 0.5 keeps
  half the batch clean, the common trade-off that costs less clean accuracy).

Each step starts from a uniformly random point of the ball (Linf) or of the sphere's interior (L2), ascends the
cross-entropy with signed (Linf) or normalised (L2) gradients, projects back onto the ball and into [0, 1]. The
perturbations are computed with the network in eval mode (batch-norm statistics are neither used from nor
written by the attack batch); training then proceeds on the perturbed batch as usual.

Written in torch rather than with Foolbox's attacks because it runs inside the training step: it needs the
caller's generator for the random start (so a run is reproducible and resumable from its checkpoint) and no
per-call model wrapping; Foolbox's PGD is what evaluates the result (pipeline.robustness.attacks).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.checks import check_keys, is_number, positive_int
from pipeline.errors import ConfigError

ADVERSARIAL_DEFAULTS = dict(norm="Linf", eps=0.1, steps=5, rel_stepsize=0.4, fraction=1.0)
NORMS = ("Linf", "L2")


def resolve_adversarial(config: Mapping | None, where: str = "train_config adversarial") -> dict | None:
    """The complete, checked adversarial-training settings (keys of ADVERSARIAL_DEFAULTS), or None (no training)."""
    if config is None:
        return None
    if not isinstance(config, Mapping):
        raise ConfigError(f"{where}={config!r} must be None or a dict of {sorted(ADVERSARIAL_DEFAULTS)}")
    check_keys(config, ADVERSARIAL_DEFAULTS, where)
    out = {**ADVERSARIAL_DEFAULTS, **config}
    if out["norm"] not in NORMS:
        raise ConfigError(f"{where} norm={out['norm']!r} must be one of {NORMS}")
    for key in ("eps", "rel_stepsize", "fraction"):
        if not is_number(out[key]) or out[key] <= 0:
            raise ConfigError(f"{where} {key}={out[key]!r} must be a number > 0")
        out[key] = float(out[key])
    if out["fraction"] > 1:
        raise ConfigError(f"{where} fraction={out['fraction']} must be in (0, 1]")
    out["steps"] = positive_int(out["steps"], f"{where} steps")
    if out["steps"] * out["rel_stepsize"] < 1:
        raise ConfigError(f"{where}: steps x rel_stepsize = {out['steps'] * out['rel_stepsize']:.2f} < 1 cannot "
                          "reach the edge of the eps ball. Fix: more steps or a larger rel_stepsize")
    return {key: out[key] for key in ADVERSARIAL_DEFAULTS}


def _flat_norm(v: torch.Tensor) -> torch.Tensor:
    """(B, 1, 1, 1) L2 norms of the (B, ...) tensor's rows, at least 1e-12."""
    return v.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (v.dim() - 1)))


def random_start(x: torch.Tensor, norm: str, eps: float, generator: torch.Generator) -> torch.Tensor:
    """(B, C, H, W) a uniformly random perturbation in the eps ball (L2: uniform in the ball's volume)."""
    shape = x.shape
    if norm == "Linf":
        u = torch.rand(shape, generator=generator).to(x.device)
        return (2 * u - 1) * eps
    g = torch.randn(shape, generator=generator).to(x.device)
    d = g[0].numel()
    r = torch.rand((shape[0],), generator=generator).to(x.device) ** (1.0 / d)
    return g / _flat_norm(g) * (eps * r).view(-1, 1, 1, 1)


def project(delta: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """delta projected onto the eps ball of the norm."""
    if norm == "Linf":
        return delta.clamp(-eps, eps)
    return delta * torch.clamp(eps / _flat_norm(delta), max=1.0)


def pgd_perturb(model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: Mapping,
                generator: torch.Generator) -> torch.Tensor:
    """(B, C, H, W) adversarial versions of images x (B, C, H, W) in [0, 1] with labels y (B,), by PGD.

    settings: resolved (:func:`resolve_adversarial`). The model is put in eval mode for the attack and restored;
    the returned images are detached, inside the ball around x and inside [0, 1].
    """
    norm, eps, steps = settings["norm"], settings["eps"], settings["steps"]
    alpha = settings["rel_stepsize"] * eps
    was_training = model.training
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:  # gradients w.r.t. the input only: leave the parameters' .grad untouched
        p.requires_grad_(False)
    try:
        delta = project(random_start(x, norm, eps, generator), norm, eps)
        delta = ((x + delta).clamp(0, 1) - x).detach()
        for _ in range(steps):
            delta.requires_grad_(True)
            loss = F.cross_entropy(model(x + delta), y)
            (grad,) = torch.autograd.grad(loss, delta)
            with torch.no_grad():
                step = grad.sign() if norm == "Linf" else grad / _flat_norm(grad)
                delta = project(delta + alpha * step, norm, eps)
                delta = (x + delta).clamp(0, 1) - x
        return (x + delta).detach()
    finally:
        for p in params:
            p.requires_grad_(True)
        model.train(was_training)


def adversarial_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: Mapping | None,
                      generator: torch.Generator) -> torch.Tensor:
    """The training batch: x with its first round(fraction * B) images replaced by their PGD adversarials."""
    if settings is None:
        return x
    k = int(round(settings["fraction"] * x.shape[0]))
    if k == 0:
        return x
    adv = pgd_perturb(model, x[:k], y[:k], settings, generator)
    return adv if k == x.shape[0] else torch.cat([adv, x[k:]])
