"""Checks of configuration values, shared by every configuration's resolver.

``numbers.*`` so that numpy scalars (as a database blob returns them) pass; the values come back as plain Python
types, so a resolved configuration hashes the same whether it was typed in or read back.
"""

from __future__ import annotations

import math
import numbers

from pipeline.errors import ConfigError


def is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def positive_int(value, what: str, alternative: str = "", error=ConfigError) -> int:
    """``value`` as an int >= 1, else ``error`` naming ``what`` (e.g. "train_config epochs")."""
    if not is_int(value) or value < 1:
        raise error(f"{what}={value!r} must be a positive integer {alternative}".rstrip())
    return int(value)


def non_negative_number(value, what: str, error=ConfigError) -> float:
    if not is_number(value) or value < 0:
        raise error(f"{what}={value!r} must be a finite number >= 0")
    return float(value)


def check_keys(config: dict, allowed, what: str, error=ConfigError) -> None:
    """Unknown keys are an error, never ignored: a misspelt key would otherwise silently fall back to a default."""
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        raise error(f"{what}: unknown key(s) {unknown}. Fix: use only {sorted(allowed)}")
