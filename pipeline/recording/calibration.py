"""Calibration of recordings against what is measured in mouse V1: eigenspectra, reliability, Fig 1D.

Three kinds of numbers, each computable from a :class:`~pipeline.recording.scan_data.ScanData` alone:

- the eigenspectrum of the stimulus-driven population response and its power-law exponent alpha
  (lambda_k ~ k^-alpha). Mouse V1 responses to natural images have alpha ~ 1.04 (Stringer, Pachitariu,
  Steinmetz, Carandini & Harris 2019, Nature 571: 361, cross-validated PCA over 2800 images, ~10^4 neurons);
- the leave-one-out oracle correlation of each neuron (pipeline.oracle.statistics.oracle_correlation);
  real V1 in the paper's lab: median about 0.3-0.5 with a wide spread;
- the paper's Fig 1D numbers that need no predictor: the correlation of single-trial similarity with the
  oracle similarity (Eq 2 vs Eq 3) over the oracle images, r = 0.39 in the paper. The model-vs-data
  r = 0.73 needs a trained predictor: :func:`fig1d_model_r` computes it from the two matrices.

Shapes: ``responses`` (n_stimuli, n_neurons); eigenvalues (n_components,) in squared response units,
descending; ranks are 1-based (rank 1 = leading component).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from pipeline.oracle.similarity import (NeuralDataError, as_responses, offdiagonal_correlation, oracle_similarity,
                                        single_repeat_similarity)
from pipeline.oracle.statistics import oracle_stats, repeat_fluctuations

__all__ = ["NeuralDataError", "STRINGER_2019_EXPONENT", "PAPER_TRIAL_VS_ORACLE_R", "PAPER_MODEL_VS_DATA_R",
           "MIN_FIT_RANK", "eigenspectrum", "cvpca", "fit_rank_range", "powerlaw_exponent", "leading_share",
           "trial_vs_oracle_r", "fig1d_model_r", "scan_calibration", "calibration_summary"]

STRINGER_2019_EXPONENT = 1.04  # mouse V1, natural images, cvPCA (Stringer et al. 2019, Fig 2)
PAPER_TRIAL_VS_ORACLE_R = 0.39  # Fig 1D: single-trial vs oracle similarity
PAPER_MODEL_VS_DATA_R = 0.73  # Fig 1D: model (Eq 6) vs oracle (Eq 3) similarity
# The power law is fitted from this rank on: the first ~10 components of V1 and of model populations carry
# the stimulus' luminance and contrast (and, for cvPCA, sit above the line in Stringer et al. 2019 too),
# so they are left out of the exponent, as Stringer et al. fit from rank 11.
MIN_FIT_RANK = 10


def _centred(responses, name: str) -> np.ndarray:
    r = as_responses(responses, name, min_stimuli=3).astype(np.float64)
    return r - r.mean(axis=0)


def eigenspectrum(responses, standardize: bool = False) -> np.ndarray:
    """Plain PCA: eigenvalues of the neurons' covariance over stimuli, descending.

    responses: (n_stimuli, n_neurons), e.g. noise-free rates (one row per image), so that the
    spectrum is of the stimulus-driven (signal) covariance. standardize: divide each neuron by its std
    (ddof 1) first: the spectrum of the correlation matrix, summing to the number of non-constant
    neurons (constant ones get weight 0).
    Returns (min(n_stimuli - 1, n_neurons),) float64, variance along each principal component
    (ddof 1), >= 0 up to rounding.
    """
    x = _centred(responses, "responses")
    if standardize:
        sd = x.std(axis=0, ddof=1)
        x = np.divide(x, sd, out=np.zeros_like(x), where=sd > 0)
    s = np.linalg.svd(x, compute_uv=False)
    k = min(x.shape[0] - 1, x.shape[1])
    return s[:k] ** 2 / (x.shape[0] - 1)


def cvpca(responses_rep1, responses_rep2) -> np.ndarray:
    """Cross-validated PCA (Stringer et al. 2019): the signal variance along each principal component.

    responses_rep1, responses_rep2: (n_stimuli, n_neurons), the responses to the same stimuli on two
    repeats (same row and column order). The principal axes come from repeat 1; the k-th eigenvalue is
    the covariance over stimuli of the projections of repeat 1 and of repeat 2 on the k-th axis. Noise
    independent across repeats averages out of that covariance, so the estimate is unbiased for the
    stimulus-driven variance along the axis (it can be slightly negative where the signal is ~0).
    Returns (min(n_stimuli - 1, n_neurons),) float64, ordered by repeat 1's variance (so nearly,
    not strictly, descending).
    """
    a = _centred(responses_rep1, "responses_rep1")
    b = _centred(responses_rep2, "responses_rep2")
    if a.shape != b.shape:
        raise NeuralDataError(f"cvpca: 'responses_rep2' has shape {b.shape}, 'responses_rep1' {a.shape}. "
                              "Fix: pass the two repeats of the same stimuli and neurons in the same order")
    _, _, vt = np.linalg.svd(a, full_matrices=False)
    k = min(a.shape[0] - 1, a.shape[1])
    pa, pb = a @ vt[:k].T, b @ vt[:k].T  # (n_stimuli, k) projections
    return (pa * pb).sum(axis=0) / (a.shape[0] - 1)


def fit_rank_range(n_components: int, low: int = MIN_FIT_RANK) -> tuple[int, int]:
    """The default ranks (1-based, inclusive) of the power-law fit: ``low`` .. n_components // 4.

    n_components is min(n_stimuli, n_neurons) (what the spectrum can resolve); the top quarter is left
    out because the tail of an estimated spectrum drops below the power law as the sample runs out
    (finite stimuli and neurons). 600 neurons x 1500 images: ranks 10..150.
    """
    high = int(n_components) // 4
    if high < 2 * low:
        raise NeuralDataError(f"fit_rank_range: {n_components} components give ranks {low}..{high}, less than "
                              f"a factor 2. Fix: use at least {8 * low} stimuli and neurons, or pass 'ranks'")
    return int(low), high


def powerlaw_exponent(eigenvalues, ranks: tuple[int, int] | None = None) -> float:
    """alpha of lambda_k ~ k^-alpha: least-squares slope of log eigenvalue on log rank, negated.

    eigenvalues: (n_components,) in rank order (rank 1 first), e.g. from :func:`eigenspectrum` or
    :func:`cvpca`. ranks: (first, last) 1-based inclusive ranks to fit; None means
    :func:`fit_rank_range` of len(eigenvalues). Every rank in the range counts once (as in Stringer et
    al.'s code, so higher ranks, being more numerous on a log axis, weigh more). Non-positive eigenvalues
    (cvPCA of pure noise) cannot be logged: the fit raises if any is in the range.
    """
    lam = np.asarray(eigenvalues, dtype=np.float64).ravel()
    if ranks is None:
        ranks = fit_rank_range(len(lam))
    lo, hi = int(ranks[0]), int(ranks[1])
    if not 1 <= lo < hi <= len(lam):
        raise NeuralDataError(f"powerlaw_exponent: field 'ranks' {ranks} must satisfy 1 <= first < last <= "
                              f"{len(lam)} (the number of eigenvalues). Fix: pass a range inside the spectrum")
    y = lam[lo - 1:hi]
    if not np.isfinite(y).all() or (y <= 0).any():
        raise NeuralDataError(f"powerlaw_exponent: {int((y <= 0).sum())} non-positive or non-finite eigenvalues "
                              f"in ranks {lo}..{hi}. Fix: fit a range where the signal variance is positive "
                              "(lower 'ranks'), or use more repeats / noise-free rates")
    k = np.arange(lo, hi + 1, dtype=np.float64)
    slope = np.polyfit(np.log(k), np.log(y), 1)[0]
    return float(-slope)


def leading_share(eigenvalues) -> float:
    """Fraction of the total (positive) variance on the leading component: lambda_1 / sum_k max(lambda_k, 0)."""
    lam = np.asarray(eigenvalues, dtype=np.float64).ravel()
    total = np.clip(lam, 0.0, None).sum()
    return float(lam[0] / total) if total > 0 else float("nan")


# --------------------------------------------------------------------------------------------- Fig 1D

def trial_vs_oracle_r(responses, trial_image_ids, snr_weight=None, repeat: int | None = 0) -> float:
    """Fig 1D, data only: r between single-trial similarity and oracle similarity (Eq 3) off the diagonal.

    responses: (n_trials, n_neurons) oracle trials; trial_image_ids: (n_trials,); snr_weight: (n_neurons,)
    or None. repeat=k: S^trial is Eq 2 on the k-th repeat of each oracle image (single_repeat_similarity,
    as the report's Fig 1D), correlated with S^oracle over image pairs i != j. repeat=None: every pair of
    trials (i_t, j_t'), i < j, is a point (S^trial = S^oracle + the Eq 5 fluctuation), each against its
    S^oracle_ij. The paper reports r = 0.39.
    """
    S_oracle, ids = oracle_similarity(responses, trial_image_ids, snr_weight)
    if repeat is not None:
        S_trial, trial_ids = single_repeat_similarity(responses, trial_image_ids, snr_weight, repeat)
        return offdiagonal_correlation(S_trial, S_oracle)
    dS = repeat_fluctuations(responses, trial_image_ids, snr_weight)
    ids_sorted, counts = np.unique(np.asarray(trial_image_ids), return_counts=True)
    # the pair order of repeat_fluctuations: trials sorted by image, pairs (a, b) with image(a) < image(b)
    image = np.repeat(np.arange(len(ids_sorted)), counts)
    a, b = np.nonzero(image[:, None] < image[None, :])
    oracle_values = S_oracle[image[a], image[b]].astype(np.float64)
    return float(np.corrcoef(oracle_values + dS, oracle_values)[0, 1])


def fig1d_model_r(model_similarity, oracle_similarity) -> float:
    """Fig 1D, model vs data: r between the model similarity (Eq 6) and the oracle similarity (Eq 3).

    Both (n_img, n_img) over the same oracle images in the same order; r over the off-diagonal entries
    (pipeline.oracle.similarity.offdiagonal_correlation). The paper reports r = 0.73.
    """
    return offdiagonal_correlation(model_similarity, oracle_similarity)


# ---------------------------------------------------------------------------------------- summaries

def _split_repeats(responses: np.ndarray, trial_image_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two (n_img, n_neurons) halves of the oracle trials: per image (sorted ids), the mean of its 1st, 3rd, ...
    repeats and the mean of its 2nd, 4th, ... repeats (row order); every image needs >= 2 repeats."""
    ids, inverse = np.unique(trial_image_ids, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    rank = np.empty(len(order), dtype=np.int64)  # which repeat of its image each trial is: 0, 1, 2, ...
    starts = np.searchsorted(inverse[order], np.arange(len(ids)))
    rank[order] = np.arange(len(order)) - starts[inverse[order]]
    halves = []
    for parity in (0, 1):
        pick = rank % 2 == parity
        sums = np.zeros((len(ids), responses.shape[1]))
        np.add.at(sums, inverse[pick], responses[pick])
        halves.append(sums / np.bincount(inverse[pick], minlength=len(ids))[:, None])
    return halves[0], halves[1]


def _fits(n_components: int) -> bool:
    """Whether a spectrum of n_components supports the default fit range (a factor >= 2 of ranks)."""
    return int(n_components) // 4 >= 2 * MIN_FIT_RANK


def scan_calibration(scan) -> dict:
    """The calibration numbers of one ScanData (with oracle trials).

    Returns a dict: n_neurons, n_oracle_images; oracle_correlation (n_neurons,) and its median, p10, p90;
    trial_vs_oracle_r (first repeat, as the report's Fig 1D) and trial_vs_oracle_r_all_pairs (every trial
    pair); spectrum_source, exponent, exponent_ranks, leading_share, eigenvalues. The spectrum is plain
    PCA of the simulator's noise-free rates to the images shown once (``extra['mean_rates']``) where the
    scan has them, else cvPCA of two halves of the oracle repeats (odd vs even repeats) where they are
    enough for a fit (>= 81 images and >= 80 neurons), else absent (spectrum_source None). The exponent
    is NaN (exponent_ranks None) where the spectrum is too short for the default range (fit_rank_range).
    """
    tiers = np.asarray(scan.tiers)
    oracle = tiers == "oracle"
    if not oracle.any():
        raise NeuralDataError(f"{scan.source}: field 'tiers': no oracle trials. Fix: calibrate scans with "
                              "repeated (oracle) images")
    r, ids = scan.responses[oracle], np.asarray(scan.trial_image_ids)[oracle]
    stats = oracle_stats(r, ids)
    oc = stats.oracle_correlation
    out = {"source": scan.source, "n_neurons": scan.n_neurons, "n_oracle_images": int(len(stats.image_ids)),
           "oracle_correlation": oc, "oracle_correlation_median": float(np.median(oc)),
           "oracle_correlation_p10": float(np.percentile(oc, 10)),
           "oracle_correlation_p90": float(np.percentile(oc, 90)),
           "trial_vs_oracle_r": trial_vs_oracle_r(r, ids, stats.snr_weight, repeat=0),
           "trial_vs_oracle_r_all_pairs": trial_vs_oracle_r(r, ids, stats.snr_weight, repeat=None)}
    lam, source = None, None
    mean_rates = scan.extra.get("mean_rates") if isinstance(scan.extra, dict) else None
    if mean_rates is not None:
        shown_once = np.isin(np.asarray(scan.image_ids), np.asarray(scan.trial_image_ids)[~oracle])
        lam, source = eigenspectrum(np.asarray(mean_rates)[shown_once]), "noise-free rates, images shown once (PCA)"
    elif _fits(min(len(stats.image_ids) - 1, scan.n_neurons)):
        lam, source = cvpca(*_split_repeats(r, ids)), "oracle repeats, odd vs even (cvPCA)"
    out["spectrum_source"] = source
    out["eigenvalues"] = lam
    out["exponent"], out["exponent_ranks"], out["leading_share"] = float("nan"), None, float("nan")
    if lam is not None:
        out["leading_share"] = leading_share(lam)
        if _fits(len(lam)):
            ranks = fit_rank_range(len(lam))
            try:
                out["exponent"], out["exponent_ranks"] = powerlaw_exponent(lam, ranks), ranks
            except NeuralDataError as err:  # cvPCA of too noisy repeats: a signal variance <= 0 in the range
                out["exponent_note"] = str(err)
    return out


def calibration_summary(scans: Iterable) -> dict:
    """Calibration of several scans (ScanData with oracle trials) against mouse V1 and the paper.

    Returns {'scans': [scan_calibration(s) for each scan], and pooled over scans:
    'oracle_correlation_median', '_p10', '_p90' (over all neurons of all scans), 'exponent_mean',
    'leading_share_mean', 'trial_vs_oracle_r_mean', 'trial_vs_oracle_r_all_pairs_mean', and the reference
    values 'reference': {'exponent': 1.04, 'trial_vs_oracle_r': 0.39, 'model_vs_data_r': 0.73,
    'oracle_correlation_median': (0.3, 0.5)}}.
    """
    per_scan = [scan_calibration(s) for s in scans]
    if not per_scan:
        raise NeuralDataError("calibration_summary: field 'scans' is empty. Fix: pass at least one ScanData")
    oc = np.concatenate([p["oracle_correlation"] for p in per_scan])

    def mean_of(key):
        values = np.array([p[key] for p in per_scan], dtype=np.float64)
        return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")

    return {"scans": per_scan,
            "oracle_correlation_median": float(np.median(oc)),
            "oracle_correlation_p10": float(np.percentile(oc, 10)),
            "oracle_correlation_p90": float(np.percentile(oc, 90)),
            "exponent_mean": mean_of("exponent"), "leading_share_mean": mean_of("leading_share"),
            "trial_vs_oracle_r_mean": mean_of("trial_vs_oracle_r"),
            "trial_vs_oracle_r_all_pairs_mean": mean_of("trial_vs_oracle_r_all_pairs"),
            "reference": {"exponent": STRINGER_2019_EXPONENT, "trial_vs_oracle_r": PAPER_TRIAL_VS_ORACLE_R,
                          "model_vs_data_r": PAPER_MODEL_VS_DATA_R, "oracle_correlation_median": (0.3, 0.5)}}
