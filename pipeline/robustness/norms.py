"""The perturbation norms: their names and the one definition of a perturbation's size in each."""

from __future__ import annotations

import numpy as np

from .errors import RobustnessInputError

__all__ = ["NORMS", "L0_TOLERANCE", "check_norm", "perturbation_norm"]

NORMS: tuple[str, ...] = ("L2", "Linf", "L1", "L0")
L0_TOLERANCE = 1e-4  # |change| at or below this is snapped to 0 for L0 (Foolbox's L0 Brendel-Bethge uses 1e-4)


def check_norm(norm, what: str = "norm", error: type[Exception] = RobustnessInputError) -> str:
    """``norm`` if it is one of ``NORMS``, else ``error`` naming ``what`` and the valid names."""
    if norm not in NORMS:
        raise error(f"{what}={norm!r} is not a norm. Fix: use one of {list(NORMS)}")
    return str(norm)


def perturbation_norm(delta: np.ndarray, norm: str) -> np.ndarray:
    """Per-sample size of perturbations ``delta`` (N, ...) in ``norm``: (N,) float64.

    L0 counts pixels with |delta| > L0_TOLERANCE; the others are the usual L2, Linf, L1 norms of the
    flattened perturbation in [0, 1] pixel units.
    """
    check_norm(norm)
    d = np.asarray(delta, dtype=np.float64).reshape(len(delta), -1)
    if norm == "L2":
        return np.sqrt(np.einsum("ij,ij->i", d, d))
    if norm == "Linf":
        return np.abs(d).max(axis=1)
    if norm == "L1":
        return np.abs(d).sum(axis=1)
    return (np.abs(d) > L0_TOLERANCE).sum(axis=1).astype(np.float64)
