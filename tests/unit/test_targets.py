"""Control targets (shuffle, random, feature-model) and the VGG19 feature extractor."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.oracle.similarity import NeuralDataError, population_similarity
from pipeline.target.controls import (
    feature_similarity,
    layer_features,
    random_target,
    shuffle_target,
    stimulus_permutation,
)
from pipeline.target.vgg import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    VGG19Features,
    VGGInputError,
    VGGWeightsError,
    grayscale_to_vgg_input,
    load_vgg19_features,
    vgg19_layer_names,
)

torch.set_num_threads(1)


@pytest.fixture
def rng():
    return np.random.default_rng(11)


# ------------------------------------------------------------------ shuffle, random

def test_shuffle_is_a_seeded_permutation_of_the_target(rng):
    S = population_similarity(rng.standard_normal((20, 7)))
    T = shuffle_target(S, seed=3)
    p = stimulus_permutation(20, seed=3)
    assert sorted(p.tolist()) == list(range(20)) and not np.array_equal(p, np.arange(20))
    for i in range(20):
        for j in range(20):
            assert T[i, j] == S[p[i], p[j]]
    np.testing.assert_array_equal(np.sort(T.ravel()), np.sort(S.ravel()))  # same entries
    np.testing.assert_array_equal(np.diag(T), np.diag(S)[p])  # diagonal stays on the diagonal
    np.testing.assert_array_equal(T, T.T)
    inverse = np.argsort(p)
    np.testing.assert_array_equal(T[np.ix_(inverse, inverse)], S)
    np.testing.assert_array_equal(shuffle_target(S, seed=3), T)
    assert not np.array_equal(shuffle_target(S, seed=4), T)
    with pytest.raises(NeuralDataError, match="'S'"):
        shuffle_target(np.zeros((3, 4)), seed=0)


def test_random_target_is_a_valid_seeded_similarity():
    T = random_target(30, seed=1, dim=8)
    assert T.dtype == np.float32 and T.shape == (30, 30)
    np.testing.assert_array_equal(T, T.T)
    np.testing.assert_array_equal(np.diag(T), 1.0)
    assert T.min() >= -1 and T.max() <= 1
    eig = np.linalg.eigvalsh(T.astype(np.float64))
    assert eig.min() > -1e-5 and (eig > 1e-5).sum() <= 8  # PSD, rank <= dim
    np.testing.assert_array_equal(random_target(30, seed=1, dim=8), T)
    assert not np.array_equal(random_target(30, seed=2, dim=8), T)
    off = random_target(200, seed=0)[np.triu_indices(200, 1)]
    assert abs(off.std() - 1 / np.sqrt(200)) < 0.2 / np.sqrt(200)


# ------------------------------------------------------------------ feature-model

def test_feature_similarity_is_eq2_on_flattened_activations_across_batches(rng):
    images = rng.uniform(size=(11, 6, 8)).astype(np.float32)
    kernel = torch.from_numpy(rng.standard_normal((4, 1, 3, 3)).astype(np.float32))
    calls = []

    def extractor(batch, layer):
        calls.append((len(batch), layer, torch.is_grad_enabled()))
        return torch.relu(F.conv2d(batch[:, None], kernel))

    S = feature_similarity(images, extractor, "conv", batch_size=4)
    acts = torch.relu(F.conv2d(torch.from_numpy(images)[:, None], kernel)).reshape(11, -1).numpy()
    np.testing.assert_allclose(S, population_similarity(acts), atol=1e-6)
    assert [c[0] for c in calls] == [4, 4, 3] and all(c[1] == "conv" for c in calls)
    assert not any(c[2] for c in calls)  # run under no_grad
    np.testing.assert_allclose(layer_features(images, extractor, "conv", batch_size=100), acts, atol=1e-6)
    with pytest.raises(NeuralDataError, match="images"):
        feature_similarity(images[0], extractor, "conv")


# ------------------------------------------------------------------ VGG19

def test_layer_names_follow_torchvision_indices():
    names = vgg19_layer_names()
    assert len(names) == 37
    assert names[0] == "conv1_1" and names[4] == "pool1" and names[10] == "conv3_1"
    assert names[11] == "relu3_1" and names[19] == "conv4_1" and names[36] == "pool5"
    convs = [k for k, m in enumerate(VGG19Features().features) if isinstance(m, torch.nn.Conv2d)]
    assert convs == [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]


@pytest.fixture(scope="module")
def vgg_weights(tmp_path_factory):
    """A torchvision-style full VGG19 state_dict (features.* plus classifier.* keys), saved by the test."""
    torch.manual_seed(0)
    state = {f"features.{k}": v.clone() for k, v in VGG19Features().features.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(4, 3)  # torchvision's head: must be ignored
    path = tmp_path_factory.mktemp("vgg") / "vgg19-dcbb9e9d.pth"
    torch.save(state, path)
    return path, state


def test_load_vgg19_features_loads_the_saved_weights(vgg_weights):
    path, state = vgg_weights
    model = load_vgg19_features(path)
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_conv3_1_of_grayscale_stimuli_matches_manual_computation(vgg_weights, rng):
    path, state = vgg_weights
    model = load_vgg19_features(path)
    gray = rng.uniform(0, 255, size=(2, 36, 64)).astype(np.float32)
    out = model.grayscale_activations(torch.from_numpy(gray), "conv3_1", pixel_scale=255.0)
    assert tuple(out.shape) == (2, 256, 9, 16)
    # manual: replicate gray, ImageNet-normalise, conv-relu-conv-relu-pool x2, conv
    x = torch.from_numpy(gray / 255.0)[:, None].repeat(1, 3, 1, 1)
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def conv(x, k):
        return F.conv2d(x, state[f"features.{k}.weight"], state[f"features.{k}.bias"], padding=1)

    x = F.max_pool2d(F.relu(conv(F.relu(conv(x, 0)), 2)), 2)
    x = F.max_pool2d(F.relu(conv(F.relu(conv(x, 5)), 7)), 2)
    expected = conv(x, 10)
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(model.grayscale_activations(torch.from_numpy(gray), "relu3_1", 255.0),
                               F.relu(expected), atol=1e-4, rtol=1e-4)
    S = feature_similarity(gray, lambda b, layer: model.grayscale_activations(b, layer, 255.0), "conv3_1")
    assert S.shape == (2, 2)


def test_vgg_input_checks():
    x = grayscale_to_vgg_input(torch.full((1, 2, 3), 0.5))
    torch.testing.assert_close(x[0, :, 0, 0], (0.5 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD))
    with pytest.raises(VGGInputError, match="pixel_scale=255"):
        grayscale_to_vgg_input(torch.full((1, 2, 3), 200.0))
    with pytest.raises(VGGInputError, match="grayscale"):
        grayscale_to_vgg_input(torch.zeros(2, 3, 4, 4))
    with pytest.raises(VGGInputError, match="layer"):
        VGG19Features().layer_index("conv9_9")


def test_missing_or_mismatched_weights_raise(tmp_path, vgg_weights):
    with pytest.raises(VGGWeightsError, match="not found.*never falls back to random"):
        load_vgg19_features(tmp_path / "absent.pth")
    _, state = vgg_weights
    short = {k: v for k, v in state.items() if k != "features.34.weight"}
    torch.save(short, tmp_path / "short.pth")
    with pytest.raises(VGGWeightsError, match="missing.*features.34.weight"):
        load_vgg19_features(tmp_path / "short.pth")
    wrong = dict(state)
    wrong["features.0.weight"] = torch.zeros(64, 1, 3, 3)
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(VGGWeightsError, match="shapes differ.*features.0.weight"):
        load_vgg19_features(tmp_path / "wrong.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(VGGWeightsError, match="cannot be read"):
        load_vgg19_features(tmp_path / "junk.pth")
