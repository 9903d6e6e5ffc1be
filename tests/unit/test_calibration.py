"""Calibration numbers: eigenspectra and their power law, cvPCA, Fig 1D's data-only r, and the scan summary."""

import numpy as np
import pytest

from pipeline.oracle.similarity import NeuralDataError, oracle_similarity, unit_vectors
from pipeline.recording.calibration import (MIN_FIT_RANK, calibration_summary, cvpca, eigenspectrum, fig1d_model_r,
                                            fit_rank_range, leading_share, powerlaw_exponent, trial_vs_oracle_r)
from pipeline.recording.simulator import simulate_scans


def powerlaw_population(n_stimuli, n_neurons, alpha, rng):
    """(n_stimuli, n_neurons) responses whose covariance has eigenvalues k^-alpha in random directions."""
    lam = np.arange(1, n_neurons + 1, dtype=np.float64) ** -alpha
    Q, _ = np.linalg.qr(rng.standard_normal((n_neurons, n_neurons)))
    return (rng.standard_normal((n_stimuli, n_neurons)) * np.sqrt(lam)) @ Q.T


def test_eigenspectrum_is_the_covariance_spectrum():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((30, 8)) * np.arange(1, 9) + 5.0
    lam = eigenspectrum(x)
    np.testing.assert_allclose(lam, np.sort(np.linalg.eigvalsh(np.cov(x.T)))[::-1], rtol=1e-10)
    assert lam.shape == (8,) and np.all(np.diff(lam) <= 0)
    assert eigenspectrum(x[:5]).shape == (4,)  # 5 stimuli: at most 4 directions of variance
    z = eigenspectrum(x, standardize=True)
    np.testing.assert_allclose(z.sum(), 8.0)  # the trace of the correlation matrix


def test_powerlaw_exponent_recovers_a_known_slope_in_the_stated_range():
    k = np.arange(1, 401, dtype=np.float64)
    assert powerlaw_exponent(k ** -1.3) == pytest.approx(1.3, abs=1e-9)
    assert fit_rank_range(400) == (MIN_FIT_RANK, 100) and fit_rank_range(600) == (10, 150)
    # a spectrum that bends at rank 50: only the ranks asked for count
    bent = np.where(k <= 50, k ** -0.5, 50 ** 1.5 * k ** -2.0)
    assert powerlaw_exponent(bent, (10, 50)) == pytest.approx(0.5, abs=1e-9)
    assert powerlaw_exponent(bent, (60, 400)) == pytest.approx(2.0, abs=1e-9)
    with pytest.raises(NeuralDataError, match="ranks"):
        powerlaw_exponent(k ** -1.0, (0, 50))
    with pytest.raises(NeuralDataError, match="non-positive"):
        powerlaw_exponent(np.r_[k[:20] ** -1.0, -1e-3, k[21:] ** -1.0], (10, 100))
    with pytest.raises(NeuralDataError, match="at least 80"):
        fit_rank_range(50)
    assert leading_share(np.array([3.0, 1.0, -0.5, 0.0])) == pytest.approx(0.75)


def test_cvpca_sees_through_noise_that_flattens_plain_pca():
    rng = np.random.default_rng(0)
    signal = powerlaw_population(2000, 400, 1.0, rng)  # signal variance 0.017 per neuron
    a = signal + 0.1 * rng.standard_normal(signal.shape)  # SNR 1.7, independent noise on each repeat
    b = signal + 0.1 * rng.standard_normal(signal.shape)
    truth = powerlaw_exponent(eigenspectrum(signal))
    cv = powerlaw_exponent(cvpca(a, b))
    plain = powerlaw_exponent(eigenspectrum(a))
    assert abs(truth - 1.0) < 0.05 and abs(cv - truth) < 0.08, (truth, cv)  # measured 0.985, 1.016
    assert plain < 0.75  # measured 0.64: the noise floor flattens the tail
    # the signal variance is what cvPCA estimates: its total is the signal's, not signal + noise
    assert cvpca(a, b).sum() == pytest.approx(eigenspectrum(signal).sum(), rel=0.05)
    with pytest.raises(NeuralDataError, match="responses_rep2"):
        cvpca(a, b[:, :-1])


def repeated_trials(signal, n_repeats, noise_sd, rng):
    """Oracle trials: every image (row of signal) n_repeats times plus independent noise; (responses, ids)."""
    ids = np.repeat(np.arange(len(signal)), n_repeats)
    return signal[ids] + noise_sd * rng.standard_normal((len(ids), signal.shape[1])), ids


def test_trial_vs_oracle_r_falls_with_noise_and_matches_brute_force():
    rng = np.random.default_rng(1)
    signal = rng.standard_normal((12, 30))
    clean, ids = repeated_trials(signal, 4, 0.0, rng)
    assert trial_vs_oracle_r(clean, ids) == pytest.approx(1.0, abs=1e-5)  # noise-free repeats: the same matrix
    rs = [trial_vs_oracle_r(*repeated_trials(signal, 4, sd, np.random.default_rng(2))) for sd in (0.5, 1.5, 4.0)]
    assert rs[0] > rs[1] > rs[2] and rs[0] > 0.8 and rs[2] < 0.6, rs
    # every trial pair against its oracle value, by brute force over all pairs of trials of images i < j
    r, ids = repeated_trials(signal, 3, 1.5, np.random.default_rng(3))
    S_oracle, _ = oracle_similarity(r, ids)
    U, _ = unit_vectors(r)
    a, b = np.nonzero(ids[:, None] < ids[None, :])
    trial_S = np.einsum("ij,ij->i", U[a].astype(np.float64), U[b].astype(np.float64))
    expected = np.corrcoef(trial_S, S_oracle[ids[a], ids[b]])[0, 1]
    assert trial_vs_oracle_r(r, ids, repeat=None) == pytest.approx(expected, abs=1e-5)


def test_fig1d_model_r_is_the_offdiagonal_correlation():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((10, 10))
    S = x + x.T
    noise = rng.standard_normal((10, 10))
    model = S + noise + noise.T
    iu = np.triu_indices(10, 1)
    assert fig1d_model_r(model, S) == pytest.approx(np.corrcoef(model[iu], S[iu])[0, 1], abs=1e-12)
    assert fig1d_model_r(S + 100 * np.eye(10), S) == pytest.approx(1.0)  # the diagonal does not count


@pytest.fixture(scope="module")
def scans():
    return simulate_scans(n_scans=2, n_neurons=200, n_images=400, n_oracle_images=20, n_repeats=6, seed=2)


def test_calibration_summary_of_simulated_scans(scans):
    summary = calibration_summary(scans)
    assert len(summary["scans"]) == 2
    for p in summary["scans"]:
        assert p["spectrum_source"].startswith("noise-free rates")
        assert p["exponent_ranks"] == (10, 50)  # 200 neurons x 400 images shown once: ranks 10..200 // 4
        assert 0.8 < p["exponent"] < 1.3, p["exponent"]
        assert p["leading_share"] < 0.15
        assert p["oracle_correlation"].shape == (200,)
        assert p["oracle_correlation_p10"] < p["oracle_correlation_median"] < p["oracle_correlation_p90"]
        assert 0.0 < p["trial_vs_oracle_r"] < 0.95 and 0.0 < p["trial_vs_oracle_r_all_pairs"] < 0.95
    pooled = np.concatenate([p["oracle_correlation"] for p in summary["scans"]])
    assert summary["oracle_correlation_median"] == pytest.approx(np.median(pooled))
    assert 0.15 < summary["oracle_correlation_median"] < 0.5  # real V1: 0.3..0.5, widely spread
    assert summary["oracle_correlation_p90"] - summary["oracle_correlation_p10"] > 0.3
    assert summary["reference"]["trial_vs_oracle_r"] == 0.39


def test_calibration_without_truth_uses_cvpca_or_says_it_cannot(scans):
    import dataclasses

    bare = dataclasses.replace(scans[0], extra={})  # as a real scan: no noise-free rates
    p = calibration_summary([bare])["scans"][0]
    assert p["spectrum_source"] is None and np.isnan(p["exponent"])  # 20 oracle images: too few for a fit
    many = simulate_scans(n_scans=1, n_neurons=120, n_images=0, n_oracle_images=90, n_repeats=6, seed=5)[0]
    p = calibration_summary([dataclasses.replace(many, extra={})])["scans"][0]
    assert p["spectrum_source"].startswith("oracle repeats") and p["exponent_ranks"] == (10, 22)
    print("cvPCA exponent of 90 oracle images, 3 vs 3 repeats:", p["exponent"])
    assert 0.5 < p["exponent"] < 1.5
    no_oracle = simulate_scans(n_scans=1, n_neurons=5, n_images=10, n_oracle_images=0, seed=5)[0]
    with pytest.raises(NeuralDataError, match="tiers"):
        calibration_summary([no_oracle])
