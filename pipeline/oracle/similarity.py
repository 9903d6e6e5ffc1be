"""Representational similarity of a population (Eq 2, 3, 6 of paper/equations.md) and its average over scans.

Shapes: ``n_stimuli`` stimuli (images or trials), ``n_neurons`` neurons. Responses are in the recording's
units (e.g. deconvolved fluorescence); similarities are dimensionless cosines in [-1, 1], float32.

Eq 2, for stimuli i, j of one population with signal-to-noise weights w (Eq 1):

    r~_ai = w_a r_ai,  rbar = mean_i r~_i  (per neuron, across stimuli),
    u_i = (r~_i - rbar) / ||r~_i - rbar||,  S_ij = u_i . u_j   (S = U U^T)

Zero vectors: a stimulus whose centred, weighted population vector is zero (it equals the population mean,
e.g. every neuron silent or constant) has no direction. Its unit vector is defined as the zero vector, so
its row and column of S are 0, its diagonal entry included. Nothing here ever returns nan.

Scale (paper: 8 scans x 8000 neurons x 5000 images -> one 5000 x 5000 target): use
:class:`SimilarityAccumulator`, which holds one scan's working buffer and one triangle of the running sum,
and per scan does the centring/weighting/normalising in float32 in place plus a single BLAS ``ssyrk``.
"""

from __future__ import annotations

from pipeline.errors import NeuralRegError

from dataclasses import dataclass
from typing import Iterable

import numpy as np
from scipy.linalg import blas

# A centred population vector shorter than this fraction of the longest one is treated as zero: it is the
# stimulus equal to the population mean up to float32 rounding, whose "direction" would be rounding noise.
ZERO_NORM_RTOL = 1e-6
# Rows per block when copying one triangle of a large symmetric matrix onto the other.
_SYMMETRISE_BLOCK = 512


class NeuralDataError(NeuralRegError):
    """Bad input to the neural statistics: the message names the field and the fix."""


# ----------------------------------------------------------------------------------------------- checks

def as_responses(x, name: str = "responses", min_stimuli: int = 2) -> np.ndarray:
    """Check a (n_stimuli, n_neurons) array: 2-D, non-empty, finite. Returns it (no copy if possible)."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise NeuralDataError(f"'{name}': expected a 2-D (n_stimuli, n_neurons) array, got shape {x.shape}. "
                              "Fix: stack one population vector per stimulus as a row")
    if x.shape[0] < min_stimuli or x.shape[1] == 0:
        raise NeuralDataError(f"'{name}': shape {x.shape} has too few stimuli or no neurons; need at least "
                              f"{min_stimuli} stimuli and 1 neuron. Fix: pass the full stimulus set")
    if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise NeuralDataError(f"'{name}': dtype {x.dtype} is not real-valued. Fix: pass float responses")
    if not np.isfinite(x).all():
        raise NeuralDataError(f"'{name}': {int((~np.isfinite(x)).sum())} NaN or infinite values. "
                              "Fix: drop or repair those trials/neurons first")
    return x


def as_weights(w, n_neurons: int, name: str = "snr_weight") -> np.ndarray:
    """Check per-neuron weights: shape (n_neurons,), finite. Returns float32 (n_neurons,)."""
    w = np.asarray(w)
    if w.shape != (n_neurons,):
        raise NeuralDataError(f"'{name}': expected shape ({n_neurons},) (one per neuron), got {w.shape}. "
                              "Fix: pass the weights of exactly the neurons in the responses, in column order")
    if not np.isfinite(w).all():
        raise NeuralDataError(f"'{name}': {int((~np.isfinite(w)).sum())} NaN or infinite weights. "
                              "Fix: set degenerate neurons' weight to 0 (oracle_stats does) instead of NaN")
    return w.astype(np.float32, copy=False)


# ----------------------------------------------------------------------------------------------- Eq 2

def unit_vectors(responses, weights=None, out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """First half of Eq 2: the centred, weighted, normalised population vectors u_i.

    responses: (n_stimuli, n_neurons) real. weights: (n_neurons,) or None (all 1).
    out: optional float32 C-contiguous (n_stimuli, n_neurons) buffer to write into; it may be
    ``responses`` itself (then the responses are overwritten, no extra memory).
    Returns U (n_stimuli, n_neurons) float32 with unit (or zero) rows, and nonzero (n_stimuli,) bool:
    False for stimuli whose centred vector is zero (their row of U is 0).
    """
    r = as_responses(responses)
    w = None if weights is None else as_weights(weights, r.shape[1])  # checked before anything is written
    if out is None:
        out = np.empty(r.shape, dtype=np.float32)
    elif out.shape != r.shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise NeuralDataError(f"'out': expected a C-contiguous float32 buffer of shape {r.shape}, got "
                              f"{out.dtype} {out.shape}. Fix: allocate np.empty(shape, np.float32)")
    # The mean is accumulated in float64: float32 sums over thousands of stimuli lose digits.
    mean = r.mean(axis=0, dtype=np.float64).astype(np.float32)
    np.subtract(r, mean, out=out, casting="same_kind")
    if w is not None:
        out *= w
    sq = np.einsum("ij,ij->i", out, out)  # squared row norms, (n_stimuli,) float32
    longest = float(sq.max())
    nonzero = sq > (ZERO_NORM_RTOL ** 2) * longest if longest > 0 else np.zeros(len(sq), dtype=bool)
    inv_norm = np.zeros(len(sq), dtype=np.float32)
    inv_norm[nonzero] = 1.0 / np.sqrt(sq[nonzero])
    out *= inv_norm[:, None]
    return out, nonzero


def _finish(S: np.ndarray, diagonal: np.ndarray) -> np.ndarray:
    """Clip rounding excursions to [-1, 1] in place and set the diagonal exactly. Returns S."""
    np.clip(S, -1.0, 1.0, out=S)
    np.fill_diagonal(S, diagonal)
    return S


def population_similarity(responses, snr_weight=None) -> np.ndarray:
    """Eq 2: (n_stimuli, n_neurons) responses -> (n_stimuli, n_stimuli) float32 S = U U^T.

    Centring is per neuron across stimuli; neurons are scaled by ``snr_weight`` (n_neurons,) if given.
    Symmetric, within [-1, 1], diagonal 1 (0 for a zero-vector stimulus, see the module docstring).
    """
    U, nonzero = unit_vectors(responses, snr_weight)
    S = U @ U.T  # numpy hands a product with its own transpose to BLAS syrk (one triangle, then copied)
    return _finish(S, nonzero.astype(np.float32))


def model_similarity(predicted, snr_weight, v) -> np.ndarray:
    """Eq 6: similarity of a predictive model's responses, each neuron scaled by w_a * max(v_a, 0).

    predicted: (n_images, n_neurons) predicted responses (behaviour held at its mean).
    snr_weight: (n_neurons,) w of Eq 1; v: (n_neurons,) held-out prediction correlation.
    A neuron the model predicts worse than chance (v < 0) carries no denoised signal, so it gets weight 0
    (not |v|: each neuron's scale enters S squared, so its sign alone would not drop it).
    Returns (n_images, n_images) float32.
    """
    r = as_responses(predicted, "predicted")
    w = as_weights(snr_weight, r.shape[1], "snr_weight")
    v = as_weights(v, r.shape[1], "v")
    return population_similarity(r, w * np.clip(v, 0.0, None))


def responses_per_image(image_ids, responses) -> tuple[np.ndarray, np.ndarray]:
    """Single-trial responses arranged for Eq 2: one row per distinct image, sorted by image id.

    image_ids: (n_trials,) the image of each trial; responses: (n_trials, n_neurons). An image shown once keeps
    its single trial; an image shown on several trials gets the mean of those trials (so it is one stimulus of
    Eq 2, not several). Returns (ids (n_images,), (n_images, n_neurons) float32).
    """
    image_ids = np.asarray(image_ids)
    r = np.asarray(responses)
    if r.ndim != 2 or image_ids.shape != (r.shape[0],):
        raise NeuralDataError(f"responses_per_image: 'image_ids' {image_ids.shape} must give one image per row of "
                              f"'responses' {r.shape}. Fix: pass (n_trials,) ids and (n_trials, n_neurons) responses")
    ids, inverse = np.unique(image_ids, return_inverse=True)
    if len(ids) == len(image_ids):
        return ids, np.asarray(r[np.argsort(image_ids, kind="stable")], np.float32)
    sums = np.zeros((len(ids), r.shape[1]), np.float64)
    np.add.at(sums, inverse, r)
    return ids, (sums / np.bincount(inverse)[:, None]).astype(np.float32)


def pixel_similarity(images) -> np.ndarray:
    """The 'pixel' control: Eq 2 on flattened pixels. images: (n_images, H, W) or (n_images, H*W)."""
    x = np.asarray(images)
    if x.ndim < 2:
        raise NeuralDataError(f"'images': expected (n_images, H, W), got shape {x.shape}. "
                              "Fix: stack one image per row")
    return population_similarity(x.reshape(len(x), -1))


# ----------------------------------------------------------------------------------------------- Eq 3

@dataclass(frozen=True)
class TrialGroups:
    """Trials grouped by the image they showed.

    image_ids (n_img,) sorted unique ids; inverse (n_trials,) row of ``image_ids`` per trial;
    counts (n_img,) repeats per image; order (n_trials,) trial indices sorted by image (stable);
    starts (n_img,) first position in ``order`` of each image's trials.
    """
    image_ids: np.ndarray
    inverse: np.ndarray
    counts: np.ndarray
    order: np.ndarray
    starts: np.ndarray

    def sum(self, x: np.ndarray) -> np.ndarray:
        """(n_trials, ...) -> (n_img, ...): the sum over each image's trials (vectorised, no loop)."""
        return np.add.reduceat(x[self.order], self.starts, axis=0)


def group_trials(trial_image_ids, n_trials: int | None = None, min_repeats: int = 2) -> TrialGroups:
    """Group oracle trials by image id; every image needs at least ``min_repeats`` trials."""
    ids = np.asarray(trial_image_ids)
    if ids.ndim != 1 or (n_trials is not None and len(ids) != n_trials):
        raise NeuralDataError(f"'trial_image_ids': expected shape ({n_trials},) (one image id per trial), "
                              f"got {ids.shape}. Fix: pass the image id of every row of the responses")
    image_ids, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    few = image_ids[counts < min_repeats]
    if few.size:
        raise NeuralDataError(f"'trial_image_ids': images {few[:5].tolist()} have fewer than {min_repeats} "
                              "repeats. Fix: pass only oracle trials (images shown at least twice)")
    order = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.intp)
    return TrialGroups(image_ids, inverse, counts, order, starts)


def oracle_similarity_from_units(U: np.ndarray, groups: TrialGroups) -> np.ndarray:
    """Eq 3 from trial unit vectors U (n_trials, n_neurons): (n_img, n_img) float32 mean over repeat pairs.

    With V_i = sum_t u_it: sum_{t,t'} u_it . u_jt' = V_i . V_j; on the diagonal the t == t' terms
    sum_t ||u_it||^2 are removed and the mean is over n_i (n_i - 1) ordered pairs.
    """
    V = groups.sum(U.astype(np.float64))  # (n_img, n_neurons); float64: small, and sums of cancelling terms
    pair_sums = V @ V.T
    self_terms = groups.sum(np.einsum("ij,ij->i", U, U, dtype=np.float64))
    n = groups.counts.astype(np.float64)
    S = pair_sums / np.outer(n, n)
    np.fill_diagonal(S, (np.diag(pair_sums) - self_terms) / (n * (n - 1)))
    return np.clip(S, -1.0, 1.0).astype(np.float32)


def oracle_similarity(responses, trial_image_ids, snr_weight=None) -> tuple[np.ndarray, np.ndarray]:
    """Eq 3: oracle similarity of repeated images.

    responses: (n_trials, n_neurons) oracle trials; trial_image_ids: (n_trials,) their image ids
    (repeat counts may differ between images, at least 2 each); snr_weight: (n_neurons,) or None.
    Every trial is a stimulus of Eq 2 (centring across all oracle trials); S^oracle_ij is the mean of
    S(i_t, j_t') over repeat pairs, excluding t == t' when i == j, so the diagonal is the
    repeat-to-repeat reliability (1 only for noise-free repeats).
    Returns (S (n_img, n_img) float32, image_ids (n_img,) sorted ascending, the order of S's rows).
    """
    r = as_responses(responses)
    groups = group_trials(trial_image_ids, r.shape[0])
    U, _ = unit_vectors(r, snr_weight)
    return oracle_similarity_from_units(U, groups), groups.image_ids


# ----------------------------------------------------------------------------------------------- means

def mean_similarity(matrices: Iterable[np.ndarray]) -> np.ndarray:
    """Mean of similarity matrices (an iterable of (n, n) or an (n_scans, n, n) array) -> (n, n) float32.

    Streams: holds one running sum, not the whole stack (unless the caller passes a stack).
    """
    total, count = None, 0
    for S in matrices:
        S = np.asarray(S)
        if S.ndim != 2 or S.shape[0] != S.shape[1]:
            raise NeuralDataError(f"'matrices': entry {count} has shape {S.shape}, expected square (n, n). "
                                  "Fix: pass similarity matrices over the same stimuli")
        if total is None:
            total = np.zeros(S.shape, dtype=np.float32)
        elif S.shape != total.shape:
            raise NeuralDataError(f"'matrices': entry {count} has shape {S.shape}, the first {total.shape}. "
                                  "Fix: all matrices must index the same stimuli in the same order")
        np.add(total, S, out=total, casting="same_kind")
        count += 1
    if count == 0:
        raise NeuralDataError("'matrices': empty. Fix: pass at least one similarity matrix")
    total /= count
    return total


def symmetrise_from_lower(a: np.ndarray) -> np.ndarray:
    """Copy the lower triangle of square C-ordered ``a`` onto its upper triangle, in place, in row blocks
    (numpy has no in-place triangle copy; np.triu/np.tril would allocate full-size temporaries)."""
    n = a.shape[0]
    for b0 in range(0, n, _SYMMETRISE_BLOCK):
        b1 = min(b0 + _SYMMETRISE_BLOCK, n)
        a[b0:b1, b1:] = a[b1:, b0:b1].T
        block = a[b0:b1, b0:b1]
        upper = np.triu_indices(b1 - b0, 1)
        block[upper] = block.T[upper]
    return a


class SimilarityAccumulator:
    """Streaming mean of Eq 2 similarity matrices over scans, over the same n_stimuli stimuli.

    Memory: one (n_stimuli, n_stimuli) float32 running sum of which only the upper triangle is computed,
    plus one (n_stimuli, n_neurons) float32 working buffer reused across scans of equal neuron count
    (none with ``overwrite=True``). Per scan: centring, weighting and normalising in place in float32,
    then a single BLAS ssyrk (C += U U^T, one triangle: half the flops of a general product).

        acc = SimilarityAccumulator(n_images)
        for responses, w in scans:       # (n_images, n_neurons_s), (n_neurons_s,)
            acc.add(responses, w)
        target = acc.mean()              # (n_images, n_images) float32

    The diagonal of the mean is 1, or the fraction of scans in which the stimulus was not a zero vector.
    """

    def __init__(self, n_stimuli: int):
        if int(n_stimuli) < 2:
            raise NeuralDataError(f"'n_stimuli': {n_stimuli}; a similarity needs at least 2 stimuli")
        self.n_stimuli = int(n_stimuli)
        # Fortran order: ssyrk updates it in place; its transpose is a C-ordered view for mean().
        self._sum = np.zeros((self.n_stimuli, self.n_stimuli), dtype=np.float32, order="F")
        self._diagonal = np.zeros(self.n_stimuli, dtype=np.float64)
        self._work: np.ndarray | None = None
        self.n_added = 0

    def _check_rows(self, n_rows: int, name: str):
        if n_rows != self.n_stimuli:
            raise NeuralDataError(f"'{name}': has {n_rows} stimuli (rows), the accumulator {self.n_stimuli}. "
                                  "Fix: pass every scan's responses to the same stimuli in the same order")

    def add(self, responses, weights=None, overwrite: bool = False) -> "SimilarityAccumulator":
        """Add one scan. responses: (n_stimuli, n_neurons); weights: (n_neurons,) or None.

        overwrite=True lets a float32 C-contiguous ``responses`` be used as the working buffer
        (it is destroyed); otherwise the responses are left untouched.
        """
        r = np.asarray(responses)  # values are validated by unit_vectors
        if r.ndim != 2:
            as_responses(r)  # raises the shape error
        self._check_rows(r.shape[0], "responses")
        if overwrite and r.dtype == np.float32 and r.flags.c_contiguous and r.flags.writeable:
            out = r
        else:
            if self._work is None or self._work.shape != r.shape:
                self._work = None  # free the old buffer before allocating the new one
                self._work = np.empty(r.shape, dtype=np.float32)
            out = self._work
        U, nonzero = unit_vectors(r, weights, out=out)
        # ssyrk on U^T (an F-ordered view of C-ordered U, so no copy) with trans=1 computes U U^T;
        # lower=0: the upper triangle only; beta=1 with overwrite_c accumulates into _sum in place.
        self._sum = blas.ssyrk(1.0, U.T, beta=1.0, c=self._sum, trans=1, lower=0, overwrite_c=1)
        self._diagonal += nonzero
        self.n_added += 1
        return self

    def add_similarity(self, S) -> "SimilarityAccumulator":
        """Add an already computed (n_stimuli, n_stimuli) symmetric similarity matrix."""
        S = np.asarray(S)
        if S.shape != (self.n_stimuli, self.n_stimuli):
            raise NeuralDataError(f"'S': shape {S.shape}, expected ({self.n_stimuli}, {self.n_stimuli}). "
                                  "Fix: pass a similarity over the accumulator's stimuli")
        if not np.isfinite(S).all():
            raise NeuralDataError("'S': NaN or infinite entries. Fix: recompute the similarity")
        np.add(self._sum, S, out=self._sum, casting="same_kind")
        self._diagonal += np.diag(S)
        self.n_added += 1
        return self

    def release_buffer(self):
        """Free the working buffer (it is reallocated by the next add)."""
        self._work = None

    def mean(self) -> np.ndarray:
        """(n_stimuli, n_stimuli) float32 C-ordered mean similarity; symmetric, within [-1, 1]."""
        if self.n_added == 0:
            raise NeuralDataError("'SimilarityAccumulator': nothing added. Fix: call add() for each scan first")
        # The upper triangle of the F-ordered sum is the lower triangle of its C-ordered transpose.
        S = np.multiply(self._sum.T, np.float32(1.0 / self.n_added))
        symmetrise_from_lower(S)
        return _finish(S, (self._diagonal / self.n_added).astype(np.float32))


def offdiagonal_correlation(x: np.ndarray, y: np.ndarray, block: int = 1024) -> float:
    """Pearson r between the off-diagonal entries of two (n, n) matrices (all n(n-1) of them); NaN if either
    has constant off-diagonal entries (no correlation is defined then, and 0 would read as a measurement).

    For symmetric matrices this equals r over the upper triangle. Accumulated in float64 row blocks, so no
    n^2 float64 copy is made (5000 x 5000: 200 MB per copy). The one definition used by the report and by
    BrainLikeness.
    """
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 2 or x.shape[0] != x.shape[1] or x.shape != y.shape:
        raise NeuralDataError(f"offdiagonal_correlation: expected two (n, n) matrices of one shape, got {x.shape} "
                              f"and {y.shape}")
    n = x.shape[0]
    if n < 2:
        return float("nan")
    m = np.zeros(5)
    for start in range(0, n, block):  # row blocks, not pairs
        xb = x[start:start + block].astype(np.float64)
        yb = y[start:start + block].astype(np.float64)
        rows = np.arange(xb.shape[0])
        xb[rows, start + rows] = 0.0
        yb[rows, start + rows] = 0.0
        m += (xb.sum(), yb.sum(), np.einsum("ij,ij->", xb, xb), np.einsum("ij,ij->", yb, yb),
              np.einsum("ij,ij->", xb, yb))
    count = n * (n - 1)
    mx, my = m[0] / count, m[1] / count
    vx, vy, cxy = m[2] / count - mx * mx, m[3] / count - my * my, m[4] / count - mx * my
    # constant up to float rounding (relative to the mean square), or exactly zero
    if vx <= 1e-12 * m[2] / count or vy <= 1e-12 * m[3] / count:
        return float("nan")
    return float(cxy / np.sqrt(vx * vy))


def single_repeat_similarity(responses, trial_image_ids, snr_weight=None, repeat: int = 0
                             ) -> tuple[np.ndarray, np.ndarray]:
    """Eq 2 on ONE repeat of each repeated (oracle) image: the single-trial similarity over the oracle images.

    responses: (n_trials, n_neurons) oracle trials; trial_image_ids: (n_trials,) their image ids; snr_weight:
    (n_neurons,) or None; repeat: which repeat of each image (0 = its first trial in row order; an image with
    fewer repeats than ``repeat + 1`` is an error). This is S^trial of the paper's Fig 1D, on the images of
    S^oracle (Eq 3), so the two compare entry by entry.
    Returns (S (n_img, n_img) float32, image_ids (n_img,) sorted ascending, the order of S's rows).
    """
    r = as_responses(responses)
    groups = group_trials(trial_image_ids, r.shape[0], min_repeats=1)
    repeat = int(repeat)
    if repeat < 0 or (groups.counts <= repeat).any():
        raise NeuralDataError(f"'repeat': {repeat}, but some images have only {int(groups.counts.min())} "
                              "repeat(s). Fix: pass 0 <= repeat < the smallest repeat count")
    rows = groups.order[groups.starts + repeat]  # the trial of each image (sorted ids) at that repeat
    return population_similarity(r[rows], snr_weight), groups.image_ids
