"""PGD made a minimisation attack: Foolbox's PGD with one epsilon per sample, and the per-sample epsilon search.

Foolbox's PGD is a fixed-epsilon attack with one scalar epsilon per call; the search here bisects a radius per
sample, so each sample's PGD runs at its own epsilon. Epsilon enters PGD in three places: the step size
(rel_stepsize * epsilon, which already broadcasts), the random start and the projection; the classes below
override the last two by the same formulas written to broadcast over samples.

Configuration key of this kind (``search``): {'eps_min': 1e-4, 'steps': 10, optional 'eps_max'}, a geometric
bisection in [eps_min, eps_max]; no eps_max = the diameter of the [0, 1] box in the norm (1 for Linf,
sqrt(pixels) for L2), so the first PGD run is unbounded.
"""

from __future__ import annotations

from typing import Any

import eagerpy as ep
import foolbox.attacks as fa
import numpy as np
import torch

from pipeline.checks import check_keys, is_int, is_number

from ..errors import RobustnessConfigError
from .base import Attack
from .counting import QueryCounter
from .verify import verify

__all__ = [
    "LinfPGDPerSample",
    "LinfAdamPGDPerSample",
    "L2PGDPerSample",
    "L2AdamPGDPerSample",
    "SEARCH_DEFAULTS",
    "epsilon_search",
    "EpsilonSearchAttack",
]

SEARCH_DEFAULTS = {"eps_min": 1e-4, "steps": 10}  # and optional eps_max


def _linf_random_start(self: Any, x0: ep.Tensor, epsilon: Any) -> ep.Tensor:
    return x0 + epsilon * ep.uniform(x0, x0.shape, -1.0, 1.0)


def _linf_project(self: Any, x: ep.Tensor, x0: ep.Tensor, epsilon: Any) -> ep.Tensor:
    return x0 + ep.minimum(ep.maximum(x - x0, -epsilon), epsilon)


def _l2_project(self: Any, x: ep.Tensor, x0: ep.Tensor, epsilon: Any) -> ep.Tensor:
    d = x - x0
    norms = ep.maximum(d.reshape((d.shape[0], -1)).norms.l2(axis=-1), 1e-12)
    factor = ep.minimum(1.0, epsilon.reshape((-1,)) / norms).reshape((-1,) + (1,) * (d.ndim - 1))
    return x0 + d * factor


class LinfPGDPerSample(fa.LinfProjectedGradientDescentAttack):
    """Linf PGD accepting ``epsilon`` as a (N, 1, 1, 1) tensor, one radius per sample."""

    get_random_start = _linf_random_start
    project = _linf_project


class LinfAdamPGDPerSample(fa.LinfAdamProjectedGradientDescentAttack):
    """Linf Adam-PGD accepting ``epsilon`` as a (N, 1, 1, 1) tensor, one radius per sample."""

    get_random_start = _linf_random_start
    project = _linf_project


class L2PGDPerSample(fa.L2ProjectedGradientDescentAttack):
    """L2 PGD accepting ``epsilon`` as a (N, 1, 1, 1) tensor (its random start x0 + epsilon * r broadcasts)."""

    project = _l2_project


class L2AdamPGDPerSample(fa.L2AdamProjectedGradientDescentAttack):
    """L2 Adam-PGD accepting ``epsilon`` as a (N, 1, 1, 1) tensor."""

    project = _l2_project


def epsilon_search(attack: Any, fmodel: Any, counter: QueryCounter, x0: torch.Tensor, y: torch.Tensor,
                   norm: str, search: dict, margin: float) -> torch.Tensor:
    """Per-sample geometric bisection over epsilon; the best verified adversarial (B, 1, H, W), NaN rows: none.

    ``attack`` is a per-sample PGD (above) run on clean images x0 (B, 1, H, W), labels y (B,). First PGD at
    eps_max; samples it flips get the upper bound hi = the distance found, then each step runs PGD at
    sqrt(lo * hi): success lowers hi to the distance found, failure raises lo. The success checks go through
    ``counter`` (they are part of the attack's cost).
    """
    n = len(x0)
    best = torch.full_like(x0, float("nan"))
    hi = np.full(n, np.inf)
    lo = np.full(n, float(search["eps_min"]))
    diameter = {"Linf": 1.0, "L2": float(np.sqrt(x0[0].numel()))}[norm]  # of the [0, 1] box
    eps = np.full(n, float(search.get("eps_max", diameter)))
    active = np.ones(n, dtype=bool)
    for step in range(search["steps"] + 1):
        rows = np.flatnonzero(active)
        if rows.size == 0:
            break
        rt = torch.from_numpy(rows).to(x0.device)
        e = torch.tensor(eps[rows], dtype=x0.dtype, device=x0.device).reshape(-1, *([1] * (x0.ndim - 1)))
        adv = attack.run(fmodel, x0[rt], y[rt], epsilon=ep.astensor(e))
        adv, dist, ok = verify(counter, x0[rt], y[rt], adv, norm, margin)
        better = ok & (dist < hi[rows])
        best[rt[torch.from_numpy(better).to(x0.device)]] = adv[torch.from_numpy(better).to(x0.device)]
        hi[rows[better]] = dist[better]
        lo[rows[~ok]] = np.maximum(lo[rows[~ok]], eps[rows[~ok]])
        if step == 0:
            active = np.isfinite(hi)  # never flipped at eps_max: give up on these samples
        active &= hi > lo * (1 + 1e-6)
        eps = np.sqrt(lo * np.where(np.isfinite(hi), hi, lo))
    return best


class EpsilonSearchAttack(Attack):
    """A per-sample PGD (Linf or L2, plain or Adam) made minimal by ``epsilon_search``."""

    options = {"search": SEARCH_DEFAULTS}

    def resolve_options(self, config: dict) -> dict:
        given = config.get("search") or {}
        what = "attack_config['search']"
        if not isinstance(given, dict):
            raise RobustnessConfigError(f"{what}={given!r}: expected a dict with keys from "
                                        f"{sorted({'eps_max', *SEARCH_DEFAULTS})}")
        check_keys(given, {"eps_max", *SEARCH_DEFAULTS}, what, error=RobustnessConfigError)
        # eps_max absent (or None) = the [0, 1] box's diameter; left out of the stored config rather than
        # stored as None, so the configurations of the presets hold no None
        search = {**SEARCH_DEFAULTS, **{k: v for k, v in given.items() if v is not None}}
        for key in search.keys() & {"eps_min", "eps_max"}:
            if not is_number(search[key]):
                raise RobustnessConfigError(f"{what}['{key}']={search[key]!r} must be a finite number")
            search[key] = float(search[key])
        if not 0 < search["eps_min"] < search.get("eps_max", np.inf):
            raise RobustnessConfigError(f"{what}: need 0 < eps_min < eps_max, got {search}")
        if not is_int(search["steps"]) or search["steps"] < 0:
            raise RobustnessConfigError(f"{what}['steps']={search['steps']!r} must be an integer >= 0")
        search["steps"] = int(search["steps"])
        return {"search": search}

    def run(self, params: dict, config: dict, fmodel: Any, counter: QueryCounter, x0: torch.Tensor,
            y: torch.Tensor, cache: dict) -> torch.Tensor:
        return epsilon_search(self.foolbox_class(**params), fmodel, counter, x0, y, self.norm, config["search"],
                              config["margin"])
