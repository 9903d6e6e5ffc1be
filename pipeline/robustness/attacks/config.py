"""Resolution of an attack configuration: checked, every default filled in, plain JSON types, when it is entered.

Configuration (``attack_config``, a plain dict a DataJoint paramset can hold):
    attack      'bb' | 'ddn' | 'fmn' | 'cw' | 'ead' | 'pgd' | 'adam_pgd' | 'apgd' | 'square' | 'hsj'
                (``registry.available_attacks()`` lists which exist for which norm; 'apgd' and 'square' are
                written here, see ``apgd`` and ``square``; 'square' and 'hsj' are the gradient-free checks)
    norm        'L2' | 'Linf' | 'L1' | 'L0'
    sweep       {constructor argument of the Foolbox attack: list of values}; every combination is one
                setting (e.g. {'steps': [10, 30], 'rel_stepsize': [0.1, 0.3]} gives 4 settings); default {}
                (one setting, Foolbox's defaults)
    repeats     random restarts of each setting (different seeds), default 1
    n_samples   how many test samples the caller selects (``samples.select_samples``; None = all), default 1000
    batch_size  samples attacked at once, default 250
    seed        picks the samples (caller) and seeds the attacks' randomness, default 0
    margin      how clearly a candidate must be misclassified to count: best other logit - true logit >
                margin * max(1, max |logit|), default 1e-4 (see ``verify.verify``)
    search      (pgd, adam_pgd, apgd, square) the per-sample epsilon search, see ``search``: its upper-bound
                attack (computed inside the same run, so no Adversarial row depends on another), bracket
                tolerance, ray search, warm starts and confirmations; Foolbox PGD's stored configurations keep
                their meaning (an absent key = the original plain bisection)
    init, init_steps  (bb only) the attacks giving Brendel-Bethge its starting points, see ``brendel_bethge``
"""

from __future__ import annotations

from typing import Mapping

from pipeline.checks import check_keys, is_number, positive_int

from ..errors import RobustnessConfigError
from ..samples import resolve_n_samples, resolve_seed
from .registry import REGISTRY, get_attack

__all__ = ["DEFAULTS", "resolve_attack_config"]

DEFAULTS = {"sweep": {}, "repeats": 1, "n_samples": 1000, "batch_size": 250, "seed": 0, "margin": 1e-4}


def _option_owners() -> dict[str, list[str]]:
    """{configuration key of some kind of attack: names of the attacks of the kinds that take it}."""
    owners: dict[str, list[str]] = {}
    for attack in REGISTRY.values():
        for key in attack.options:
            names = owners.setdefault(key, [])
            if attack.name not in names:
                names.append(attack.name)
    return owners


def resolve_attack_config(params: Mapping) -> dict:
    """The complete, checked attack configuration (see the module docstring), as a new dict.

    Every default is filled in (except the search's optional keys, see ``search``: absent, they mean the original
    plain bisection, e.g. no eps_max = the box's diameter, so stored configurations keep their hash),
    values are plain Python types (int, float, str, list, dict), and resolving a resolved configuration returns
    it unchanged. Raises RobustnessConfigError (a ``pipeline.errors.ConfigError``) naming the field and the fix.
    """
    if not isinstance(params, Mapping):
        raise RobustnessConfigError(f"attack_config must be a dict, got {type(params).__name__}")
    option_owners = _option_owners()
    check_keys(params, {"attack", "norm", *DEFAULTS, *option_owners}, "attack_config", error=RobustnessConfigError)
    attack = get_attack(params.get("norm"), params.get("attack"))
    for key, owners in option_owners.items():
        if key in params and key not in attack.options:
            raise RobustnessConfigError(
                f"attack_config['{key}']: only for attacks {owners}, not {attack.name!r}; remove it")
    margin = params.get("margin", DEFAULTS["margin"])
    if not is_number(margin) or not 0 <= margin < 0.1:
        raise RobustnessConfigError(
            f"attack_config['margin']={margin!r}: expected a small relative logit margin in [0, 0.1)")
    return {
        "attack": attack.name,
        "norm": attack.norm,
        "sweep": attack.resolve_sweep(params.get("sweep") or {}),
        "repeats": positive_int(params.get("repeats", DEFAULTS["repeats"]), "attack_config repeats",
                                error=RobustnessConfigError),
        "n_samples": resolve_n_samples(params.get("n_samples", DEFAULTS["n_samples"]), "attack_config"),
        "batch_size": positive_int(params.get("batch_size", DEFAULTS["batch_size"]), "attack_config batch_size",
                                   error=RobustnessConfigError),
        "seed": resolve_seed(params.get("seed", DEFAULTS["seed"]), "attack_config"),
        "margin": float(margin),
        **attack.resolve_options(params),
    }
