"""Brain-likeness: layer similarities of a model with known features, Eq 10's gamma weighting, the gamma filter,
the off-diagonal correlation (1 with itself, -1 with its negation, NaN when degenerate)."""

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from pipeline.classifier.resnet import LAYER_NAMES
from pipeline.oracle.similarity import offdiagonal_correlation
from pipeline.robustness.brain_likeness import brain_likeness, combined_similarity, layer_similarities

N, H, W = 12, 6, 8


class KnownFeatures(nn.Module):
    """Layer 'conv1' is the pixels in [0, 1]; each later layer a fixed random linear map of them."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.maps = {layer: torch.randn(H * W, 5 + k, generator=g) for k, layer in enumerate(LAYER_NAMES[1:])}

    def features(self, x, layers):
        flat = x.flatten(1)
        return {layer: x if layer == "conv1" else (flat @ self.maps[layer]) for layer in layers}


def cosine_of_centred(features: np.ndarray) -> np.ndarray:
    """Eq 9 by hand: centre each feature across images, then cosine similarity of the images' vectors."""
    u = features.reshape(len(features), -1).astype(np.float64)
    u = u - u.mean(0)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    return u @ u.T


@pytest.fixture(scope="module")
def stimuli():
    return (255 * np.random.default_rng(1).random((N, H, W))).astype(np.float32)


@pytest.fixture(scope="module")
def model():
    return KnownFeatures()


@pytest.fixture(scope="module")
def per_layer(model, stimuli):
    return layer_similarities(model, stimuli, batch_size=5)  # batches of 5 stitched back together


def test_layer_similarities_are_eq9_of_the_features(model, per_layer, stimuli):
    assert list(per_layer) == list(LAYER_NAMES)
    pixels = stimuli / 255.0
    np.testing.assert_allclose(per_layer["conv1"], cosine_of_centred(pixels), atol=1e-5)
    mapped = pixels.reshape(N, -1) @ model.maps["layer2"].numpy()
    np.testing.assert_allclose(per_layer["layer2"], cosine_of_centred(mapped), atol=1e-5)
    assert not np.allclose(per_layer["conv1"], per_layer["layer2"], atol=1e-2)


def test_combined_similarity_is_the_gamma_weighted_sum(per_layer):
    gamma = {"conv1": 0.1, "layer1": 0.2, "layer2": 0.3, "layer3": 0.15, "layer4": 0.25}
    expected = sum(g * per_layer[k].astype(np.float64) for k, g in gamma.items())
    np.testing.assert_allclose(combined_similarity(per_layer, gamma), expected, atol=1e-6)
    uniform = sum(per_layer[k].astype(np.float64) for k in LAYER_NAMES) / len(LAYER_NAMES)
    np.testing.assert_allclose(combined_similarity(per_layer, {}), uniform, atol=1e-6)
    np.testing.assert_allclose(combined_similarity(per_layer, None), uniform, atol=1e-6)


def test_a_layer_correlates_1_with_itself_and_minus_1_with_its_negation(model, stimuli, per_layer):
    target = per_layer["conv1"]
    _, r = brain_likeness(model, stimuli, target, {})
    assert r["conv1"] == pytest.approx(1.0, abs=1e-6)
    _, r_neg = brain_likeness(model, stimuli, -target, {})
    assert r_neg["conv1"] == pytest.approx(-1.0, abs=1e-6)
    assert all(r_neg[k] == pytest.approx(-r[k], abs=1e-6) for k in LAYER_NAMES)
    assert all(-1.0 <= v <= 1.0 for v in r.values())


def test_gamma_filters_the_combined_layers_but_every_layer_is_scored(model, stimuli, per_layer):
    target = per_layer["layer3"] + 0.5 * per_layer["conv1"]
    only, r = brain_likeness(model, stimuli, target, {"conv1": 1.0})
    assert set(r) == set(LAYER_NAMES)
    assert only == pytest.approx(r["conv1"], abs=1e-6)
    gamma = {"conv1": 0.25, "layer3": 0.75}
    two, _ = brain_likeness(model, stimuli, target, gamma)
    weighted = 0.25 * per_layer["conv1"] + 0.75 * per_layer["layer3"]
    assert two == pytest.approx(offdiagonal_correlation(weighted, target), abs=1e-6)
    unregularised, _ = brain_likeness(model, stimuli, target, {})
    uniform = sum(per_layer[k] for k in LAYER_NAMES) / len(LAYER_NAMES)
    assert unregularised == pytest.approx(offdiagonal_correlation(uniform, target), abs=1e-6)
    assert len({round(v, 6) for v in (only, two, unregularised)}) == 3  # the filter changes the score
    assert isinstance(only, float) and all(isinstance(v, float) for v in r.values())


def test_a_degenerate_target_gives_nan_not_zero(model, stimuli):
    combined, r = brain_likeness(model, stimuli, np.ones((N, N), np.float32), {})
    assert math.isnan(combined) and all(math.isnan(v) for v in r.values())


def test_as_trained_is_the_similarity_the_regulariser_trains():
    """With the regulariser's running means, the as-trained similarity is exactly what its forward computes on
    the same stimulus batch (train-mode BN, channel-mean centring); the eval-mode definition differs."""
    import torch

    from pipeline.classifier.resnet import build_classifier
    from pipeline.classifier.similarity_loss import SimilarityRegulariser
    from pipeline.robustness.brain_likeness import as_trained_similarities, layer_similarities

    torch.manual_seed(0)
    model = build_classifier("resnet10-w8", 10)
    model.train()
    with torch.no_grad():  # give batch norm running statistics unlike the stimuli's
        model(torch.rand(64, 1, 32, 32) * 0.3)
    layers = ("layer1", "layer3")
    reg = SimilarityRegulariser({k: model.layer_channels()[k] for k in layers})
    stimuli = np.random.default_rng(0).uniform(0, 255, (12, 36, 64)).astype(np.float32)
    x = torch.as_tensor(stimuli / 255.0)[:, None]
    reg.train()
    with torch.no_grad():
        reg.layer_similarities(model.features(torch.rand(12, 1, 36, 64), layers))  # sets fbar
    reg.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.train()
        expected = reg.layer_similarities(model.features(x, layers)).numpy()
    means = {k: reg.running_mean(k).numpy() for k in layers}
    model.load_state_dict(before)
    got = as_trained_similarities(model, stimuli, layers, channel_means=means)
    for i, k in enumerate(layers):
        np.testing.assert_allclose(got[k], expected[i], atol=2e-5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()
               if "running" in k)  # batch-norm statistics untouched
    evaluated = layer_similarities(model, stimuli, layers)
    assert np.abs(evaluated["layer3"] - got["layer3"]).max() > 1e-2
