"""The attacks there are: one ``Attack`` per (norm, name), looked up by ``get_attack``."""

from __future__ import annotations

from typing import Sequence

import foolbox.attacks as fa

from ..errors import RobustnessConfigError, RobustnessInputError
from ..norms import NORMS, check_norm
from .base import Attack, MinimizationAttack
from .brendel_bethge import BrendelBethgeAttack
from .apgd import APGD
from .pgd import EpsilonSearchAttack, L2AdamPGDPerSample, L2PGDPerSample, LinfAdamPGDPerSample, LinfPGDPerSample
from .square import SquareLinf

__all__ = ["REGISTRY", "available_attacks", "get_attack", "warm_up"]

def _search_defaults(bound: str, steps: int, warm: bool) -> dict:
    """The search APGD and Square fill in: below an upper bound, 1% brackets, ray search, secant rule."""
    return {"eps_min": 1e-4, "steps": 8, "bound": [{"attack": bound, "steps": steps}], "rtol": 0.01, "refine": 8,
            "warm": warm, "confirm": 1, "rule": "secant"}


REGISTRY: dict[tuple[str, str], Attack] = {(a.norm, a.name): a for a in (
    BrendelBethgeAttack("bb", "L2", fa.L2BrendelBethgeAttack),
    MinimizationAttack("ddn", "L2", fa.DDNAttack),
    MinimizationAttack("fmn", "L2", fa.L2FMNAttack),
    MinimizationAttack("cw", "L2", fa.L2CarliniWagnerAttack),
    EpsilonSearchAttack("pgd", "L2", L2PGDPerSample),
    EpsilonSearchAttack("adam_pgd", "L2", L2AdamPGDPerSample),
    EpsilonSearchAttack("apgd", "L2", APGD, _search_defaults("ddn", 100, warm=True)),
    # gradient-free (the gradient-masking checks): HopSkipJump (Foolbox, from blended noise) and Square
    MinimizationAttack("hsj", "L2", fa.HopSkipJumpAttack, fixed={"constraint": "l2"}),
    EpsilonSearchAttack("pgd", "Linf", LinfPGDPerSample),
    EpsilonSearchAttack("adam_pgd", "Linf", LinfAdamPGDPerSample),
    EpsilonSearchAttack("apgd", "Linf", APGD, _search_defaults("fmn", 100, warm=True)),
    EpsilonSearchAttack("square", "Linf", SquareLinf, _search_defaults("fmn", 100, warm=False)),
    MinimizationAttack("fmn", "Linf", fa.LInfFMNAttack),
    BrendelBethgeAttack("bb", "Linf", fa.LinfinityBrendelBethgeAttack),
    MinimizationAttack("fmn", "L1", fa.L1FMNAttack),
    BrendelBethgeAttack("bb", "L1", fa.L1BrendelBethgeAttack),
    MinimizationAttack("ead", "L1", fa.EADAttack),
    MinimizationAttack("fmn", "L0", fa.L0FMNAttack),
    BrendelBethgeAttack("bb", "L0", fa.L0BrendelBethgeAttack),
)}


def available_attacks() -> dict[str, list[str]]:
    """{norm: [attack names]} that an attack configuration may name."""
    out: dict[str, list[str]] = {n: [] for n in NORMS}
    for norm, name in REGISTRY:
        out[norm].append(name)
    return out


def get_attack(norm: str, name: str) -> Attack:
    """The attack ``name`` of ``norm`` (a name of ``norms.NORMS``), else RobustnessConfigError listing the choices."""
    check_norm(norm, "attack_config norm", RobustnessConfigError)
    if (norm, name) not in REGISTRY:
        raise RobustnessConfigError(
            f"attack_config['attack']: {name!r} is not available for norm {norm}; choose from "
            f"{available_attacks()[norm]}"
        )
    return REGISTRY[(norm, name)]


def warm_up(norms: Sequence[str] = ("L2",)) -> dict[str, float]:
    """Compile the numba optimiser of the Brendel-Bethge attack of each norm, once per process.

    Later calls return at once. Returns {norm: compile seconds} (those of the first compile in this process).
    """
    bb = {norm: a for (norm, name), a in REGISTRY.items() if isinstance(a, BrendelBethgeAttack)}
    for norm in norms:
        if norm not in bb:
            raise RobustnessInputError(f"norms: expected some of {list(bb)}, got {norm!r}")
    return {norm: bb[norm].warm_up() for norm in norms}
