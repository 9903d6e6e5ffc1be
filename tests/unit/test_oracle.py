"""Eq 1 (signal-to-noise weight), the leave-one-out oracle correlation and Eq 4, 5 against loop references."""

import warnings

import numpy as np
import pytest

from pipeline.oracle.statistics import (
    NeuralDataError,
    fluctuation_histograms,
    fluctuation_summary,
    oracle_correlation,
    oracle_stats,
    repeat_fluctuations,
    scan_fluctuations,
)
from pipeline.oracle.similarity import oracle_similarity, population_similarity


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def oracle_trials(rng, counts=(3, 2, 6, 4, 2, 5, 3), n_neurons=9, signal_sd=1.0, noise_sd=1.0):
    """Unequal repeats, unsorted, non-contiguous image ids."""
    image_ids = np.array([91, 4, 17, 60, 33, 8, 75])
    ids = np.repeat(image_ids, counts)
    ids = ids[rng.permutation(len(ids))]
    signal = signal_sd * rng.standard_normal((100, n_neurons))
    r = 2.0 + signal[ids] + noise_sd * rng.standard_normal((len(ids), n_neurons))
    return r, ids


def ref_stats(r, ids, ddof=1):
    """Eq 1 and the LOO oracle correlation, one neuron, one image, one trial at a time."""
    images = sorted(set(ids.tolist()))
    sig, noi, corr = [], [], []
    for a in range(r.shape[1]):
        means, variances = [], []
        for i in images:
            x = [r[t, a] for t in range(len(ids)) if ids[t] == i]
            m = sum(x) / len(x)
            means.append(m)
            variances.append(sum((v - m) ** 2 for v in x) / (len(x) - ddof))
        mu = sum(means) / len(means)
        sig.append(sum((m - mu) ** 2 for m in means) / (len(means) - ddof))
        noi.append(sum(variances) / len(variances))
        single, others = [], []
        for t in range(len(ids)):
            rest = [r[u, a] for u in range(len(ids)) if ids[u] == ids[t] and u != t]
            single.append(r[t, a])
            others.append(sum(rest) / len(rest))
        corr.append(np.corrcoef(single, others)[0, 1])
    return np.array(sig), np.array(noi), np.array(corr)


def test_oracle_stats_match_reference_with_unequal_repeats(rng):
    r, ids = oracle_trials(rng)
    st = oracle_stats(r, ids)
    sig, noi, corr = ref_stats(r, ids)
    np.testing.assert_allclose(st.signal_var, sig, rtol=1e-10)
    np.testing.assert_allclose(st.noise_var, noi, rtol=1e-10)
    np.testing.assert_allclose(st.snr_weight, np.sqrt(sig / noi), rtol=1e-10)
    np.testing.assert_allclose(st.oracle_correlation, corr, rtol=1e-9)
    np.testing.assert_allclose(oracle_correlation(r, ids), corr, rtol=1e-9)
    assert not st.degenerate.any()
    np.testing.assert_array_equal(st.image_ids, [4, 8, 17, 33, 60, 75, 91])
    np.testing.assert_array_equal(st.repeat_counts, [2, 5, 6, 2, 4, 3, 3])
    # ddof=0 is a different, also checked, normalisation
    sig0, noi0, _ = ref_stats(r, ids, ddof=0)
    st0 = oracle_stats(r, ids, ddof=0)
    np.testing.assert_allclose(st0.signal_var, sig0, rtol=1e-10)
    np.testing.assert_allclose(st0.noise_var, noi0, rtol=1e-10)


def test_snr_weight_recovers_known_ratio():
    """Known truth: signal sd 2, noise sd 1 -> w ~ 2 (sigma^2 carries noise/n_repeats: ~ sqrt(4 + 1/10))."""
    rng = np.random.default_rng(0)
    n_img, reps, n = 400, 10, 5
    ids = np.repeat(np.arange(n_img), reps)
    r = 2.0 * rng.standard_normal((n_img, n))[ids] + rng.standard_normal((n_img * reps, n))
    st = oracle_stats(r.astype(np.float32), ids)
    np.testing.assert_allclose(st.snr_weight, np.sqrt(4.0 + 0.1), rtol=0.08)
    np.testing.assert_allclose(st.noise_var, 1.0, rtol=0.05)
    # the LOO oracle correlation of this model: 4 / sqrt(5 * (4 + 1/9)) ~ 0.88
    np.testing.assert_allclose(st.oracle_correlation, 4 / np.sqrt(5 * (4 + 1 / 9)), atol=0.03)


def test_degenerate_neurons_are_flagged_with_zero_weight_and_no_warning(rng):
    r, ids = oracle_trials(rng, n_neurons=5)
    r = r.astype(np.float32)
    r[:, 0] = 3.7  # silent / constant: no signal, no noise
    image_of = {i: k for k, i in enumerate(np.unique(ids))}
    for k in range(len(ids)):  # neuron 1: repeats identical (no noise), differing across images
        r[k, 1] = float(image_of[ids[k]])
    # neuron 2: every image has repeat mean 0 (no signal), but repeats differ (noise)
    for i in np.unique(ids):
        t = np.flatnonzero(ids == i)
        r[t, 2] = np.tile([1.0, -1.0], len(t))[: len(t)]
        if len(t) % 2:
            r[t[-1], 2] = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no silent division by zero
        st = oracle_stats(r, ids)
    np.testing.assert_array_equal(st.degenerate, [True, True, True, False, False])
    np.testing.assert_array_equal(st.snr_weight[:3], 0.0)
    assert (st.snr_weight[3:] > 0).all()
    for field in ("signal_var", "noise_var", "snr_weight", "oracle_correlation"):
        assert np.isfinite(getattr(st, field)).all(), field
    assert st.oracle_correlation[0] == 0.0  # constant responses: correlation undefined, reported as 0
    assert st.oracle_correlation[1] == pytest.approx(1.0)  # noise-free repeats predict each other exactly


def test_oracle_stats_bad_input(rng):
    r, ids = oracle_trials(rng)
    with pytest.raises(NeuralDataError, match="trial_image_ids"):
        oracle_stats(r[:-1], ids)
    single = ids.copy()
    single[0] = 999  # an image shown once
    with pytest.raises(NeuralDataError, match="fewer than 2 repeats"):
        oracle_stats(r, single)
    with pytest.raises(NeuralDataError, match="responses"):
        oracle_stats(np.where(r > 3, np.nan, r), ids)


# ------------------------------------------------------------------ Eq 4, 5

def test_scan_fluctuations_match_reference(rng):
    S = rng.uniform(-1, 1, size=(3, 5, 5))
    S = (S + S.transpose(0, 2, 1)) / 2
    d = scan_fluctuations(S)
    ref = [S[s, i, j] - np.mean([S[q, i, j] for q in range(3)])
           for s in range(3) for i in range(5) for j in range(5) if i < j]
    np.testing.assert_allclose(d, ref, atol=1e-12)
    with pytest.raises(NeuralDataError, match="oracle_similarities"):
        scan_fluctuations(S[:1])


def test_repeat_fluctuations_match_reference(rng):
    r, ids = oracle_trials(rng, n_neurons=15)
    w = rng.uniform(0.2, 2.0, size=15)
    d = repeat_fluctuations(r, ids, w)
    S_trial = population_similarity(r, w).astype(np.float64)
    S_oracle, image_ids = oracle_similarity(r, ids, w)
    pos = {i: k for k, i in enumerate(image_ids)}
    ref = []
    for t in range(len(ids)):
        for u in range(len(ids)):
            if pos[ids[t]] < pos[ids[u]]:
                ref.append(S_trial[t, u] - S_oracle[pos[ids[t]], pos[ids[u]]])
    counts = np.unique(ids, return_counts=True)[1]
    assert len(d) == (counts.sum() ** 2 - (counts ** 2).sum()) // 2
    np.testing.assert_allclose(np.sort(d), np.sort(ref), atol=2e-6)
    # by construction the fluctuations of each image pair average to zero
    assert abs(d.mean()) < 1e-6


def test_scan_fluctuations_narrower_than_repeat_fluctuations():
    """Fig 1C on simulated scans: same images and tuning, independent noise -> dS^scan << dS^rep."""
    rng = np.random.default_rng(3)
    n_img, reps, n = 12, 6, 300
    ids = np.repeat(np.arange(n_img), reps)
    tuning = rng.standard_normal((n_img, n))
    scans = [tuning[ids] + rng.standard_normal((len(ids), n)) for _ in range(4)]
    oracle = np.stack([oracle_similarity(r, ids)[0] for r in scans])
    scan_width = fluctuation_summary(scan_fluctuations(oracle))
    rep_width = fluctuation_summary(repeat_fluctuations(scans[0], ids))
    assert scan_width["std"] < 0.5 * rep_width["std"]


def test_fluctuation_summary_known_values():
    s = fluctuation_summary(np.arange(101.0))
    assert s["n"] == 101 and s["q25"] == 25.0 and s["q75"] == 75.0 and s["iqr"] == 50.0
    assert s["std"] == pytest.approx(np.sqrt((101 ** 2 - 1) / 12))
    with pytest.raises(NeuralDataError, match="values"):
        fluctuation_summary([])


def test_fluctuation_histograms_share_bins_and_report_widths():
    rng = np.random.default_rng(3)
    scan, repeat = rng.normal(0, 0.05, 4000), rng.normal(0, 0.2, 6000)
    h = fluctuation_histograms(scan, repeat)
    assert h["bin_edges"].shape == (101,) and h["bin_edges"][0] == -1 and h["bin_edges"][-1] == 1
    width = np.diff(h["bin_edges"])
    np.testing.assert_allclose((h["scan_histogram"] * width).sum(), 1.0, atol=1e-9)
    np.testing.assert_allclose((h["repeat_histogram"] * width).sum(), 1.0, atol=1e-9)
    assert abs(h["scan_width"] - 0.05) < 0.005 and abs(h["repeat_width"] - 0.2) < 0.01
    assert h["scan_width"] == np.std(scan)
