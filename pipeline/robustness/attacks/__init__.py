"""Minimal adversarial perturbations with Foolbox 3.3.4 (Schott et al. 2018 protocol, as in Li et al. 2019).

Images are grayscale float32 (N, 1, H, W) in [0, 1]; a model maps them to logits (N, n_classes).

One job per module: ``config`` resolves an attack configuration (its keys are documented there), ``presets``
holds ready-made ones, ``registry`` the attacks (one per norm and name; kinds in ``base``, ``pgd``,
``brendel_bethge``), ``apgd`` and ``square`` the fixed-epsilon attacks written here, ``search`` the per-sample
epsilon search that makes them minimal (started below an upper bound), ``fixed`` what such an attack hands the
search (its best iterates), ``verify`` re-checks candidates, ``counting`` counts queries, ``sweep`` runs a
configuration's sweep on given samples, ``check`` is an independent check of reported minima. The caller
selects the samples (``pipeline.robustness.samples``).
"""

from .config import resolve_attack_config
from .presets import ATTACK_PRESETS, preset_configs
from .registry import available_attacks, warm_up
from .sweep import AttackResult, minimal_perturbations

__all__ = [
    "ATTACK_PRESETS",
    "AttackResult",
    "available_attacks",
    "minimal_perturbations",
    "preset_configs",
    "resolve_attack_config",
    "warm_up",
]
