"""Eq 2, 3, 6 and the scan average against loop-based references on small random data."""

import numpy as np
import pytest

from pipeline.oracle.similarity import (
    NeuralDataError,
    SimilarityAccumulator,
    mean_similarity,
    model_similarity,
    responses_per_image,
    oracle_similarity,
    pixel_similarity,
    population_similarity,
    symmetrise_from_lower,
)


# ------------------------------------------------------------------ slow references, straight from the text

def ref_unit_vectors(r, w=None):
    """Eq 2 written out: scale, centre per neuron across stimuli, normalise each stimulus (zero stays zero)."""
    r = np.asarray(r, dtype=np.float64)
    n_stim, n_neur = r.shape
    w = np.ones(n_neur) if w is None else np.asarray(w, dtype=np.float64)
    rt = r * w
    rbar = [sum(rt[i, a] for i in range(n_stim)) / n_stim for a in range(n_neur)]
    U = np.zeros_like(rt)
    for i in range(n_stim):
        d = np.array([rt[i, a] - rbar[a] for a in range(n_neur)])
        norm = np.sqrt(sum(x * x for x in d))
        if norm > 1e-9:
            U[i] = d / norm
    return U


def ref_population_similarity(r, w=None):
    U = ref_unit_vectors(r, w)
    n = len(U)
    return np.array([[float(np.dot(U[i], U[j])) for j in range(n)] for i in range(n)])


def ref_oracle_similarity(r, ids, w=None):
    """Eq 3 written out: all trial pairs, mean over (t, t'), t != t' on the diagonal."""
    S = ref_population_similarity(r, w)
    images = sorted(set(ids.tolist()))
    out = np.zeros((len(images), len(images)))
    for a, i in enumerate(images):
        for b, j in enumerate(images):
            vals = [S[t, u] for t in range(len(ids)) for u in range(len(ids))
                    if ids[t] == i and ids[u] == j and not (i == j and t == u)]
            out[a, b] = np.mean(vals)
    return out, np.array(images)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def oracle_data(rng, counts=(2, 3, 5, 2, 4, 3), n_neurons=12, noise=1.0):
    ids = np.repeat(np.array([40, 7, 19, 3, 25, 11]), counts)  # unsorted, unequal repeats
    ids = ids[rng.permutation(len(ids))]
    signal = rng.standard_normal((100, n_neurons))
    r = signal[ids] + noise * rng.standard_normal((len(ids), n_neurons))
    return r.astype(np.float32), ids


# ------------------------------------------------------------------ Eq 2

def test_population_similarity_matches_reference(rng):
    r = rng.gamma(2.0, size=(9, 14)).astype(np.float32) + 3.0  # positive rates with an offset
    w = rng.uniform(0.1, 3.0, size=14)
    w[2] = 0.0  # a degenerate neuron: weight 0
    S = population_similarity(r, w)
    assert S.dtype == np.float32 and S.shape == (9, 9)
    np.testing.assert_allclose(S, ref_population_similarity(r, w), atol=2e-6)
    np.testing.assert_allclose(population_similarity(r), ref_population_similarity(r), atol=2e-6)


def test_population_similarity_invariants(rng):
    r = rng.standard_normal((30, 5))  # few neurons: strong (anti)correlations, |S| near 1
    S = population_similarity(r)
    np.testing.assert_array_equal(S, S.T)
    np.testing.assert_array_equal(np.diag(S), np.ones(30, dtype=np.float32))
    assert S.min() >= -1.0 and S.max() <= 1.0
    assert np.linalg.eigvalsh(S.astype(np.float64)).min() > -1e-5  # a Gram matrix


def test_weights_scale_invariance_and_zero_weight_drops_neuron(rng):
    r = rng.standard_normal((10, 8))
    w = rng.uniform(0.5, 2.0, size=8)
    np.testing.assert_allclose(population_similarity(r, w), population_similarity(r, 7.0 * w), atol=1e-6)
    w0 = w.copy()
    w0[3] = 0.0
    np.testing.assert_allclose(population_similarity(r, w0),
                               population_similarity(np.delete(r, 3, axis=1), np.delete(w, 3)), atol=1e-6)
    # weighting is not a no-op
    assert np.abs(population_similarity(r, w) - population_similarity(r)).max() > 1e-3


def test_zero_vector_stimulus_gives_zero_row_not_nan(rng):
    a, b = rng.standard_normal((2, 6))
    r = np.stack([a, (a + b) / 2, b])  # the middle stimulus is the population mean: centred vector 0
    S = population_similarity(r)
    assert np.isfinite(S).all()
    np.testing.assert_array_equal(S[1], 0.0)
    np.testing.assert_array_equal(S[:, 1], 0.0)
    assert S[0, 0] == 1.0 and S[0, 2] == pytest.approx(-1.0)
    # all stimuli identical: everything zero
    np.testing.assert_array_equal(population_similarity(np.ones((4, 3))), 0.0)


@pytest.mark.parametrize("bad, field", [
    (np.ones(5), "responses"),
    (np.ones((1, 5)), "responses"),
    (np.array([[1.0, np.nan], [0.0, 1.0]]), "responses"),
])
def test_bad_responses_raise_naming_field(bad, field):
    with pytest.raises(NeuralDataError, match=field):
        population_similarity(bad)


def test_bad_weights_raise(rng):
    r = rng.standard_normal((4, 3))
    with pytest.raises(NeuralDataError, match="snr_weight"):
        population_similarity(r, np.ones(4))
    with pytest.raises(NeuralDataError, match="snr_weight"):
        population_similarity(r, np.array([1.0, np.inf, 1.0]))


# ------------------------------------------------------------------ Eq 6, pixel

def test_model_similarity_scales_by_w_times_v(rng):
    pred = rng.gamma(2.0, size=(8, 10))
    w = rng.uniform(0.2, 2.0, size=10)
    v = rng.uniform(0.05, 0.9, size=10)
    S = model_similarity(pred, w, v)
    np.testing.assert_allclose(S, ref_population_similarity(pred, w * v), atol=2e-6)


def test_model_similarity_drops_neurons_predicted_worse_than_chance(rng):
    pred = rng.gamma(2.0, size=(8, 10))
    w = rng.uniform(0.2, 2.0, size=10)
    v = rng.uniform(0.05, 0.9, size=10)
    v[[1, 4]] = -0.3
    S = model_similarity(pred, w, v)
    keep = v > 0
    np.testing.assert_allclose(S, ref_population_similarity(pred[:, keep], (w * v)[keep]), atol=2e-6)
    assert np.abs(S - model_similarity(pred, w, np.abs(v))).max() > 1e-4  # |v| would keep them
    assert np.abs(S - model_similarity(pred, w, np.ones(10))).max() > 1e-3
    with pytest.raises(NeuralDataError, match="'v'"):
        model_similarity(pred, w, np.ones(3))


def test_pixel_similarity_is_eq2_on_flattened_pixels(rng):
    images = rng.uniform(size=(6, 4, 5))
    np.testing.assert_allclose(pixel_similarity(images), ref_population_similarity(images.reshape(6, 20)),
                               atol=2e-6)


# ------------------------------------------------------------------ Eq 3

def test_oracle_similarity_matches_reference_with_unequal_repeats(rng):
    r, ids = oracle_data(rng)
    w = rng.uniform(0.1, 2.0, size=r.shape[1])
    S, image_ids = oracle_similarity(r, ids, w)
    ref, ref_ids = ref_oracle_similarity(r, ids, w)
    np.testing.assert_array_equal(image_ids, ref_ids)
    np.testing.assert_array_equal(image_ids, np.sort(image_ids))
    assert S.dtype == np.float32 and S.shape == (6, 6)
    np.testing.assert_allclose(S, ref, atol=2e-6)
    np.testing.assert_allclose(S, S.T, atol=1e-7)


def test_oracle_diagonal_below_one_when_noisy_and_one_when_noise_free(rng):
    r, ids = oracle_data(rng, noise=0.5)
    S, _ = oracle_similarity(r, ids)
    assert (np.diag(S) < 0.99).all()
    assert (np.diag(S) > np.abs(S - np.diag(np.diag(S))).max(axis=1)).all()  # reliability beats cross-talk
    clean, clean_ids = oracle_data(np.random.default_rng(5), noise=0.0)
    S_clean, _ = oracle_similarity(clean, clean_ids)
    np.testing.assert_allclose(np.diag(S_clean), 1.0, atol=1e-6)


def test_oracle_similarity_needs_repeats(rng):
    r = rng.standard_normal((5, 3))
    with pytest.raises(NeuralDataError, match="trial_image_ids"):
        oracle_similarity(r, np.array([1, 1, 2, 2, 3]), None)  # image 3 shown once
    with pytest.raises(NeuralDataError, match="trial_image_ids"):
        oracle_similarity(r, np.array([1, 1, 2, 2]), None)  # one id short


# ------------------------------------------------------------------ averaging over scans

def scans(rng, n_stimuli=17, neurons=(11, 23, 11, 40)):
    return [(rng.gamma(2.0, size=(n_stimuli, n)).astype(np.float32), rng.uniform(0.0, 2.0, size=n))
            for n in neurons]


def test_accumulator_mean_equals_mean_of_separate_matrices(rng):
    data = scans(rng)
    expected = np.mean([population_similarity(r, w) for r, w in data], axis=0)
    originals = [r.copy() for r, _ in data]
    acc = SimilarityAccumulator(17)
    for r, w in data:
        acc.add(r, w)
    S = acc.mean()
    assert S.dtype == np.float32 and S.flags.c_contiguous and acc.n_added == 4
    np.testing.assert_allclose(S, expected, atol=2e-6)
    np.testing.assert_array_equal(S, S.T)
    np.testing.assert_array_equal(np.diag(S), 1.0)
    for r, r0 in zip((r for r, _ in data), originals):
        np.testing.assert_array_equal(r, r0)  # inputs untouched without overwrite
    # overwrite=True gives the same result, using (and destroying) the responses as the buffer
    acc2 = SimilarityAccumulator(17)
    for r, w in data:
        acc2.add(r, w, overwrite=True)
    np.testing.assert_allclose(acc2.mean(), expected, atol=2e-6)
    assert not np.array_equal(data[0][0], originals[0])


def test_accumulator_with_precomputed_matrix_and_zero_stimulus(rng):
    (r1, w1), (r2, w2) = scans(rng, n_stimuli=5, neurons=(6, 9))
    r2[2] = r2[[0, 1, 3, 4]].mean(axis=0)  # stimulus 2 is the population mean in scan 2: a zero vector
    S1, S2 = population_similarity(r1, w1), population_similarity(r2, w2)
    acc = SimilarityAccumulator(5).add_similarity(S1).add(r2, w2)
    S = acc.mean()
    np.testing.assert_allclose(S, (S1 + S2) / 2, atol=2e-6)
    assert S[2, 2] == pytest.approx(0.5)  # the fraction of scans where stimulus 2 had a direction


def test_accumulator_errors(rng):
    acc = SimilarityAccumulator(4)
    with pytest.raises(NeuralDataError, match="nothing added"):
        acc.mean()
    with pytest.raises(NeuralDataError, match="responses"):
        acc.add(rng.standard_normal((5, 3)))
    with pytest.raises(NeuralDataError, match="responses"):
        acc.add(rng.standard_normal(4))


def test_symmetrise_from_lower_spans_blocks(rng):
    a = rng.standard_normal((1100, 1100)).astype(np.float32)  # > 2 blocks of 512
    lower = np.tril(a)
    out = symmetrise_from_lower(a.copy())
    np.testing.assert_array_equal(out, lower + np.tril(lower, -1).T)


def test_mean_similarity(rng):
    stack = rng.uniform(-1, 1, size=(3, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(mean_similarity(stack), stack.mean(axis=0), atol=1e-7)
    np.testing.assert_allclose(mean_similarity(iter(list(stack))), stack.mean(axis=0), atol=1e-7)
    with pytest.raises(NeuralDataError, match="same stimuli"):
        mean_similarity([stack[0], np.zeros((4, 4))])
    with pytest.raises(NeuralDataError, match="empty"):
        mean_similarity([])


def test_responses_per_image_averages_repeated_trials_only():
    ids = np.array([7, 3, 7, 5])
    r = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 8.0], [0.0, 1.0]])
    out_ids, out = responses_per_image(ids, r)
    np.testing.assert_array_equal(out_ids, [3, 5, 7])
    np.testing.assert_allclose(out, [[3, 4], [0, 1], [3, 5]])
    once_ids, once = responses_per_image(np.array([9, 2]), r[:2])
    np.testing.assert_array_equal(once_ids, [2, 9])
    np.testing.assert_allclose(once, [[3, 4], [1, 2]])
    with pytest.raises(NeuralDataError, match="image_ids"):
        responses_per_image(ids[:3], r)
