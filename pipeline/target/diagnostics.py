"""Diagnostics of a target: how low-rank it is, and which simple image statistic its structure follows.

An audit of the demo found its Neural (model) target nearly rank 1: the leading eigenvector carried 38% of the
trace, the off-diagonal entries correlated 0.962 with that rank-1 part, and the axis was the images' overall
population activity, driven by the contrast of the central image window. A classifier pulled towards such a
target learns "how much contrast", not the neural representation. :func:`target_diagnostics` measures this for
any (n, n) target S (symmetric; a cosine-similarity matrix, so its trace is the number of non-zero stimuli):

- the eigenvalue spectrum lambda_1 >= lambda_2 >= ... as shares of the trace, lambda_r / tr(S) (the leading
  ``n_components``); ``top1_share`` and ``top5_share`` (the sums of the leading 1 and 5 shares);
- ``spectrum_exponent`` alpha of a power law lambda_r ~ r^-alpha: minus the least-squares slope of log lambda_r
  against log r over the ranks ``fit_ranks`` = 2 .. max(4, n // 10) (rank 1 is left out: it is the outlier
  the audit is about; the tail beyond n/10 is left out: there a finite sample's spectrum falls off a cliff),
  eigenvalues above ``EIGEN_RTOL`` * lambda_1 only (a rank-deficient target, e.g. Eq 2 on 12 contrast features,
  has a null space of rounding-level eigenvalues that say nothing about a power law); NaN with fewer than 2;
- ``r_rank1``: Pearson r of S's off-diagonal entries with those of its rank-1 part lambda_1 v_1 v_1^T (1: the
  target is rank 1 up to its diagonal);
- ``r_<name>``: r of the off-diagonal entries with each reference target of the same images (controls.py builds
  them: pixel, contrast-energy, luminance, population activity); None where a reference is None. A reference
  may be given as a function of no arguments returning the matrix: it is built when needed and dropped after,
  so only one (n, n) reference is in memory at a time (5000 images: 100 MB each).

All correlations are pipeline.oracle.similarity.offdiagonal_correlation. Cost: one partial symmetric
eigendecomposition (scipy eigh, the leading max(n_components, n // 10) pairs; 5000 images: about a minute on
two cores) and one pass over the matrix per reference.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg

from pipeline.oracle.similarity import NeuralDataError, offdiagonal_correlation

N_COMPONENTS = 50  # leading eigenvalue shares kept (TargetDiagnostics.eigenvalue_shares)
EIGEN_RTOL = 1e-6  # eigenvalues below this fraction of lambda_1 are rounding: left out of the power-law fit


def _as_target(S, name: str = "similarity") -> np.ndarray:
    S = np.asarray(S)
    if S.ndim != 2 or S.shape[0] != S.shape[1] or S.shape[0] < 2:
        raise NeuralDataError(f"'{name}': expected a square (n, n) target with n >= 2, got shape {S.shape}. "
                              "Fix: pass a similarity matrix")
    if not np.isfinite(S).all():
        raise NeuralDataError(f"'{name}': NaN or infinite entries. Fix: recompute the target")
    return S


def leading_eigen(S, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest eigenvalues of the symmetric part of S (n, n), descending (k,) float64, and their unit
    eigenvectors (n, k) float64 (column m belongs to eigenvalue m; its sign is arbitrary)."""
    S = _as_target(S)
    n = S.shape[0]
    k = int(k)
    if not 1 <= k <= n:
        raise NeuralDataError(f"'k': {k} eigencomponents of a {n} x {n} target; need 1 <= k <= {n}")
    A = np.asarray(S, np.float64)
    A = 0.5 * (A + A.T)
    values, vectors = linalg.eigh(A, subset_by_index=[n - k, n - 1], check_finite=False)
    return values[::-1].copy(), vectors[:, ::-1].copy()


def fit_ranks(n: int) -> tuple[int, int]:
    """The ranks (first, last, inclusive) the power-law exponent is fitted over: 2 .. max(4, n // 10), at most n."""
    return 2, int(min(n, max(4, n // 10)))


def power_law_exponent(eigenvalues, ranks: tuple[int, int]) -> float:
    """alpha of lambda_r ~ r^-alpha: minus the least-squares slope of log lambda_r vs log r for r in ``ranks``.

    eigenvalues: descending, eigenvalues[0] is rank 1. Only eigenvalues above EIGEN_RTOL * lambda_1 enter; NaN
    with fewer than 2 of them in the range.
    """
    lam = np.asarray(eigenvalues, np.float64)
    first, last = ranks
    r = np.arange(first, min(last, len(lam)) + 1)
    lam_r = lam[r - 1]
    keep = (lam_r > 0) & (lam_r > EIGEN_RTOL * float(lam[0]))
    if keep.sum() < 2:
        return float("nan")
    slope = np.polyfit(np.log(r[keep]), np.log(lam_r[keep]), 1)[0]
    return float(-slope)


def target_diagnostics(similarity, reference_targets: dict | None = None,
                       n_components: int = N_COMPONENTS) -> dict:
    """Spectrum and reference correlations of one target (see the module docstring).

    similarity: (n, n) target. reference_targets: {name: (n, n) reference target of the same images in the same
    order, a function of no arguments returning one, or None}. n_components: how many leading eigenvalue shares
    to return (at most n).
    Returns {'n_images': n, 'eigenvalue_shares': (min(n_components, n),) float32, 'top1_share', 'top5_share',
    'spectrum_exponent', 'fit_ranks': (first, last), 'trace', 'r_rank1', and 'r_<name>' per reference
    (float, or None where the reference is None)}.
    """
    S = _as_target(similarity)
    n = S.shape[0]
    trace = float(np.trace(S, dtype=np.float64))
    if not trace > 0:
        raise NeuralDataError(f"'similarity': its trace is {trace:g}; a similarity target has a positive diagonal "
                              "(1 per stimulus). Fix: pass a similarity matrix, not a distance or a difference")
    if int(n_components) < 1:
        raise NeuralDataError(f"'n_components': {n_components}; must be >= 1")
    ranks = fit_ranks(n)
    m = min(n, max(int(n_components), 5, ranks[1]))
    values, vectors = leading_eigen(S, m)
    shares = values / trace
    u1 = (np.sqrt(max(values[0], 0.0)) * vectors[:, 0]).astype(np.float32)
    rank1 = np.outer(u1, u1)  # lambda_1 v_1 v_1^T, float32 (5000 images: 100 MB)
    out = {"n_images": n, "eigenvalue_shares": shares[:int(n_components)].astype(np.float32),
           "top1_share": float(shares[0]), "top5_share": float(shares[:5].sum()),
           "spectrum_exponent": power_law_exponent(values, ranks), "fit_ranks": ranks, "trace": trace,
           "r_rank1": offdiagonal_correlation(S, rank1)}
    for name, reference in (reference_targets or {}).items():
        if callable(reference):
            reference = reference()
        if reference is None:
            out[f"r_{name}"] = None
            continue
        reference = _as_target(reference, f"reference_targets[{name!r}]")
        if reference.shape != S.shape:
            raise NeuralDataError(f"'reference_targets[{name!r}]': shape {reference.shape}, the target {S.shape}. "
                                  "Fix: build the reference on the target's images, in its order")
        out[f"r_{name}"] = offdiagonal_correlation(S, reference)
    return out
