"""Fixed-epsilon attacks made minimal by the per-sample epsilon search (``search``): Foolbox's PGD, APGD, Square.

Foolbox's PGD is a fixed-epsilon attack with one scalar epsilon per call; the search gives each sample its own
radius. Epsilon enters PGD in three places: the step size (rel_stepsize * epsilon, which already broadcasts),
the random start and the projection; the classes below override the last two by the same formulas written to
broadcast over samples. They also keep the best iterate: Foolbox's PGD returns only its last iterate, so an
adversarial reached mid-run (and lost by a later step) would be lost; here every iterate whose logits the loss
computes anyway is judged as ``verify`` judges it (``fixed.Tracker``), plus the last one (one forward pass).

A setting that cannot cross the epsilon ball is rejected when the configuration is resolved (not warned
about, so that it fails at entry, not in a worker): PGD moves at most steps * rel_stepsize * eps from its
start, and from a random start a pixel may have to travel 2 * eps to reach the ball's other edge, so
steps * rel_stepsize < 2 is refused. (Four of the fifteen settings of the old 'paper' Linf sweep were such.)

Configuration keys of this kind: ``search`` (see ``search``; this kind's defaults are in its
``search_defaults``: for Foolbox's PGD only {'eps_min': 1e-4, 'steps': 10}, the original plain bisection
from an unbounded first run, so stored configurations keep their hash; APGD and Square also fill in an upper
bound attack, rtol 0.01, a ray search, warm starts and the secant rule).
"""

from __future__ import annotations

import itertools
from typing import Any

import eagerpy as ep
import foolbox.attacks as fa
import numpy as np
import torch
from foolbox.attacks.gradient_descent_base import L2BaseGradientDescent

from ..errors import RobustnessConfigError
from ..norms import perturbation_norm
from .base import Attack
from .counting import QueryCounter
from .fixed import FixedRun, Tracker, per_sample, project
from .search import epsilon_search, resolve_search, upper_bound

__all__ = [
    "LinfPGDPerSample",
    "LinfAdamPGDPerSample",
    "L2PGDPerSample",
    "L2AdamPGDPerSample",
    "SEARCH_DEFAULTS",
    "MIN_TRAVEL",
    "epsilon_search",
    "EpsilonSearchAttack",
]

SEARCH_DEFAULTS = {"eps_min": 1e-4, "steps": 10}  # Foolbox PGD's; optional keys: see ``search``
MIN_TRAVEL = 2.0  # steps * rel_stepsize (in units of epsilon) a PGD setting must reach


def _linf_random_start(self: Any, x0: ep.Tensor, epsilon: Any) -> ep.Tensor:
    if getattr(self, "_start", None) is not None:
        return ep.astensor(project(self._start, x0.raw, self._eps, "Linf"))
    return x0 + epsilon * ep.uniform(x0, x0.shape, -1.0, 1.0)


def _l2_random_start(self: Any, x0: ep.Tensor, epsilon: Any) -> ep.Tensor:
    if getattr(self, "_start", None) is not None:
        return ep.astensor(project(self._start, x0.raw, self._eps, "L2"))
    return L2BaseGradientDescent.get_random_start(self, x0, epsilon)  # x0 + epsilon * r broadcasts


def _linf_project(self: Any, x: ep.Tensor, x0: ep.Tensor, epsilon: Any) -> ep.Tensor:
    return x0 + ep.minimum(ep.maximum(x - x0, -epsilon), epsilon)


def _l2_project(self: Any, x: ep.Tensor, x0: ep.Tensor, epsilon: Any) -> ep.Tensor:
    d = x - x0
    norms = ep.maximum(d.reshape((d.shape[0], -1)).norms.l2(axis=-1), 1e-12)
    factor = ep.minimum(1.0, epsilon.reshape((-1,)) / norms).reshape((-1,) + (1,) * (d.ndim - 1))
    return x0 + d * factor


class _Tracked:
    """Foolbox PGD that records its iterates (``run_fixed``) and may start from a given point."""

    uses_fmodel = True  # run_fixed takes the Foolbox model
    _tracker: Tracker | None = None
    _start: torch.Tensor | None = None

    def get_loss_fn(self, model: Any, labels: ep.Tensor):
        def loss_fn(inputs: ep.Tensor) -> ep.Tensor:
            logits = model(inputs)
            if self._tracker is not None:
                self._tracker.see(inputs.raw, logits.raw)
            return ep.crossentropy(logits, labels).sum()
        return loss_fn

    def run_fixed(self, fmodel: Any, x0: torch.Tensor, y: torch.Tensor, eps: torch.Tensor, norm: str,
                  margin: float, start: torch.Tensor | None = None) -> FixedRun:
        self._tracker, self._start, self._eps = Tracker(x0, y, norm, margin), start, eps
        try:
            last = self.run(fmodel, x0, y, epsilon=ep.astensor(per_sample(eps, x0)))
            with torch.no_grad():
                self._tracker.see(last, fmodel(last))
            return self._tracker.result()
        finally:
            self._tracker, self._start = None, None


class LinfPGDPerSample(_Tracked, fa.LinfProjectedGradientDescentAttack):
    """Linf PGD accepting ``epsilon`` as a (N, 1, 1, 1) tensor, one radius per sample."""

    get_random_start = _linf_random_start
    project = _linf_project


class LinfAdamPGDPerSample(_Tracked, fa.LinfAdamProjectedGradientDescentAttack):
    """Linf Adam-PGD accepting ``epsilon`` as a (N, 1, 1, 1) tensor, one radius per sample."""

    get_random_start = _linf_random_start
    project = _linf_project


class L2PGDPerSample(_Tracked, fa.L2ProjectedGradientDescentAttack):
    """L2 PGD accepting ``epsilon`` as a (N, 1, 1, 1) tensor (its random start x0 + epsilon * r broadcasts)."""

    get_random_start = _l2_random_start
    project = _l2_project


class L2AdamPGDPerSample(_Tracked, fa.L2AdamProjectedGradientDescentAttack):
    """L2 Adam-PGD accepting ``epsilon`` as a (N, 1, 1, 1) tensor."""

    get_random_start = _l2_random_start
    project = _l2_project


class EpsilonSearchAttack(Attack):
    """A fixed-epsilon attack (``run_fixed``) made minimal by ``search.epsilon_search``.

    ``search_defaults``: the search keys this kind fills in (see ``search``); None = Foolbox PGD's.
    """

    options = {"search": SEARCH_DEFAULTS}

    def __init__(self, name: str, norm: str, foolbox_class: type, search_defaults: dict | None = None):
        super().__init__(name, norm, foolbox_class)
        self.search_defaults = dict(SEARCH_DEFAULTS if search_defaults is None else search_defaults)

    def resolve_sweep(self, sweep: Any) -> dict[str, list]:
        out = super().resolve_sweep(sweep)
        params = self.hyper_parameters()
        if "abs_stepsize" in out:
            raise RobustnessConfigError("attack_config['sweep']['abs_stepsize']: the search varies epsilon per "
                                        "sample; give rel_stepsize (relative to epsilon) instead")
        keys = list(out)
        for values in itertools.product(*(out[k] for k in keys)):
            setting = dict(zip(keys, values))
            if hasattr(self.foolbox_class, "check"):
                try:
                    self.foolbox_class.check(setting)
                except ValueError as err:
                    raise RobustnessConfigError(f"attack_config['sweep'] setting {setting}: {err}") from None
            if "rel_stepsize" in params:
                full = {k: setting.get(k, params[k].default) for k in ("steps", "rel_stepsize")}
                travel = full["steps"] * full["rel_stepsize"]
                if travel < MIN_TRAVEL - 1e-12:
                    raise RobustnessConfigError(
                        f"attack_config['sweep'] setting {full}: steps * rel_stepsize = {travel:.3g} < "
                        f"{MIN_TRAVEL:g}, so PGD cannot cross the epsilon ball (from a random start a pixel may "
                        f"need 2 * eps). Fix: drop this setting, or raise steps or rel_stepsize")
        return out

    def resolve_options(self, config: dict) -> dict:
        return {"search": resolve_search(config.get("search"), self.norm, self.search_defaults)}

    def run(self, params: dict, config: dict, fmodel: Any, counter: QueryCounter, x0: torch.Tensor,
            y: torch.Tensor, cache: dict) -> torch.Tensor:
        # the upper bounds are computed once per (batch, repeat), in the first setting that needs them (its
        # queries are counted there); each later setting of the sweep starts its brackets from the best
        # verified adversarials of the settings before it
        search, margin = config["search"], config["margin"]
        if search.get("bound") and "prior" not in cache:
            cache["prior"] = upper_bound(fmodel, counter, x0, y, self.norm, search, margin)
        stats: dict = {}
        best = epsilon_search(self.foolbox_class(**params, **self.fixed), fmodel, counter, x0, y, self.norm,
                              search, margin, stats, prior=cache.get("prior"))
        if search.get("polish") and params == _last_setting(config):
            best = self._polish(search["polish"], config, fmodel, counter, x0, y, best)
        if search.get("bound"):
            dist = _distances(x0, best, self.norm)
            prior_best, prior_hi = cache["prior"]
            better = dist < prior_hi
            bt = torch.from_numpy(better).to(x0.device)
            prior_best = prior_best.clone()
            prior_best[bt] = best[bt]
            cache["prior"] = (prior_best, np.where(better, dist, prior_hi))
        cache.setdefault("search_rounds", []).append(stats.get("rounds", np.nan))
        return best

    def _polish_attack(self) -> Any:
        from .brendel_bethge import BrendelBethgeAttack

        cls = {"L2": fa.L2BrendelBethgeAttack, "Linf": fa.LinfinityBrendelBethgeAttack, "L1": fa.L1BrendelBethgeAttack}
        return BrendelBethgeAttack("bb", self.norm, cls[self.norm])

    def warm_up(self, config: dict | None = None) -> float:
        if config and config["search"].get("polish"):
            return self._polish_attack().warm_up()
        return 0.0

    def _polish(self, polish: dict, config: dict, fmodel: Any, counter: QueryCounter, x0: torch.Tensor,
                y: torch.Tensor, best: torch.Tensor) -> torch.Tensor:
        """Brendel-Bethge from the best verified points (rows without one are left as they are)."""
        found = torch.isfinite(best.reshape(len(best), -1)).all(dim=1).cpu().numpy()
        if not found.any():
            return best
        bb_cache = {"starts": (torch.where(torch.isfinite(best), best, x0), found)}
        out = self._polish_attack().run(dict(polish), {"margin": config["margin"]}, fmodel, counter, x0, y,
                                        bb_cache)
        keep = torch.isfinite(out.reshape(len(out), -1)).all(dim=1).reshape(-1, *([1] * (x0.ndim - 1)))
        return torch.where(keep, out, best)  # BB returns the better of its start and its result


def _last_setting(config: dict) -> dict:
    """The last setting of the sweep, in the sweep's order (``sweep._settings``)."""
    return {k: v[-1] for k, v in config["sweep"].items()}


def _distances(x0: torch.Tensor, adv: torch.Tensor, norm: str) -> np.ndarray:
    """(B,) float64 distances of adversarials adv (NaN rows: inf), as ``verify`` measures them."""
    d = perturbation_norm((adv.double() - x0.double()).cpu().numpy(), norm)
    return np.where(np.isfinite(d), d, np.inf)
