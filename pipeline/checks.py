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


def apply_preset(config, presets: dict, keys, what: str, error=ConfigError, default: str = "paper") -> dict:
    """A preset name, or a dict of ``keys`` plus optionally 'preset' (default ``default``), or None -> the
    preset's values updated with the dict's (values not yet checked). The returned dict has no 'preset' key: a
    configuration that gives every key means the same whatever the presets say later."""
    if config is None:
        config = {}
    if isinstance(config, str):
        config = {"preset": config}
    if not isinstance(config, dict):
        raise error(f"{what} {config!r} must be a preset name or a dict. Fix: use one of {sorted(presets)} or a "
                    f"dict of {sorted(keys)}")
    check_keys(config, (*keys, "preset"), what, error=error)
    cfg = dict(config)
    preset = cfg.pop("preset", default)
    if not isinstance(preset, str) or preset not in presets:
        raise error(f"{what}: preset {preset!r} is unknown. Fix: use one of {sorted(presets)}")
    return {**presets[preset], **cfg}
