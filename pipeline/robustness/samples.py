"""Which test samples an evaluation uses: the one seeded selection, and the checks of its two config keys.

Every robustness configuration (noise, corruption, attack) holds ``n_samples`` (a positive int, or None for
the whole test set) and ``seed``; the caller selects the samples once with ``select_samples`` and passes
exactly those to the evaluation.
"""

from __future__ import annotations

import numpy as np

from pipeline.checks import is_int, positive_int

from .errors import RobustnessConfigError, RobustnessInputError

__all__ = ["select_samples", "resolve_n_samples", "resolve_seed"]


def resolve_n_samples(value, what: str) -> int | None:
    """``value`` as a positive int, or None (= every test sample); else RobustnessConfigError naming ``what``."""
    if value is None:
        return None
    return positive_int(value, f"{what} n_samples", "or None (every test sample)", error=RobustnessConfigError)


def resolve_seed(value, what: str) -> int:
    """``value`` as a non-negative int (numpy's Generators refuse negative seeds); else RobustnessConfigError."""
    if not is_int(value) or value < 0:
        raise RobustnessConfigError(f"{what} seed={value!r} must be a non-negative integer")
    return int(value)


def select_samples(n_total: int, n_samples: int | None, seed: int) -> np.ndarray:
    """Sorted (n_samples,) int64 indices of a seeded random subset of range(n_total); None = all (n_total,).

    The first n_samples of one seeded permutation, so a smaller subset is contained in a larger one.
    """
    if n_samples is None:
        return np.arange(n_total, dtype=np.int64)
    if n_samples > n_total:
        raise RobustnessInputError(
            f"n_samples={n_samples} requested but the test set holds {n_total}. "
            "Fix: lower n_samples, or use None for every test sample"
        )
    perm = np.random.default_rng(seed).permutation(n_total)
    return np.sort(perm[:n_samples]).astype(np.int64)
