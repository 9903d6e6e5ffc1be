"""Control targets (Fig 4): shuffled, random and feature-model similarity matrices.

A target is an (n, n) float32 similarity matrix over n stimuli (images), in the order of the image ids the
caller keeps with it. The neural targets themselves come from pipeline.oracle.similarity (Eq 2, 6), the
'pixel' control from ``similarity.pixel_similarity``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from pipeline.oracle.similarity import NeuralDataError, population_similarity

# The extractor of feature_similarity: a (batch, H, W) float32 tensor of grayscale pixels and a layer name
# -> that layer's activations (batch, ...). VGG19Features.grayscale_activations is one.
Extractor = Callable[[torch.Tensor, str], torch.Tensor]


def stimulus_permutation(n: int, seed: int) -> np.ndarray:
    """(n,) int64: the seeded permutation of stimulus order that shuffle_target applies."""
    return np.random.default_rng(seed).permutation(int(n))


def shuffle_target(S, seed: int) -> np.ndarray:
    """The 'shuffle' control: S[p][:, p] for the seeded permutation p = stimulus_permutation(n, seed).

    Rows and columns are permuted together, so the result is again a valid similarity matrix (symmetric,
    its diagonal stays on the diagonal) with the same entries, but attached to the wrong images.
    """
    S = np.asarray(S)
    if S.ndim != 2 or S.shape[0] != S.shape[1]:
        raise NeuralDataError(f"'S': expected a square (n, n) target, got shape {S.shape}. "
                              "Fix: pass a similarity matrix")
    p = stimulus_permutation(S.shape[0], seed)
    return S[np.ix_(p, p)]


def random_target(n: int, seed: int, dim: int | None = None) -> np.ndarray:
    """The 'random' control: Eq 2 applied to i.i.d. standard normal 'responses' (n, dim) -> (n, n) float32,
    i.e. the Gram matrix of random centred unit vectors (symmetric, positive semi-definite, diagonal 1).
    dim: the number of random 'neurons' (default n); off-diagonal entries spread about 1/sqrt(dim)."""
    dim = int(n) if dim is None else int(dim)
    if int(n) < 2 or dim < 1:
        raise NeuralDataError(f"'n', 'dim': got n={n}, dim={dim}; need n >= 2 stimuli and dim >= 1")
    rng = np.random.default_rng(seed)
    return population_similarity(rng.standard_normal((int(n), dim), dtype=np.float32))


def layer_features(images, extractor: Extractor, layer: str, batch_size: int = 64,
                   device: str | torch.device = "cpu") -> np.ndarray:
    """Flattened activations of ``layer`` for every image: (n_images, H, W) -> (n_images, n_features) float32,
    computed in batches under torch.no_grad()."""
    x = np.asarray(images, dtype=np.float32)
    if x.ndim != 3 or len(x) < 2:
        raise NeuralDataError(f"'images': expected at least 2 grayscale images (n, H, W), got shape {x.shape}. "
                              "Fix: pass the stimulus set")
    if batch_size < 1:
        raise NeuralDataError(f"'batch_size': {batch_size}; must be >= 1")
    out = None
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            batch = torch.from_numpy(x[start:start + batch_size]).to(device)
            acts = extractor(batch, layer).reshape(len(batch), -1).float().cpu().numpy()
            if out is None:  # the feature count is known after the first batch
                out = np.empty((len(x), acts.shape[1]), dtype=np.float32)
            out[start:start + len(batch)] = acts
    return out


def feature_similarity(images, extractor: Extractor, layer: str, batch_size: int = 64,
                       device: str | torch.device = "cpu") -> np.ndarray:
    """The 'feature-model' control: Eq 2 on a layer's flattened activations -> (n_images, n_images) float32.

    images: (n_images, H, W) grayscale in the units the extractor expects; extractor(batch, layer)
    returns (batch, ...) activations (e.g. ``load_vgg19_features(path).grayscale_activations`` with
    layer 'conv3_1'). Memory: the (n_images, n_features) activations, float32 (5000 images of 36 x 64
    at VGG19 conv3_1: 5000 x 36864 x 4 bytes = 0.74 GB).
    """
    return population_similarity(layer_features(images, extractor, layer, batch_size, device))
