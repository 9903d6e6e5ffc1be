"""Robustness scores from per-sample minimal perturbations (Schott et al. 2018; Li et al. 2019, Fig 5, 7).

A distance array holds, per test sample, the smallest verified adversarial perturbation in one norm:
0 for a sample the model misclassifies already, +inf where no attack flipped the label. The per-sample
minimum over attacks is the sample's robustness; its median is the paper's score (higher is more robust).

Works on anything with ``indices`` (n,), ``distances`` (n,) and ``norm`` attributes (an
``attacks.AttackResult``), so this module does not import Foolbox.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .errors import RobustnessInputError

__all__ = [
    "ROBUSTBENCH_EPSILONS",
    "combine_minimal",
    "median_perturbation",
    "robust_accuracy",
    "robustbench_accuracy",
    "join_results",
    "masking_check",
    "minimal_over_attacks",
]

# RobustBench's CIFAR-10 thresholds, in [0, 1] pixel units
ROBUSTBENCH_EPSILONS: dict[str, float] = {"Linf": 8 / 255, "L2": 0.5}


def _check_distances(d: Any, name: str = "distances") -> np.ndarray:
    d = np.asarray(d, dtype=np.float64)
    if d.size == 0:
        raise RobustnessInputError(f"{name}: empty")
    if np.isnan(d).any():
        raise RobustnessInputError(f"{name}: NaN distances; a failed attack must be +inf, not NaN")
    if (d < 0).any():
        raise RobustnessInputError(f"{name}: negative distances")
    return d


def combine_minimal(distances_per_attack: Any) -> np.ndarray:
    """Per-sample minimum over attacks.

    Args:
        distances_per_attack: (n_attacks, n_samples), rows aligned on the same samples (see ``join_results``).
    Returns:
        (n_samples,) float64; +inf only where every attack failed.
    """
    d = _check_distances(distances_per_attack, "distances_per_attack")
    if d.ndim != 2:
        raise RobustnessInputError(
            f"distances_per_attack: expected shape (n_attacks, n_samples), got {d.shape}; stack the rows"
        )
    return d.min(axis=0)


def median_perturbation(d: Any) -> float:
    """Median over samples of the minimal perturbation (+inf if more than half were never flipped)."""
    d = _check_distances(d)
    if d.ndim != 1:
        raise RobustnessInputError(f"distances: expected shape (n_samples,), got {d.shape}")
    return float(np.median(d))


def robust_accuracy(d: Any, eps: float) -> float:
    """Fraction of samples whose minimal perturbation exceeds ``eps`` (accuracy under an eps-bounded attack).

    A sample with distance 0 (misclassified when clean) is never robust; a sample with d == eps is not
    robust either (an adversarial of size eps exists).
    """
    d = _check_distances(d)
    if not np.isfinite(eps) or eps < 0:
        raise RobustnessInputError(f"eps: expected a finite threshold >= 0, got {eps!r}")
    return float(np.mean(d > eps))


def robustbench_accuracy(d: Any, norm: str) -> float:
    """``robust_accuracy`` at RobustBench's threshold for ``norm`` (Linf 8/255, L2 0.5)."""
    if norm not in ROBUSTBENCH_EPSILONS:
        raise RobustnessInputError(
            f"norm: RobustBench thresholds exist for {sorted(ROBUSTBENCH_EPSILONS)}, not {norm!r}"
        )
    return robust_accuracy(d, ROBUSTBENCH_EPSILONS[norm])


def join_results(results: Sequence[Any], subsets: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Align attack results on the same samples.

    Args:
        results: AttackResult-like objects (``indices`` (n,), ``distances`` (n,), ``norm``), one norm.
        subsets: also accept results on a subset of the samples of the largest one (an expensive check, e.g.
            a gradient-free attack, run on fewer samples with the same seed: ``samples.select_samples`` nests
            them); such a result is +inf on the samples it did not attack.
    Returns:
        (indices (n,) sorted, distances (n_attacks, n)) with every row in the order of ``indices``.
    Raises:
        RobustnessInputError if the results differ in norm or in their sets of samples (beyond subsets).
    """
    results = list(results)
    if not results:
        raise RobustnessInputError("results: need at least one attack result")
    norms = {r.norm for r in results}
    if len(norms) > 1:
        raise RobustnessInputError(f"results: mix norms {sorted(norms)}; join the results of one norm at a time")
    first = 0 if not subsets else int(np.argmax([len(np.asarray(r.indices)) for r in results]))
    ref = np.sort(np.asarray(results[first].indices))
    rows = []
    for k, r in enumerate(results):
        idx = np.asarray(r.indices)
        d = _check_distances(r.distances, f"results[{k}].distances")
        if idx.shape != d.shape or len(np.unique(idx)) != len(idx):
            raise RobustnessInputError(f"results[{k}]: indices must be unique and match distances in length")
        order = np.argsort(idx)
        if np.array_equal(idx[order], ref):
            rows.append(d[order])
            continue
        if subsets and np.isin(idx, ref).all():
            row = np.full(len(ref), np.inf)
            row[np.searchsorted(ref, idx)] = d
            rows.append(row)
            continue
        raise RobustnessInputError(
            f"results[{k}]: attacked other samples than results[{first}] ({len(idx)} vs {len(ref)} samples, "
            f"{len(np.setdiff1d(idx, ref))} not among them); run every attack with the same n_samples and seed"
            + (" (or a smaller n_samples with the same seed, for a subset)" if subsets else "")
        )
    return ref, np.stack(rows)


def minimal_over_attacks(results: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """(indices (n,), per-sample minimal distance (n,)) over the attacks of one norm.

    The samples are those of the result with the most; a result on a subset of them (same seed, smaller
    n_samples: an expensive check such as a gradient-free attack) takes part on its samples only.
    """
    idx, d = join_results(results, subsets=True)
    return idx, combine_minimal(d)


def masking_check(gradient_results: Sequence[Any], free_results: Sequence[Any], rtol: float = 0.005
                  ) -> dict[str, float]:
    """How often gradient-free attacks beat the gradient attacks: the gradient-masking check.

    Args:
        gradient_results, free_results: AttackResult-like objects of one norm; the free ones (Square,
            HopSkipJump) may cover a subset of the gradient ones' samples.
        rtol: a free attack "beats" on a sample when its distance is below (1 - rtol) * the gradient minimum.
    Returns:
        {'n': samples both attacked (and the model classifies correctly), 'beaten': share of them where the free
        attacks found a smaller perturbation, 'median_ratio': median free / gradient distance}. A share of more
        than a few percent means the gradient attacks' scores overstate robustness (masked gradients).
    """
    idx_g, g = minimal_over_attacks(gradient_results)
    idx_f, f = minimal_over_attacks(free_results)
    common, ig, jf = np.intersect1d(idx_g, idx_f, return_indices=True)
    g, f = g[ig], f[jf]
    keep = (g > 0) & np.isfinite(g)
    g, f = g[keep], f[keep]
    if len(g) == 0:
        return {"n": 0, "beaten": 0.0, "median_ratio": float("nan")}
    return {"n": int(len(g)), "beaten": float(np.mean(f < (1 - rtol) * g)), "median_ratio": float(np.median(f / g))}
