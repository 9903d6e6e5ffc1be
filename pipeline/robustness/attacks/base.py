"""The interface of every attack kind, and the plain kind: a Foolbox minimisation attack run as it is.

An attack is one Foolbox attack class used in one norm. It knows its name, its norm, its Foolbox class, the
hyper-parameters a sweep may set (the class's constructor arguments) and the configuration keys of its kind
(``options``); ``run`` turns a batch into candidate adversarials, in one call, as a Foolbox attack does. Kinds:
``MinimizationAttack`` (here), ``pgd.EpsilonSearchAttack`` (a fixed-epsilon attack, Foolbox's PGD or this
package's APGD and Square, made minimal by the per-sample epsilon search of ``search``) and
``brendel_bethge.BrendelBethgeAttack`` (started from adversarial points); the "Foolbox class" of an attack
written here (``apgd.APGD``, ``square.SquareLinf``) is that class, with the same constructor conventions;
``registry.REGISTRY`` holds one instance per (norm, name).
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import torch

from pipeline.checks import is_int, is_number

from ..errors import RobustnessConfigError
from .counting import QueryCounter

__all__ = ["RESERVED", "Attack", "MinimizationAttack"]

# constructor arguments that are set here, not hyper-parameters, and may not be swept
RESERVED = ("init_attack", "tensorboard", "distance", "random_start")
_ANNOTATIONS = {"int": int, "float": float, "bool": bool}  # annotations written as strings (postponed)


class Attack:
    """One attack of one norm (abstract: a kind implements ``run``)."""

    options: dict[str, Any] = {}  # the kind's own configuration keys and their defaults

    def __init__(self, name: str, norm: str, foolbox_class: type, fixed: dict | None = None):
        # fixed: constructor arguments this attack always passes (e.g. HopSkipJump's constraint), not swept
        self.name, self.norm, self.foolbox_class = name, norm, foolbox_class
        self.fixed = dict(fixed or {})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.norm!r}, {self.foolbox_class.__name__})"

    def hyper_parameters(self) -> dict[str, inspect.Parameter]:
        """{name: parameter} of the Foolbox class's constructor arguments a sweep may set."""
        params = inspect.signature(self.foolbox_class.__init__).parameters
        return {k: p for k, p in params.items()
                if k not in ("self", "args", "kwargs") and k not in RESERVED and k not in self.fixed}

    def resolve_sweep(self, sweep: Any) -> dict[str, list]:
        """{hyper-parameter: non-empty list of values} checked against the Foolbox class, values as plain types.

        A single value stands for a list of one. Values of an int, float or bool argument must be of that type
        (floats are stored as floats, so 1 and 1.0 are one configuration).
        """
        if not isinstance(sweep, dict):
            raise RobustnessConfigError(
                f"attack_config['sweep']={sweep!r}: expected a dict {{hyper-parameter: list of values}}")
        allowed = self.hyper_parameters()
        out: dict[str, list] = {}
        for key, values in sweep.items():
            if key not in allowed:
                raise RobustnessConfigError(
                    f"attack_config['sweep']: {key!r} is not a hyper-parameter of {self.foolbox_class.__name__}; "
                    f"choose from {list(allowed)}"
                )
            values = list(values) if isinstance(values, (list, tuple, np.ndarray)) else [values]
            if not values:
                raise RobustnessConfigError(f"attack_config['sweep']['{key}']: empty list of values; give at least one")
            out[str(key)] = [_plain_value(v, allowed[key], f"attack_config['sweep']['{key}']") for v in values]
        return out

    def resolve_options(self, config: dict) -> dict:
        """This kind's ``options`` read from ``config``, checked, defaults filled in (plain types)."""
        return {}

    def warm_up(self, config: dict | None = None) -> float:
        """Pay any one-off compile before an attack (of resolved ``config``) is timed; seconds it took in this
        process (0: nothing to do)."""
        return 0.0

    def run(self, params: dict, config: dict, fmodel: Any, counter: QueryCounter, x0: torch.Tensor,
            y: torch.Tensor, cache: dict) -> torch.Tensor:
        """Candidate adversarials (B, 1, H, W) of clean images x0 (B, 1, H, W), labels y (B,); NaN rows: none.

        Args:
            params: one setting of the sweep {hyper-parameter: value}.
            config: the resolved attack configuration.
            fmodel: Foolbox model around ``counter``; counter: the query-counting model (for extra checks).
            cache: a dict kept for this batch and repeat across the settings of the sweep.
        """
        raise NotImplementedError


class MinimizationAttack(Attack):
    """A Foolbox minimisation attack (DDN, FMN, C&W, EAD, HopSkipJump): run as it is, one call per batch.

    Foolbox's DDN, FMN, C&W and EAD keep their best (smallest adversarial) iterate themselves.
    """

    def run(self, params: dict, config: dict, fmodel: Any, counter: QueryCounter, x0: torch.Tensor,
            y: torch.Tensor, cache: dict) -> torch.Tensor:
        return self.foolbox_class(**params, **self.fixed).run(fmodel, x0, y)


def _plain_value(value: Any, parameter: inspect.Parameter, what: str) -> Any:
    """``value`` as a plain Python scalar of the type ``parameter`` is annotated with, else RobustnessConfigError."""
    v = value.item() if isinstance(value, np.generic) else value
    kind = _ANNOTATIONS.get(parameter.annotation, parameter.annotation)
    if kind is int:
        if not is_int(v):
            raise RobustnessConfigError(f"{what}: {value!r} must be an integer")
        return int(v)
    if kind is float:
        if not is_number(v):
            raise RobustnessConfigError(f"{what}: {value!r} must be a finite number")
        return float(v)
    if kind is bool:
        if not isinstance(v, bool):
            raise RobustnessConfigError(f"{what}: {value!r} must be True or False")
        return v
    if v is None or isinstance(v, (bool, str)) or is_number(v):
        return v
    raise RobustnessConfigError(f"{what}: {value!r} must be a number, string, True/False or None")
