"""Ready-made attack configurations: the paper's protocol and a laptop demo."""

from __future__ import annotations

from typing import Any

from ..errors import RobustnessConfigError
from .config import resolve_attack_config

__all__ = ["ATTACK_PRESETS", "preset_configs"]


def _cfg(attack: str, norm: str, sweep: dict, n: int, batch: int, **extra: Any) -> dict:
    return {"attack": attack, "norm": norm, "sweep": sweep, "n_samples": n, "batch_size": batch, **extra}


ATTACK_PRESETS: dict[str, dict[str, dict]] = {
    # The paper's protocol: 1000 test samples; Linf PGD over iteration counts {10, 30, 50, 100, 200} and
    # several step sizes (relative to epsilon), each made minimal by a 10-step per-sample binary search
    # over epsilon; L2 Brendel-Bethge (started from DDN); the supplementary's other attacks and norms.
    # Brendel-Bethge's lr is per sample (see brendel_bethge); DDN init is deterministic, so no repeats.
    "paper": {
        "Linf-pgd": _cfg("pgd", "Linf", {"steps": [10, 30, 50, 100, 200], "rel_stepsize": [0.025, 0.1, 0.3]},
                         1000, 250, search={"eps_min": 1e-4, "steps": 10}),
        "Linf-adam_pgd": _cfg("adam_pgd", "Linf", {"steps": [50, 200], "rel_stepsize": [0.025, 0.1]},
                              1000, 250, search={"eps_min": 1e-4, "steps": 10}),
        "Linf-fmn": _cfg("fmn", "Linf", {"steps": [100, 1000], "max_stepsize": [1.0, 0.1]}, 1000, 250),
        "Linf-bb": _cfg("bb", "Linf", {"steps": [1000], "lr": [1e-3, 1e-2]}, 1000, 250, init_steps=1000),
        "L2-bb": _cfg("bb", "L2", {"steps": [1000], "lr": [1e-3, 1e-2]}, 1000, 250, init_steps=1000),
        "L2-ddn": _cfg("ddn", "L2", {"steps": [100, 1000]}, 1000, 250),
        "L2-fmn": _cfg("fmn", "L2", {"steps": [100, 1000], "max_stepsize": [1.0, 0.1]}, 1000, 250),
        "L2-cw": _cfg("cw", "L2", {"steps": [1000], "binary_search_steps": [9], "stepsize": [1e-2]}, 1000, 250),
        "L1-fmn": _cfg("fmn", "L1", {"steps": [100, 1000]}, 1000, 250),
        "L1-bb": _cfg("bb", "L1", {"steps": [1000], "lr": [1e-3]}, 1000, 250, init_steps=1000),
        "L1-ead": _cfg("ead", "L1", {"steps": [1000], "binary_search_steps": [9]}, 1000, 250),
        "L0-fmn": _cfg("fmn", "L0", {"steps": [100, 1000]}, 1000, 250),
        "L0-bb": _cfg("bb", "L0", {"steps": [1000], "lr": [1e-3]}, 1000, 250, init_steps=1000),
    },
    # A laptop demo: 20 samples, a few steps; the attacks of the two headline norms.
    "cpu-demo": {
        "Linf-pgd": _cfg("pgd", "Linf", {"steps": [10, 30], "rel_stepsize": [0.1, 0.3]}, 20, 20,
                         search={"eps_min": 1e-3, "steps": 7}),
        "Linf-fmn": _cfg("fmn", "Linf", {"steps": [20, 50]}, 20, 20),
        "Linf-bb": _cfg("bb", "Linf", {"steps": [100], "lr": [1e-2]}, 20, 20, init_steps=50),
        "L2-bb": _cfg("bb", "L2", {"steps": [100], "lr": [1e-2]}, 20, 20, init_steps=50),
        "L2-ddn": _cfg("ddn", "L2", {"steps": [20, 50]}, 20, 20),
        "L2-fmn": _cfg("fmn", "L2", {"steps": [50], "max_stepsize": [1.0, 0.1]}, 20, 20),
        "L2-cw": _cfg("cw", "L2", {"steps": [50], "binary_search_steps": [4], "stepsize": [5e-2]}, 20, 20),
    },
}


def preset_configs(name: str) -> dict[str, dict]:
    """{'norm-attack': resolved attack configuration} of preset ``name`` (new dicts on every call)."""
    if name not in ATTACK_PRESETS:
        raise RobustnessConfigError(f"attack preset {name!r} is unknown; choose from {sorted(ATTACK_PRESETS)}")
    return {key: resolve_attack_config(cfg) for key, cfg in ATTACK_PRESETS[name].items()}
