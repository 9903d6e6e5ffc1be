"""Control targets (Fig 4) and reference targets: shuffled, random, feature-model, contrast-energy, luminance,
population-activity and deflated similarity matrices, and the Eq 6 weights of the noise-free truth.

A target is an (n, n) float32 similarity matrix over n stimuli (images), in the order of the image ids the
caller keeps with it. The neural targets themselves come from pipeline.oracle.similarity (Eq 2, 6), the
'pixel' control from ``similarity.pixel_similarity``.

Reference targets (what a target's structure may be no more than; pipeline.target.diagnostics correlates with
them), all of one image set, pixels in [0, 255]:

- contrast-energy: Eq 2 on each image's local contrast energy pooled on a coarse grid. With x = pixels / 255,
  m = G_sigma * x (Gaussian blur, ``sigma`` pixels), the local RMS contrast map is c = sqrt(G_sigma * (x - m)^2);
  its mean in each cell of a ``grid`` = (rows, cols) partition of the image is one feature (rows * cols of
  them). Local RMS contrast is the energy of a band-pass (difference-of-Gaussian-like) filter bank summed over
  orientation and phase, i.e. what a pool of complex cells reports, without their orientation tuning.
- luminance: Eq 2 on the mean of x in each cell of the same grid.
- population activity: each image's overall population activity a_i (the mean over neurons of the scaled
  responses r~_ai of Eq 2 / Eq 6, before centring; see :func:`population_activity`), z-scored over images;
  its similarity is the rank-1 matrix S_ij = z_i z_j / max_k z_k^2, in [-1, 1]: the target a population
  would have if the one thing its vectors encoded were "how active". Sign-free (z and -z give the same S).
- deflated: a target with its leading k eigencomponents removed and re-normalised (:func:`deflate_target`).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from scipy import ndimage

from pipeline.oracle.similarity import NeuralDataError, as_responses, as_weights, population_similarity

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


# ------------------------------------------------------------------------------ image-statistic references

CONTRAST_GRID = (3, 4)       # default (rows, cols) of the pooling grid of the contrast-energy and luminance targets
CONTRAST_SIGMA = 2.0         # default width (pixels) of the local window of the contrast energy


def _as_images(images) -> np.ndarray:
    x = np.asarray(images, dtype=np.float32)
    if x.ndim != 3 or len(x) < 2:
        raise NeuralDataError(f"'images': expected at least 2 grayscale images (n, H, W), got shape {x.shape}. "
                              "Fix: pass the stimulus set")
    if not np.isfinite(x).all():
        raise NeuralDataError("'images': NaN or infinite pixels. Fix: repair the image set")
    return x


def check_grid(grid, image_shape: tuple[int, int] | None = None, name: str = "grid") -> tuple[int, int]:
    """(rows, cols) of a pooling grid: two integers >= 1, at most the image's height and width."""
    try:
        rows, cols = (int(g) for g in grid)
        ok = all(float(g) == int(g) for g in grid)
    except (TypeError, ValueError):
        ok = False
    if not ok or rows < 1 or cols < 1:
        raise NeuralDataError(f"'{name}': {grid!r} must be [rows, cols], two integers >= 1. Fix: e.g. [3, 4]")
    if image_shape is not None and (rows > image_shape[0] or cols > image_shape[1]):
        raise NeuralDataError(f"'{name}': {rows} x {cols} cells on images of {image_shape[0]} x {image_shape[1]} "
                              "pixels; a cell needs at least one pixel. Fix: a coarser grid")
    return rows, cols


def grid_pool(maps, grid=CONTRAST_GRID) -> np.ndarray:
    """(n, H, W) maps -> (n, rows * cols) float32: the mean of each cell of a near-equal rows x cols partition
    (row-major cell order; cell edges from np.array_split, so cells differ by at most one pixel)."""
    x = np.asarray(maps, dtype=np.float32)
    rows, cols = check_grid(grid, x.shape[1:])
    row_cells = np.array_split(np.arange(x.shape[1]), rows)
    col_cells = np.array_split(np.arange(x.shape[2]), cols)
    out = np.empty((len(x), rows * cols), dtype=np.float32)
    for a, r in enumerate(row_cells):
        band = x[:, r[0]:r[-1] + 1]
        for b, c in enumerate(col_cells):
            out[:, a * cols + b] = band[:, :, c[0]:c[-1] + 1].mean(axis=(1, 2), dtype=np.float64)
    return out


def local_contrast_energy(images, sigma: float = CONTRAST_SIGMA) -> np.ndarray:
    """(n, H, W) pixels in [0, 255] -> (n, H, W) float32 local RMS contrast sqrt(G_sigma * (x - G_sigma * x)^2),
    x = pixels / 255 (a blank image: 0 everywhere). Borders: reflected."""
    x = _as_images(images) / np.float32(255.0)
    if not float(sigma) > 0:
        raise NeuralDataError(f"'sigma': {sigma!r} must be a width in pixels > 0. Fix: e.g. 2.0")
    s = (0.0, float(sigma), float(sigma))
    mean = ndimage.gaussian_filter(x, s, mode="reflect")
    energy = ndimage.gaussian_filter((x - mean) ** 2, s, mode="reflect")
    return np.sqrt(np.maximum(energy, 0.0)).astype(np.float32)


def contrast_energy_features(images, grid=CONTRAST_GRID, sigma: float = CONTRAST_SIGMA) -> np.ndarray:
    """(n, H, W) -> (n, rows * cols) float32: the local contrast energy pooled on the grid."""
    return grid_pool(local_contrast_energy(images, sigma), grid)


def contrast_energy_similarity(images, grid=CONTRAST_GRID, sigma: float = CONTRAST_SIGMA) -> np.ndarray:
    """The 'contrast-energy' target: Eq 2 on :func:`contrast_energy_features` -> (n, n) float32."""
    return population_similarity(contrast_energy_features(images, grid, sigma))


def luminance_similarity(images, grid=CONTRAST_GRID) -> np.ndarray:
    """The luminance reference: Eq 2 on the mean luminance (pixels / 255) of each grid cell -> (n, n) float32."""
    return population_similarity(grid_pool(_as_images(images) / np.float32(255.0), grid))


# ------------------------------------------------------------------------------ population activity

def population_activity(responses, weights=None) -> np.ndarray:
    """a_i: the mean over neurons of the scaled responses w_a r_ai -> (n_images,) float64.

    responses: (n_images, n_neurons), e.g. a scan's predictions (Eq 6: weights w_a max(v_a, 0)), its noise-free
    truth, or its measured per-image responses (Eq 2: weights w_a); weights: (n_neurons,) or None (all 1).
    These are the vectors Eq 2 centres and normalises; a_i is their component along the all-ones direction.
    """
    r = as_responses(responses)
    w = np.ones(r.shape[1], np.float32) if weights is None else as_weights(weights, r.shape[1])
    return (r.astype(np.float64) @ w.astype(np.float64)) / r.shape[1]


def zscore(a) -> np.ndarray:
    """(n,) -> (n,) float64 standardised over its entries (all 0 for a constant a)."""
    a = np.asarray(a, np.float64)
    sd = a.std()
    return (a - a.mean()) / sd if sd > 0 else np.zeros_like(a)


def activity_similarity(activity) -> np.ndarray:
    """The population-activity reference: S_ij = z_i z_j / max_k z_k^2 for z = zscore(activity) -> (n, n)
    float32 in [-1, 1] (rank 1; all 0 for a constant activity). activity: (n,) one number per image, e.g. the
    mean over scans of each scan's z-scored :func:`population_activity`."""
    a = np.asarray(activity, np.float64)
    if a.ndim != 1 or len(a) < 2 or not np.isfinite(a).all():
        raise NeuralDataError(f"'activity': expected (n,) finite numbers with n >= 2, got shape {a.shape}. "
                              "Fix: one population activity per image")
    z = zscore(a)
    top = float(np.max(z * z))
    S = np.outer(z, z) / top if top > 0 else np.zeros((len(z), len(z)))
    return np.clip(S, -1.0, 1.0).astype(np.float32)


# ------------------------------------------------------------------------------ deflation

# A stimulus whose diagonal falls below this (its vector lay within the removed components) becomes a zero vector.
DEFLATE_DIAGONAL_ATOL = 1e-5


def deflate_target(S, k: int) -> np.ndarray:
    """The 'deflated' target: S without its leading k eigencomponents, re-normalised to unit diagonal.

    S' = S - sum_{m <= k} lambda_m v_m v_m^T over the k largest eigenvalues (pipeline.target.diagnostics
    .leading_eigen), then D^-1/2 S' D^-1/2 with D = diag(S'), so the result is again a cosine-similarity-like
    matrix: symmetric, diagonal 1, entries in [-1, 1] (clipped for rounding). Negative eigen-directions are left
    as they are: every target kind here is a mean of Gram matrices of unit vectors, positive semi-definite, so a
    negative eigenvalue is float rounding (order 1e-6) and S' stays positive semi-definite up to it, which keeps
    |S'_ij| <= sqrt(S'_ii S'_jj). A stimulus whose remaining diagonal S'_ii <= DEFLATE_DIAGONAL_ATOL (its vector
    lay within the removed components, or was zero to start with) is a zero vector afterwards: its row, column
    and diagonal are 0, as Eq 2 treats a zero vector. k must be < n.
    Returns (n, n) float32. Cost: one partial eigendecomposition (k pairs).
    """
    from pipeline.target.diagnostics import leading_eigen

    S = np.asarray(S)
    if S.ndim != 2 or S.shape[0] != S.shape[1]:
        raise NeuralDataError(f"'S': expected a square (n, n) target, got shape {S.shape}. "
                              "Fix: pass a similarity matrix")
    n = S.shape[0]
    if isinstance(k, bool) or int(k) != k or not 1 <= int(k) < n:
        raise NeuralDataError(f"'k': {k!r} components removed from a target of {n} images; need an integer "
                              f"1 <= k < {n}. Fix: a smaller k")
    values, vectors = leading_eigen(S, int(k))
    A = np.asarray(S, np.float64)
    A = 0.5 * (A + A.T) - (vectors * values) @ vectors.T
    d = np.diag(A).copy()
    keep = d > DEFLATE_DIAGONAL_ATOL
    inv = np.zeros(n)
    inv[keep] = 1.0 / np.sqrt(d[keep])
    A *= inv[:, None]
    A *= inv[None, :]
    np.clip(A, -1.0, 1.0, out=A)
    np.fill_diagonal(A, keep.astype(np.float64))
    return A.astype(np.float32)


# ------------------------------------------------------------------------------ the noise-free truth (Eq 6)

def truth_weights(snr_weight, v_truth) -> np.ndarray:
    """Eq 6's per-neuron scale for the noise-free truth: w_a * max(v_a, 0) -> (n_neurons,) float32.

    snr_weight: (n_neurons,) w of Eq 1 (OracleStats); v_truth: (n_neurons,) the truth's own held-out correlation
    with the measured single trials (pipeline.recording.truth.truth_correlation), on the same tier as a
    predictor's v (pipeline.predictor.train.heldout_tier). So 'neural-truth' is 'neural-model' with the
    predictions replaced by the truth, weights and all.
    """
    w = np.asarray(snr_weight)
    w = as_weights(w, w.shape[0] if w.ndim == 1 else -1, "snr_weight")
    v = as_weights(v_truth, len(w), "v_truth")
    return (w * np.clip(v, 0.0, None)).astype(np.float32)
