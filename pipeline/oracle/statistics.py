"""Statistics of the oracle (repeated) images: signal-to-noise weights (Eq 1), the leave-one-out oracle
correlation, and the fluctuations of the oracle similarity across scans and across repeats (Eq 4, 5).

Shapes: ``responses`` (n_trials, n_neurons) holds the oracle trials only, ``trial_image_ids`` (n_trials,)
the image shown on each; an image may be repeated a different number of times than another (>= 2 each).
Variances are in squared response units; the weight w and the correlations are dimensionless.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from pipeline.oracle.similarity import (
    NeuralDataError,
    TrialGroups,
    as_responses,
    group_trials,
    oracle_similarity_from_units,
    unit_vectors,
)

__all__ = ["NeuralDataError", "OracleStats", "oracle_stats", "oracle_correlation", "leave_one_out_means",
           "scan_fluctuations", "repeat_fluctuations", "fluctuation_summary", "fluctuation_histograms"]

# A variance below (DEGENERATE_RTOL * rms response)^2 counts as zero: float32 rounding, not signal or noise.
DEGENERATE_RTOL = 1e-6


@dataclass(frozen=True)
class OracleStats:
    """Per-neuron oracle statistics (all arrays (n_neurons,)).

    signal_var: sigma^2 = Var_i(E_t r_ait); noise_var: eta^2 = E_i(Var_t r_ait);
    snr_weight: w = sigma / eta, 0 where degenerate; degenerate: eta or sigma is (numerically) zero;
    oracle_correlation: leave-one-out oracle correlation, 0 where undefined (constant responses).
    image_ids (n_img,) sorted, repeat_counts (n_img,): the oracle images and their repeats.
    """
    signal_var: np.ndarray
    noise_var: np.ndarray
    snr_weight: np.ndarray
    degenerate: np.ndarray
    oracle_correlation: np.ndarray
    image_ids: np.ndarray
    repeat_counts: np.ndarray

    def as_dict(self) -> dict:
        return asdict(self)


def leave_one_out_means(responses: np.ndarray, groups: TrialGroups) -> np.ndarray:
    """(n_trials, n_neurons): for each trial, the mean response to the OTHER repeats of its image."""
    sums = groups.sum(responses)  # (n_img, n_neurons)
    n_other = (groups.counts - 1)[groups.inverse, None]
    return (sums[groups.inverse] - responses) / n_other


def _pearson_columns(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-column Pearson correlation of (n, m) arrays -> (m,); 0 where a column is constant."""
    xc = x - x.mean(axis=0)
    yc = y - y.mean(axis=0)
    denom = np.sqrt((xc ** 2).sum(axis=0) * (yc ** 2).sum(axis=0))
    corr = np.zeros(x.shape[1])
    ok = denom > 0
    corr[ok] = (xc * yc).sum(axis=0)[ok] / denom[ok]
    return np.clip(corr, -1.0, 1.0)


def oracle_correlation(responses, trial_image_ids) -> np.ndarray:
    """Leave-one-out oracle correlation (n_neurons,): over all oracle trials, the correlation between each
    single-trial response and the mean of the other repeats of the same image (the field's standard
    definition, e.g. neuralpredictors' compute_oracle_corr). 0 for a neuron whose responses are constant."""
    r = as_responses(responses).astype(np.float64)
    groups = group_trials(trial_image_ids, r.shape[0])
    return _pearson_columns(r, leave_one_out_means(r, groups))


def oracle_stats(responses, trial_image_ids, ddof: int = 1,
                 degenerate_rtol: float = DEGENERATE_RTOL) -> OracleStats:
    """Eq 1 and the oracle correlation of every neuron from the oracle trials.

    responses: (n_trials, n_neurons) oracle trials; trial_image_ids: (n_trials,).
    ddof: delta degrees of freedom of both variances (1: unbiased sample variances, the default; the
    repeat variance of each image uses its own repeat count, the signal variance the number of images).
    A neuron is degenerate when its noise or signal variance is below (degenerate_rtol * its rms
    response)^2 (exactly constant responses give exactly 0); its weight is 0, and it is flagged.
    """
    r = as_responses(responses).astype(np.float64)  # oracle sets are small; float64 for the statistics
    groups = group_trials(trial_image_ids, r.shape[0], min_repeats=max(2, 1 + ddof))  # LOO needs 2
    n_img = len(groups.image_ids)
    if n_img < 1 + ddof:
        raise NeuralDataError(f"'trial_image_ids': {n_img} oracle image(s); the signal variance needs at "
                              f"least {1 + ddof}. Fix: pass the trials of every oracle image")
    counts = groups.counts[:, None]
    image_means = groups.sum(r) / counts  # (n_img, n_neurons) repeat means E_t r_ait
    deviations = r - image_means[groups.inverse]
    repeat_var = groups.sum(deviations ** 2) / (counts - ddof)  # (n_img, n_neurons) Var_t r_ait
    noise_var = repeat_var.mean(axis=0)
    signal_var = image_means.var(axis=0, ddof=ddof)

    scale = degenerate_rtol ** 2 * (r ** 2).mean(axis=0)
    degenerate = (noise_var <= scale) | (signal_var <= scale)
    weight = np.zeros(r.shape[1])
    ok = ~degenerate
    weight[ok] = np.sqrt(signal_var[ok] / noise_var[ok])
    return OracleStats(signal_var=signal_var, noise_var=noise_var, snr_weight=weight, degenerate=degenerate,
                       oracle_correlation=_pearson_columns(r, leave_one_out_means(r, groups)),
                       image_ids=groups.image_ids, repeat_counts=groups.counts)


# ------------------------------------------------------------------------------------- Eq 4, 5 (Fig 1C)

def scan_fluctuations(oracle_similarities) -> np.ndarray:
    """Eq 4: dS^scan_ij(s) = S^oracle_ij(s) - mean_s' S^oracle_ij(s') over i < j.

    oracle_similarities: (n_scans, n_img, n_img), every scan's Eq 3 matrix over the SAME oracle images in
    the same order. Returns (n_scans * n_img * (n_img - 1) / 2,) float64, scan-major, pairs in
    np.triu_indices order.
    """
    S = np.asarray(oracle_similarities, dtype=np.float64)
    if S.ndim != 3 or S.shape[1] != S.shape[2] or S.shape[0] < 2 or S.shape[1] < 2:
        raise NeuralDataError(f"'oracle_similarities': expected (n_scans >= 2, n_img >= 2, n_img), got "
                              f"{S.shape}. Fix: stack the oracle similarity of each scan over the same images")
    if not np.isfinite(S).all():
        raise NeuralDataError("'oracle_similarities': NaN or infinite entries. Fix: recompute them")
    iu, ju = np.triu_indices(S.shape[1], 1)
    upper = S[:, iu, ju]  # (n_scans, n_pairs)
    return (upper - upper.mean(axis=0)).ravel()


def repeat_fluctuations(responses, trial_image_ids, snr_weight=None) -> np.ndarray:
    """Eq 5: dS^rep_ij(t, t') = S(i_t, j_t') - S^oracle_ij for every pair of trials of images i < j.

    responses: (n_trials, n_neurons) oracle trials of one scan; trial_image_ids: (n_trials,);
    snr_weight: (n_neurons,) or None. S(i_t, j_t') is Eq 2 with trials as stimuli and S^oracle Eq 3 from
    the same unit vectors. Returns (n_pairs,) float64 with n_pairs = sum_{i<j} n_i n_j, in the row-major
    order of trial pairs (a, b) with image(a) < image(b) after sorting trials by image.
    Memory: one (n_trials, n_trials) matrix.
    """
    r = as_responses(responses)
    groups = group_trials(trial_image_ids, r.shape[0])
    U, _ = unit_vectors(r, snr_weight)
    oracle = oracle_similarity_from_units(U, groups).astype(np.float64)
    U = U[groups.order]  # trials sorted by image, so the pair order is image-major
    image = groups.inverse[groups.order]
    trial_S = np.clip(U.astype(np.float64) @ U.T.astype(np.float64), -1.0, 1.0)
    a, b = np.nonzero(image[:, None] < image[None, :])
    return trial_S[a, b] - oracle[image[a], image[b]]


def fluctuation_summary(values) -> dict:
    """Width of a fluctuation distribution: n, mean, std (ddof=0), q25, q75 and iqr = q75 - q25."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0 or not np.isfinite(x).all():
        raise NeuralDataError("'values': empty or non-finite fluctuations. Fix: pass the output of "
                              "scan_fluctuations or repeat_fluctuations")
    q25, q75 = np.percentile(x, [25, 75])
    return {"n": int(x.size), "mean": float(x.mean()), "std": float(x.std()), "q25": float(q25),
            "q75": float(q75), "iqr": float(q75 - q25)}


FLUCTUATION_BINS = np.linspace(-1.0, 1.0, 101)  # similarities are in [-1, 1], so their differences mostly are


def fluctuation_histograms(scan_dS, repeat_dS, edges=FLUCTUATION_BINS) -> dict:
    """Fig 1C: the two fluctuation distributions on shared bins.

    scan_dS: Eq 4 fluctuations; repeat_dS: Eq 5 fluctuations (any shapes, flattened). Returns bin_edges
    (n_bins + 1,), scan_histogram and repeat_histogram (n_bins,) densities, and their widths scan_width and
    repeat_width (standard deviations, ddof 0; values outside the bins still count in the widths).
    """
    scan = fluctuation_summary(scan_dS)
    repeat = fluctuation_summary(repeat_dS)
    edges = np.asarray(edges, dtype=np.float64)
    return {"bin_edges": edges,
            "scan_histogram": np.histogram(np.ravel(scan_dS), edges, density=True)[0],
            "repeat_histogram": np.histogram(np.ravel(repeat_dS), edges, density=True)[0],
            "scan_width": scan["std"], "repeat_width": repeat["std"]}
