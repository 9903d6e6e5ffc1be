"""Target diagnostics (spectrum, rank-1 part, reference correlations), the reference targets, deflation and the
noise-free truth of simulated scans: numbers checked against constructions whose answer is known."""

import numpy as np
import pytest

from pipeline.oracle.similarity import NeuralDataError, offdiagonal_correlation, population_similarity
from pipeline.target import controls as C
from pipeline.target import diagnostics as D


@pytest.fixture
def rng():
    return np.random.default_rng(11)


def rank1_plus_noise(rng, n=200, rho=0.4, dim=20000):
    """Unit vectors u_i = sqrt(rho) s_i e + sqrt(1 - rho) g_i, s_i = +-1, g_i random unit vectors orthogonal to e
    in `dim` dimensions: S = U U^T has lambda_1 / trace = rho + O(1/n + 1/sqrt(dim)) and off-diagonal entries
    rho s_i s_j + O(1/sqrt(dim))."""
    s = rng.choice([-1.0, 1.0], n)
    g = rng.standard_normal((n, dim))
    g[:, 0] = 0.0
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    u = np.sqrt(1 - rho) * g
    u[:, 0] = np.sqrt(rho) * s
    return (u @ u.T).astype(np.float32), s


def power_law_target(rng, n=400, alpha=1.3, top=None):
    """Q diag(lambda) Q^T with lambda_r = r^-alpha (lambda_1 replaced by `top` if given)."""
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    lam = np.arange(1, n + 1, dtype=np.float64) ** -alpha
    if top is not None:
        lam[0] = top
    return (Q * lam) @ Q.T, lam


# ----------------------------------------------------------------------------------------------- spectrum

def test_rank1_plus_noise_gives_its_known_top1_share_and_r_rank1_near_1(rng):
    S, s = rank1_plus_noise(rng, rho=0.4)
    out = D.target_diagnostics(S, {})
    assert out["n_images"] == 200 and out["trace"] == pytest.approx(200, abs=1e-3)
    assert out["top1_share"] == pytest.approx(0.4, abs=0.01)
    # the other 199 eigenvalues share 0.6 nearly equally (Marchenko-Pastur of 200 vectors in 20000 dims)
    assert out["top5_share"] == pytest.approx(0.4 + 4 * 0.6 / 199, abs=0.01)
    assert out["r_rank1"] > 0.995
    shares = out["eigenvalue_shares"]
    assert shares.shape == (50,) and shares.dtype == np.float32 and np.all(np.diff(shares) <= 1e-7)
    # without the rank-1 part (rho = 0) the top component is noise, and its rank-1 part explains little
    noise, _ = rank1_plus_noise(rng, rho=0.0)
    quiet = D.target_diagnostics(noise, {})
    assert quiet["top1_share"] < 0.01 and quiet["r_rank1"] < 0.2


@pytest.mark.parametrize("alpha", [0.8, 1.3])
def test_a_power_law_spectrum_gives_its_exponent_back_whatever_the_leading_eigenvalue(rng, alpha):
    P, lam = power_law_target(rng, alpha=alpha)
    assert D.fit_ranks(400) == (2, 40)
    assert D.target_diagnostics(P, {})["spectrum_exponent"] == pytest.approx(alpha, abs=0.05)
    # rank 1 is outside the fitted ranks: a huge leading eigenvalue (the audited demo target) leaves alpha alone
    P, _ = power_law_target(rng, alpha=alpha, top=100.0)
    out = D.target_diagnostics(P, {})
    assert out["spectrum_exponent"] == pytest.approx(alpha, abs=0.05)
    assert out["top1_share"] == pytest.approx(100.0 / (100.0 + lam[1:].sum()), rel=1e-6)


def test_a_rank_deficient_target_fits_its_exponent_on_its_nonzero_eigenvalues_only(rng):
    # Eq 2 on 12 features: rank <= 11; its null space (rounding) must not enter the power-law fit
    S = population_similarity(rng.standard_normal((300, 12)) * np.arange(1, 13) ** -1.0)
    out = D.target_diagnostics(S, {})
    assert np.isfinite(out["spectrum_exponent"]) and 0 < out["spectrum_exponent"] < 5
    assert np.isnan(D.power_law_exponent([1.0, 0.0, 0.0, 0.0], (2, 4)))  # fewer than 2 usable eigenvalues


def test_references_are_correlated_built_lazily_and_none_stays_none(rng):
    S, s = rank1_plus_noise(rng, n=100, rho=0.5, dim=5000)
    built = []

    def lazy():
        built.append(1)
        return np.outer(s, s)

    other = population_similarity(rng.standard_normal((100, 30)))
    out = D.target_diagnostics(S, {"sign": lazy, "other": other, "absent": None})
    assert built == [1] and out["r_sign"] > 0.99 and abs(out["r_other"]) < 0.1 and out["r_absent"] is None
    assert out["r_other"] == pytest.approx(offdiagonal_correlation(S, other))
    with pytest.raises(NeuralDataError, match="reference_targets\\['short'\\]"):
        D.target_diagnostics(S, {"short": other[:50, :50]})
    with pytest.raises(NeuralDataError, match="trace"):
        D.target_diagnostics(-np.eye(3), {})


# ----------------------------------------------------------------------------------------------- deflation

def test_deflating_a_rank1_dominated_target_drops_top1_share_and_keeps_a_valid_similarity(rng):
    S, _ = rank1_plus_noise(rng, n=150, rho=0.5, dim=400)
    values, vectors = D.leading_eigen(S, 1)
    Sd = C.deflate_target(S, 1)
    assert Sd.dtype == np.float32 and np.allclose(Sd, Sd.T, atol=1e-6)
    np.testing.assert_array_equal(np.diag(Sd), 1.0)
    assert Sd.min() >= -1.0 and Sd.max() <= 1.0
    before, after = D.target_diagnostics(S, {})["top1_share"], D.target_diagnostics(Sd, {})["top1_share"]
    assert before == pytest.approx(0.5, abs=0.02) and after < 0.05
    # the removed direction is a null vector of the deflated target: S' v_1 = 0, so Sd (D^1/2 v_1) = 0
    d = np.diag(S).astype(np.float64) - values[0] * vectors[:, 0] ** 2
    assert np.abs(Sd @ (np.sqrt(d) * vectors[:, 0])).max() < 1e-4
    # one entry by hand: (S_ij - lambda_1 v_i v_j) / sqrt(d_i d_j)
    i, j = 3, 7
    by_hand = (S[i, j] - values[0] * vectors[i, 0] * vectors[j, 0]) / np.sqrt(d[i] * d[j])
    assert Sd[i, j] == pytest.approx(by_hand, abs=1e-5)


def test_deflation_checks_k_and_zeroes_a_stimulus_wholly_in_the_removed_components():
    with pytest.raises(NeuralDataError, match="'k'"):
        C.deflate_target(np.eye(4), 0)
    with pytest.raises(NeuralDataError, match="'k'"):
        C.deflate_target(np.eye(4), 4)
    # stimulus 0 is alone along e_0 with weight 3: the leading component is it alone; removing it zeroes it
    S = np.diag([3.0, 1.0, 1.0, 1.0])
    S[1, 2] = S[2, 1] = 0.5
    Sd = C.deflate_target(S, 1)
    np.testing.assert_array_equal(Sd[0], 0.0)
    np.testing.assert_array_equal(np.diag(Sd), [0.0, 1.0, 1.0, 1.0])
    assert Sd[1, 2] == pytest.approx(0.5)


# ----------------------------------------------------------------------------------------------- references

def contrast_images(rng, n=200):
    """Textures whose RMS contrast c_i differs from image to image, on a mid-grey mean."""
    c = rng.uniform(0.05, 1.0, n)
    texture = rng.uniform(-1, 1, (n, 36, 64))
    return 128.0 + 100.0 * c[:, None, None] * texture, c


def test_the_contrast_energy_target_follows_image_contrast_and_luminance_does_not(rng):
    images, c = contrast_images(rng)
    S_contrast = C.contrast_energy_similarity(images)
    assert S_contrast.shape == (200, 200) and np.allclose(np.diag(S_contrast), 1.0)
    r_contrast = offdiagonal_correlation(S_contrast, C.activity_similarity(c))
    assert r_contrast > 0.75
    # the luminance target of the same images is blind to it (their mean luminance does not follow contrast)
    assert abs(offdiagonal_correlation(C.luminance_similarity(images), C.activity_similarity(c))) < 0.1


def test_contrast_energy_features_are_local_rms_contrast_per_grid_cell():
    img = np.full((2, 36, 64), 128.0)
    img[1, :18, :16] = np.where(np.indices((18, 16)).sum(0) % 2, 255.0, 0.0)  # a checkerboard in cell (0, 0)
    f = C.contrast_energy_features(img, grid=(2, 4), sigma=1.0)
    assert f.shape == (2, 8)
    np.testing.assert_allclose(f[0], 0.0, atol=1e-6)  # a blank image has no contrast
    assert f[1, 0] > 0.3 and f[1, 0] > 10 * f[1, 2:].max()  # contrast stays in its cell (up to blur at edges)
    lum = C.grid_pool(np.arange(6 * 4, dtype=float).reshape(1, 6, 4), (2, 2))
    np.testing.assert_allclose(lum, [[4.5, 6.5, 16.5, 18.5]])
    with pytest.raises(NeuralDataError, match="'grid'"):
        C.grid_pool(img, (40, 2))
    with pytest.raises(NeuralDataError, match="'grid'"):
        C.grid_pool(img, (0, 2))


def test_population_activity_and_its_rank1_similarity():
    r = np.array([[1.0, 3.0], [2.0, 2.0], [0.0, 0.0]])
    np.testing.assert_allclose(C.population_activity(r), [2.0, 2.0, 0.0])
    np.testing.assert_allclose(C.population_activity(r, [2.0, 0.0]), [1.0, 2.0, 0.0])
    S = C.activity_similarity([1.0, 2.0, 3.0, 4.0])
    z = (np.arange(4) - 1.5) / np.std(np.arange(4))
    np.testing.assert_allclose(S, np.outer(z, z) / z.max() ** 2, atol=1e-6)
    assert S.max() == pytest.approx(1.0) and S.min() >= -1.0
    np.testing.assert_allclose(C.activity_similarity([-1.0, -2.0, -3.0, -4.0]), S, atol=1e-6)  # sign-free
    np.testing.assert_array_equal(C.activity_similarity([5.0, 5.0, 5.0]), 0.0)  # constant: no axis


# ----------------------------------------------------------------------------------------------- truth

def test_the_truth_of_each_trial_and_its_eq6_weights():
    from pipeline.predictor.train import correlation_per_neuron
    from pipeline.recording import truth as T
    from pipeline.recording.simulator import simulate_scans
    from pipeline.report import truth as report_truth
    from pipeline.report.stats import ReportInputError

    scan = simulate_scans(n_scans=1, n_neurons=12, n_images=16, n_oracle_images=3, n_repeats=2, seed=5)[0]
    rows = np.searchsorted(scan.image_ids, scan.trial_image_ids)
    rates = T.trial_truth(scan.source, scan.n_neurons, scan.images[rows], scan.behavior, scan.pupil_center,
                          scan.positions)
    np.testing.assert_allclose(rates, scan.extra["rates"], rtol=1e-5, atol=1e-6)  # the simulator's own truth
    v = T.truth_correlation(rates, scan.responses)
    np.testing.assert_allclose(v, correlation_per_neuron(scan.responses, scan.extra["rates"]), atol=1e-6)
    assert np.all(v < 1) and v.mean() > 0.1
    w = np.linspace(0.5, 2.0, 12)
    np.testing.assert_allclose(C.truth_weights(w, v), w * np.clip(v, 0, None), rtol=1e-6)
    with pytest.raises(T.TruthError, match="not a simulator call"):
        T.parse_simulator_source("/data/static1-1-1")
    with pytest.raises(ReportInputError, match="not a simulator call"):  # the report's re-export, its error
        report_truth.simulator_truth("/data/static1-1-1", 12, scan.images, scan.behavior.mean(0))
