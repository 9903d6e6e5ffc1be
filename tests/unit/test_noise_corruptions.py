"""Gaussian-noise and common-corruption accuracy (pipeline.robustness.noise / .corruptions).

A tiny linear classifier trained for about a second on scikit-learn digits upsampled to 32 x 32.
"""

import numpy as np
import pytest
import torch
from scipy.ndimage import zoom
from sklearn.datasets import load_digits

from pipeline.robustness.corruptions import (
    ALL_CORRUPTIONS,
    COMMON_CORRUPTIONS,
    CORRUPTION_FAMILIES,
    SEVERITIES,
    corrupt_images,
    corruption_accuracy,
    summarize_corruptions,
)
from pipeline.robustness.errors import RobustnessInputError
from pipeline.robustness.images import predict_labels
from pipeline.robustness.noise import iter_noise_batches, noise_accuracy

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def digits32():
    """(x_train, y_train, x_test, y_test): digits in [0, 1], (N, 1, 32, 32) float32, bilinear upsampling
    (nearest-neighbour 4x4 blocks would make pixelate an identity)."""
    d = load_digits()
    x = np.clip(zoom(d.images / 16.0, (1, 4, 4), order=1), 0, 1)[:, None].astype(np.float32)
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(0).permutation(len(x))
    tr, te = perm[:1200], perm[1200:1400]
    return x[tr], y[tr], x[te], y[te]


@pytest.fixture(scope="module")
def model(digits32):
    xtr, ytr, _, _ = digits32
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32 * 32, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(xtr), torch.from_numpy(ytr)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    return net.eval()


def _accuracy(net, x, y):
    with torch.no_grad():
        return float((net(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


# ------------------------------------------------------------------------------------------ noise
def test_noise_accuracy_matches_slow_reference_and_falls_with_std(model, digits32):
    _, _, x, y = digits32
    stds = [0.0, 0.2, 0.5, 1.0, 2.0]
    acc = noise_accuracy(model, x, y, stds, seed=3, batch_size=64)
    # reference: one standard-normal draw for all images, shared by all stds, clipped
    z = np.random.default_rng(3).standard_normal(size=x.shape, dtype=np.float32)
    ref = [_accuracy(model, np.clip(x + np.float32(s) * z, 0, 1), y) for s in stds]
    np.testing.assert_allclose(acc, ref)
    assert acc[0] == pytest.approx(_accuracy(model, x, y)) and acc[0] > 0.85
    assert np.all(np.diff(acc) <= 0.02), acc  # non-increasing up to sampling jitter
    assert acc[-1] < acc[0] - 0.3, acc


def test_noise_is_reproducible_independent_of_batching_and_of_the_model(model, digits32):
    _, _, x, y = digits32
    stds = [0.1, 0.3]
    a = noise_accuracy(model, x, y, stds, seed=7, batch_size=256)
    b = noise_accuracy(model, x, y, stds, seed=7, batch_size=33)
    np.testing.assert_array_equal(a, b)
    full = np.concatenate([n for _, n in iter_noise_batches(x, stds, 7, batch_size=1000)], axis=1)
    chunked = np.concatenate([n for _, n in iter_noise_batches(x, stds, 7, batch_size=17)], axis=1)
    np.testing.assert_array_equal(full, chunked)
    other = np.concatenate([n for _, n in iter_noise_batches(x, stds, 8, batch_size=1000)], axis=1)
    assert not np.array_equal(full, other)
    assert full.min() >= 0 and full.max() <= 1

    # two different models see exactly the same noisy images
    seen = {}

    class Recorder(torch.nn.Module):
        def __init__(self, inner, key):
            super().__init__()
            self.inner, self.key = inner, key

        def forward(self, xb):
            seen.setdefault(self.key, []).append(xb.clone())
            return self.inner(xb)

    other_model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32 * 32, 10))
    noise_accuracy(Recorder(model, "a"), x[:20], y[:20], stds, seed=1, batch_size=8)
    noise_accuracy(Recorder(other_model, "b"), x[:20], y[:20], stds, seed=1, batch_size=8)
    for xa, xb in zip(seen["a"], seen["b"], strict=True):
        assert torch.equal(xa, xb)


def test_noise_rejects_bad_input(model, digits32):
    _, _, x, y = digits32
    with pytest.raises(RobustnessInputError, match="stds"):
        noise_accuracy(model, x, y, [0.1, -0.1], seed=0)
    with pytest.raises(RobustnessInputError, match=r"\(N, 1, H, W\)"):
        noise_accuracy(model, x[:, 0], y, [0.1], seed=0)
    with pytest.raises(RobustnessInputError, match=r"\[0, 1\]"):
        noise_accuracy(model, x * 255, y, [0.1], seed=0)
    with pytest.raises(RobustnessInputError, match="y"):
        noise_accuracy(model, x, y[:-1], [0.1], seed=0)


# ------------------------------------------------------------------------------------ corruptions
def test_every_corruption_runs_at_32x32_stays_in_range_and_is_deterministic(digits32):
    _, _, x, _ = digits32
    x = x[:3]
    families = ("noise", "blur", "weather", "digital")
    assert set(COMMON_CORRUPTIONS) == {n for f in families for n in CORRUPTION_FAMILIES[f]}
    assert len(COMMON_CORRUPTIONS) == 15 and len(ALL_CORRUPTIONS) == 18
    state = np.random.get_state()
    for name in ALL_CORRUPTIONS:
        for s in SEVERITIES:
            a = corrupt_images(x, name, s, seed=5)
            assert a.shape == x.shape and a.dtype == np.float32, name
            assert np.isfinite(a).all() and a.min() >= 0.0 and a.max() <= 1.0, (name, s)
            np.testing.assert_array_equal(a, corrupt_images(x, name, s, seed=5), err_msg=f"{name} {s}")
        assert np.abs(a - x).mean() > 1e-3, f"{name} at severity 5 left the images unchanged"
    # the caller's global numpy RNG state is left as it was
    after = np.random.get_state()
    assert after[0] == state[0] and np.array_equal(after[1], state[1]) and after[2:] == state[2:]


def test_corruption_randomness_follows_the_seed_and_not_the_chunking(digits32):
    _, _, x, _ = digits32
    x = x[:6]
    for name in ("gaussian_noise", "glass_blur", "impulse_noise", "frost", "elastic_transform"):
        a = corrupt_images(x, name, 3, seed=1)
        assert not np.array_equal(a, corrupt_images(x, name, 3, seed=2)), name
        chunks = [corrupt_images(x[i:i + 4], name, 3, seed=1, first_index=i, n_total=len(x)) for i in (0, 4)]
        np.testing.assert_array_equal(a, np.concatenate(chunks), err_msg=name)


def test_grayscale_noise_keeps_the_severity_std():
    # gaussian_noise severity 1 adds N(0, 0.08) per pixel; averaging the library's 3 independent RGB
    # noise channels would give 0.08 * 0.67 = 0.053 with luminance weights
    gray = np.full((40, 1, 32, 32), 0.5, dtype=np.float32)
    delta = corrupt_images(gray, "gaussian_noise", 1, seed=0) - gray
    assert delta.std() == pytest.approx(0.08, rel=0.05)
    assert abs(delta.mean()) < 0.005
    # a uniform image stays uniform under contrast reduction
    np.testing.assert_allclose(corrupt_images(gray, "contrast", 5, seed=0), 128 / 255, atol=1e-6)


def test_corruption_accuracy_matches_reference_and_summary(model, digits32):
    _, _, x, y = digits32
    x, y = x[:24], y[:24]
    names, sevs = ["gaussian_noise", "contrast", "pixelate"], [1, 5]
    acc = corruption_accuracy(model, x, y, names, sevs, seed=4, batch_size=10)
    assert list(acc) == [(n, s) for n in names for s in sevs]
    for (n, s), a in acc.items():
        ref = float((predict_labels(model, corrupt_images(x, n, s, seed=4)) == y).mean())
        assert a == pytest.approx(ref), (n, s)
    assert acc == corruption_accuracy(model, x, y, names, sevs, seed=4, batch_size=24)
    assert acc[("gaussian_noise", 5)] < _accuracy(model, x, y)
    summary = summarize_corruptions(acc)
    assert summary["mean"] == pytest.approx(np.mean(list(acc.values())))
    assert summary["per_corruption"]["contrast"] == pytest.approx((acc[("contrast", 1)] + acc[("contrast", 5)]) / 2)
    assert set(summary["per_family"]) == {"noise", "digital"}


def test_corruptions_reject_bad_input(model, digits32):
    _, _, x, y = digits32
    with pytest.raises(RobustnessInputError, match="at least 32"):
        corrupt_images(x[:2, :, :16, :16], "fog", 1, seed=0)
    with pytest.raises(RobustnessInputError, match="saturate"):
        corrupt_images(x[:2], "saturate", 1, seed=0)
    with pytest.raises(RobustnessInputError, match="unknown"):
        corruption_accuracy(model, x[:2], y[:2], ["rain"], [1])
    with pytest.raises(RobustnessInputError, match="severity"):
        corruption_accuracy(model, x[:2], y[:2], ["fog"], [6])


def test_corrupted_images_are_reused_across_models_and_equal_a_fresh_corruption():
    from pipeline.robustness import corruptions

    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, (6, 1, 32, 32)).astype(np.float32)
    cache = corruptions._CorruptedCache()
    first = cache.get(x, "gaussian_noise", 3, 7, 0, 6)
    assert cache.get(x, "gaussian_noise", 3, 7, 0, 6) is first  # served from the cache
    np.testing.assert_array_equal(first, corruptions.corrupt_images(x, "gaussian_noise", 3, 7))
    assert cache.get(x, "gaussian_noise", 3, 8, 0, 6) is not first  # another seed is another entry
