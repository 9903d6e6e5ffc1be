"""Ready-made attack configurations: the paper's protocol, a fast strong one (a laptop's price), the old demo.

How the minimum is made strong and cheap (see ``search`` and ``apgd``): each Linf / L2 configuration of APGD
starts its per-sample brackets from an upper bound computed in the same run (FMN for Linf, DDN for L2,
ray-refined), searches only below it with warm-started APGD rounds (the secant rule on the logit slack), and
stops a sample once its bracket is tight (0.2-0.5 %); targeted APGD (``targets``) attacks the classes of the
nearest linearised boundaries, which an untargeted loss misses; a final ensemble (``search``'s ``final``:
APGD-CE, APGD-DLR, targeted DLR, fresh starts) attacks each minimum again and reopens any bracket it beats. In
'fast', Brendel-Bethge refines L2 from the best point found so far ('paper' keeps its own BB sweep from DDN).
Square (Linf) and HopSkipJump (L2) are the gradient-free checks (``scores.masking_check``).
"""

from __future__ import annotations

from typing import Any

from ..errors import RobustnessConfigError
from .config import resolve_attack_config

__all__ = ["ATTACK_PRESETS", "preset_configs"]


def _cfg(attack: str, norm: str, sweep: dict, n: int, batch: int, **extra: Any) -> dict:
    return {"attack": attack, "norm": norm, "sweep": sweep, "n_samples": n, "batch_size": batch, **extra}


def _search(bound: str, bound_steps: int, steps: int = 8, rtol: float = 0.01, confirm: int = 1, **extra: Any
            ) -> dict:
    return {"eps_min": 1e-4, "steps": steps, "bound": [{"attack": bound, "steps": bound_steps}], "rtol": rtol,
            "refine": 8, "warm": True, "confirm": confirm, "rule": "secant", **extra}


# the search's final ensemble (``search``: APGD-CE, APGD-DLR, targeted APGD-DLR towards 3 logit runners-up and 3
# more nearest boundaries, 100 steps each, from fresh starts at (1 - rtol) x each minimum; at most 2 rounds, a
# later one only on the samples whose bracket the previous reopened): the checks' attacks and more targets
FINAL = {"steps": 100, "targets": 3, "rounds": 2}

ATTACK_PRESETS: dict[str, dict[str, dict]] = {
    # The paper's protocol on 1000 test samples (Linf PGD over iteration counts {10, 30, 50, 100, 200}, L2
    # Brendel-Bethge from DDN, the supplementary's other attacks and norms), made stronger and cheaper: every
    # PGD setting crosses the ball (steps * rel_stepsize >= 2; the old sweep's 10 x 0.025, 10 x 0.1,
    # 30 x 0.025 and 50 x 0.025 could not and are gone), the epsilon searches start below an FMN bound and stop
    # at 0.5%; APGD (CE, DLR, targeted DLR) in both headline norms; Square and HopSkipJump, gradient-free,
    # on subsets of the same samples (same seed: ``samples.select_samples`` nests them) as masking checks.
    # Brendel-Bethge's lr is per sample (see brendel_bethge); DDN init is deterministic, so no repeats.
    "paper": {
        "Linf-apgd": _cfg("apgd", "Linf", {"steps": [100], "loss": ["ce", "dlr"], "targets": [0, 3]}, 1000, 250,
                          search=_search("fmn", 100, steps=10, rtol=0.005, final=FINAL)),
        "Linf-pgd": _cfg("pgd", "Linf", {"steps": [10, 30, 50, 100, 200], "rel_stepsize": [0.3]}, 1000, 250,
                         search=_search("fmn", 100, steps=10, rtol=0.005)),
        "Linf-pgd-fine": _cfg("pgd", "Linf", {"steps": [100, 200], "rel_stepsize": [0.025, 0.1]}, 1000, 250,
                              search=_search("fmn", 100, steps=10, rtol=0.005)),
        "Linf-fmn": _cfg("fmn", "Linf", {"steps": [100, 1000], "max_stepsize": [1.0, 0.1]}, 1000, 250),
        "Linf-bb": _cfg("bb", "Linf", {"steps": [1000], "lr": [1e-3, 1e-2]}, 1000, 250, init_steps=1000),
        "Linf-square": _cfg("square", "Linf", {"steps": [1000]}, 200, 200,
                            search={**_search("fmn", 100, steps=10, rtol=0.005), "warm": False}),
        "L2-apgd": _cfg("apgd", "L2", {"steps": [100], "loss": ["ce", "dlr"], "targets": [0, 3]}, 1000, 250,
                        search=_search("ddn", 100, steps=10, rtol=0.005, final=FINAL)),
        "L2-bb": _cfg("bb", "L2", {"steps": [1000], "lr": [1e-3, 1e-2]}, 1000, 250, init_steps=1000),
        "L2-ddn": _cfg("ddn", "L2", {"steps": [100, 1000]}, 1000, 250),
        "L2-fmn": _cfg("fmn", "L2", {"steps": [100, 1000], "max_stepsize": [1.0, 0.1]}, 1000, 250),
        "L2-cw": _cfg("cw", "L2", {"steps": [1000], "binary_search_steps": [9], "stepsize": [1e-2]}, 1000, 250),
        "L2-hsj": _cfg("hsj", "L2", {"steps": [32], "max_gradient_eval_steps": [1000]}, 100, 100),
        "L1-fmn": _cfg("fmn", "L1", {"steps": [100, 1000]}, 1000, 250),
        "L1-bb": _cfg("bb", "L1", {"steps": [1000], "lr": [1e-3]}, 1000, 250, init_steps=1000),
        "L1-ead": _cfg("ead", "L1", {"steps": [1000], "binary_search_steps": [9]}, 1000, 250),
        "L0-fmn": _cfg("fmn", "L0", {"steps": [100, 1000]}, 1000, 250),
        "L0-bb": _cfg("bb", "L0", {"steps": [1000], "lr": [1e-3]}, 1000, 250, init_steps=1000),
    },
    # A strong minimum at a laptop's price (issue 14), tuned on the demo's classifiers against two independent
    # checks (ART's APGD, attacks.art_check, code the project did not write; and attacks.check, our own ensemble):
    # the search's rounds are targeted DLR towards each sample's 3 nearest linearised boundaries, warm-started,
    # brackets closed at 0.2 % (Linf; 0.5 % L2), then the search's final ensemble (FINAL: untargeted CE and
    # DLR, targeted DLR towards 3 logit runners-up and 3 more nearest boundaries, from fresh starts) reopens any
    # bracket it beats. benchmarks/preset_check.py (seed 0 of None, Neural, Neural (truth), Adversarial (PGD),
    # first 40 test samples, 130 clean-correct in all; commit bbcb0d5): ART beats 2/130 Linf minima (1.5 %,
    # Wilson 95 % CI 0.4-5.4 %) and 2/130 L2 (1.5 % [0.4, 5.4]); either check 2/130 Linf and 3/130 L2 (2.3 %
    # [0.8, 6.6]); every win by at most 0.6 % (the checks attack at 0.995 x the minimum); no minimum is larger
    # than the demo's stored FMN / DDN score of the same sample. (Before the final ensemble, each failure
    # confirmed by two fresh runs instead, the same script at b4afcc3 found ART beating 7/30 Linf minima of the
    # Neural classifier of an earlier demo run.) Price: 1900-2300 queries and 25-34 s per 40 samples (Linf),
    # 1200-1400 and 16-22 s (L2), on this 2-core CPU.
    # Brendel-Bethge (100 steps) polishes L2 from the search's best verified point; Square checks Linf without
    # gradients.
    "fast": {
        "Linf-apgd": _cfg("apgd", "Linf", {"steps": [50], "loss": ["dlr"], "targets": [3]}, 20, 20,
                          search=_search("fmn", 50, steps=10, rtol=0.002, confirm=0, final=FINAL)),
        "Linf-square": _cfg("square", "Linf", {"steps": [200]}, 20, 20,
                            search={**_search("fmn", 100), "warm": False}),
        "L2-apgd": _cfg("apgd", "L2", {"steps": [20], "loss": ["dlr"], "targets": [3]}, 20, 20,
                        search=_search("ddn", 50, rtol=0.005, confirm=0, final=FINAL,
                                       polish={"steps": 100, "lr": 1e-2})),
    },
    # The old laptop demo: 20 samples, a few steps; the attacks of the two headline norms (kept so that its
    # stored configurations can be entered again; Linf PGD's 10 x 0.1 setting, which cannot cross the ball, is
    # gone).
    "cpu-demo": {
        "Linf-pgd": _cfg("pgd", "Linf", {"steps": [10, 30], "rel_stepsize": [0.3]}, 20, 20,
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
