"""The similarity regulariser (Eq 8 - 10) against a loop-based reference, and its behaviour under training."""

import math

import numpy as np
import pytest
import torch

from pipeline.classifier.resnet import ARCHITECTURES, build_classifier
from pipeline.classifier.similarity_loss import (RegulariserError, SimilarityRegulariser, min_batch_for_pairs,
                                                 n_pairs)

torch.set_num_threads(1)

CHANNELS = {"conv1": 3, "layer1": 4, "layer3": 2}


def random_features(gen, b=5):
    return {"conv1": torch.randn(b, 3, 4, 5, generator=gen, dtype=torch.float64) + 1.0,
            "layer1": torch.randn(b, 4, 2, 3, generator=gen, dtype=torch.float64),
            "layer3": torch.relu(torch.randn(b, 2, 1, 2, generator=gen, dtype=torch.float64))}


def reference_loss(features, means, beta, target, eps):
    """Eq 8 - 10 with explicit loops over channels, stimuli and pairs."""
    gamma = [math.exp(v) for v in beta]
    gamma = [g / sum(gamma) for g in gamma]
    b = target.shape[0]
    s = np.zeros((b, b))
    for k, name in enumerate(features):
        f = features[name].numpy()
        centred = np.empty_like(f)
        for c in range(f.shape[1]):
            centred[:, c] = f[:, c] - means[name][c]
        for i in range(b):
            for j in range(b):
                fi, fj = centred[i].ravel(), centred[j].ravel()
                s[i, j] += gamma[k] * (fi @ fj) / (np.linalg.norm(fi) * np.linalg.norm(fj))
    clip = lambda v: min(max(v, -1 + eps), 1 - eps)  # noqa: E731
    gaps = [(math.atanh(clip(s[i, j])) - math.atanh(clip(target[i, j]))) ** 2
            for i in range(b) for j in range(i + 1, b)]
    return sum(gaps) / len(gaps)


def test_matches_loop_reference_including_running_mean_updates():
    gen = torch.Generator().manual_seed(0)
    reg = SimilarityRegulariser(CHANNELS, momentum=0.9, clip_eps=1e-3).double()
    with torch.no_grad():
        reg.beta.copy_(torch.tensor([0.3, -1.0, 0.8]))
    target = np.tanh(np.random.default_rng(0).normal(size=(5, 5)))
    target = (target + target.T) / 2
    target[0, 1] = target[1, 0] = 0.99999  # exercises the clip
    means = None
    for step in range(3):
        feats = random_features(gen)
        batch_means = {n: f.mean(dim=(0, 2, 3)).numpy() for n, f in feats.items()}
        means = batch_means if means is None else {n: 0.9 * means[n] + 0.1 * batch_means[n] for n in feats}
        loss = reg(feats, torch.from_numpy(target))
        assert loss.item() == pytest.approx(reference_loss(feats, means, [0.3, -1.0, 0.8], target, 1e-3), rel=1e-9)
        for n in feats:
            np.testing.assert_allclose(reg.running_mean(n).numpy(), means[n], rtol=1e-12)


def test_eval_mode_keeps_running_mean_and_no_gradient_through_it():
    gen = torch.Generator().manual_seed(1)
    reg = SimilarityRegulariser(CHANNELS).double()
    reg(random_features(gen), torch.zeros(5, 5, dtype=torch.float64))
    before = {n: reg.running_mean(n).clone() for n in CHANNELS}
    reg.eval()
    feats = {n: f.requires_grad_() for n, f in random_features(gen).items()}
    loss = reg(feats, torch.zeros(5, 5, dtype=torch.float64))
    for n in CHANNELS:
        assert torch.equal(reg.running_mean(n), before[n])
    loss.backward()
    assert reg.beta.grad is not None and reg.beta.grad.abs().sum() > 0
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in feats.values())
    assert not reg.running_mean("conv1").requires_grad


def test_gamma_softmax_of_zero_beta_and_sums_to_one():
    reg = SimilarityRegulariser(CHANNELS)
    torch.testing.assert_close(reg.gamma(), torch.full((3,), 1 / 3))
    with torch.no_grad():
        reg.beta.copy_(torch.tensor([5.0, -2.0, 0.1]))
    assert reg.gamma().sum().item() == pytest.approx(1.0, abs=1e-6)
    assert list(reg.gamma_dict()) == list(CHANNELS) and max(reg.gamma_dict(), key=reg.gamma_dict().get) == "conv1"


def test_similarity_is_a_cosine_matrix_and_4x_form():
    gen = torch.Generator().manual_seed(2)
    feats = random_features(gen, b=6)
    reg = SimilarityRegulariser(CHANNELS)
    s = reg.similarity({n: f.float() for n, f in feats.items()})
    assert s.shape == (6, 6)
    torch.testing.assert_close(s, s.T)
    torch.testing.assert_close(torch.diagonal(s), torch.ones(6))
    target = torch.rand(6, 6) - 0.5
    plain = SimilarityRegulariser(CHANNELS)(feats_f := {n: f.float() for n, f in feats.items()}, target)
    four = SimilarityRegulariser(CHANNELS, loss_form="arctanh-4x")(feats_f, target)
    torch.testing.assert_close(four, 4 * plain)


def test_pairs_per_batch():
    assert n_pairs(7) == 21 and min_batch_for_pairs(16) == 7 and min_batch_for_pairs(15) == 6


def test_bad_inputs_are_clear():
    reg = SimilarityRegulariser(CHANNELS)
    feats = {n: f.float() for n, f in random_features(torch.Generator().manual_seed(3)).items()}
    with pytest.raises(RegulariserError, match="target block"):
        reg(feats, torch.zeros(4, 4))
    with pytest.raises(RegulariserError, match="layer3"):
        reg({"conv1": feats["conv1"], "layer1": feats["layer1"]}, torch.zeros(5, 5))
    with pytest.raises(RegulariserError, match="loss_form"):
        SimilarityRegulariser(CHANNELS, loss_form="l2")


def pixel_similarity(stimuli):
    u = stimuli.reshape(len(stimuli), -1)
    u = u - u.mean(0)
    u = u / np.linalg.norm(u, axis=1, keepdims=True)
    return (u @ u.T).astype(np.float32)


def test_similarity_loss_falls_when_training_toward_a_matchable_target(monkeypatch):
    """A network trained on L_sim alone approaches the pixel similarity of its stimuli."""
    rng = np.random.default_rng(0)
    coarse = torch.from_numpy(rng.random((24, 1, 5, 9)).astype(np.float32))
    stimuli = torch.nn.functional.interpolate(coarse, size=(18, 32), mode="bilinear", align_corners=False)
    target = torch.from_numpy(pixel_similarity(stimuli.numpy()))
    monkeypatch.setitem(ARCHITECTURES, "resnet18-w4", "ResNet18 at width 4: for unit tests")
    torch.manual_seed(0)
    model = build_classifier("resnet18-w4", 10)
    channels = model.layer_channels()
    reg = SimilarityRegulariser({n: channels[n] for n in ("conv1", "layer1", "layer2")})
    opt = torch.optim.Adam(list(model.parameters()) + list(reg.parameters()), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(60):
        idx = torch.randperm(24, generator=gen)[:7]
        loss = reg(model.features(stimuli[idx], reg.layers), target[idx[:, None], idx[None, :]])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    assert last < 0.5 * first, (first, last)
