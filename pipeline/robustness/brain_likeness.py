"""How brain-like a classifier's representation is: its own similarity (Eq 9-10) against a neural target.

Measured on images the classifier was not regularised with (the target's held-out images), so a regularised
network cannot score by having memorised its target entries. The score is the Pearson correlation of the
off-diagonal entries (oracle.similarity.offdiagonal_correlation, the one the report uses too): NaN when either
matrix is constant off the diagonal.

Two definitions, both stored and named:

- **as trained** (:func:`brain_likeness_as_trained`, the headline): the similarity the regulariser computes and
  trains (similarity_loss.py): batch norm in TRAIN mode (normalised by the stimulus batch's own statistics, as in
  a regulariser step with ``stimulus_bn`` 'frozen' or 'update'), features centred by the regulariser's running
  CHANNEL mean fbar (broadcast over space), cosine, layers weighted by the learnt gamma. The held-out stimuli go
  through in batches of ``AS_TRAINED_BATCH`` (batch statistics of many stimuli, rather than of the training's
  B = 7, so the score does not depend on how the held-out images are split). A network trained without the
  regulariser (None, adversarial training) has no fbar: its features are centred by their channel mean over the
  held-out stimuli, the value the running mean converges to.
- **eval mode** (:func:`brain_likeness`): batch norm in eval mode (running statistics of the task images) and
  Eq 2 on the flattened features, centred PER ELEMENT over the held-out images: the representation the network
  classifies with, measured as the data targets are. The two can differ several-fold for one network.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from pipeline.classifier.resnet import LAYER_NAMES
from pipeline.classifier.similarity_loss import SimilarityRegulariser
from pipeline.oracle.similarity import offdiagonal_correlation, population_similarity


AS_TRAINED_BATCH = 256


def layer_similarities(model, stimuli: np.ndarray, layers: Sequence[str] = LAYER_NAMES,
                       batch_size: int = 128) -> dict[str, np.ndarray]:
    """Eq 9 per layer: {layer: (n, n) float32} for stimuli (n, H, W) in [0, 255].

    f^k_i is the flattened feature map of image i at layer k, centred by its mean over the n images (Eq 9's
    fbar^k), then cosine similarity: exactly Eq 2 applied to the features, hence population_similarity.
    """
    x = torch.as_tensor(np.asarray(stimuli, np.float32) / 255.0)[:, None]
    feats: dict[str, list[np.ndarray]] = {layer: [] for layer in layers}
    model.eval()
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            out = model.features(x[start:start + batch_size], layers)
            for layer in layers:
                feats[layer].append(out[layer].flatten(1).numpy())
    return {layer: population_similarity(np.concatenate(f)) for layer, f in feats.items()}


def combined_similarity(per_layer: Mapping[str, np.ndarray], gamma: Mapping[str, float] | None) -> np.ndarray:
    """Eq 10: sum_k gamma_k S^k; without gamma (an unregularised net) the uniform weights gamma starts from."""
    layers = list(per_layer)
    weights = np.array([gamma[k] for k in layers]) if gamma else np.full(len(layers), 1 / len(layers))
    return sum(w * per_layer[k] for w, k in zip(weights, layers)).astype(np.float32)


def brain_likeness(model, stimuli: np.ndarray, target: np.ndarray,
                   gamma: Mapping[str, float] | None) -> tuple[float, dict[str, float]]:
    """(combined r, {layer: r}): the classifier's similarity on ``stimuli`` against ``target`` (n, n).

    stimuli: (n, H, W) in [0, 255], the target's held-out images; gamma: the trained network's {layer: softmax
    weight} (Table 1), {} or None when it was not regularised. The combined similarity (Eq 10) sums the
    regularised layers weighted by gamma, or all layers with uniform weights when there is no gamma; the
    per-layer correlations cover every readable layer either way.
    """
    per_layer = layer_similarities(model, stimuli)
    used = {k: v for k, v in per_layer.items() if not gamma or k in gamma}
    combined = offdiagonal_correlation(combined_similarity(used, gamma), target)
    return combined, {k: offdiagonal_correlation(v, target) for k, v in per_layer.items()}


def as_trained_similarities(model, stimuli: np.ndarray, layers: Sequence[str] = LAYER_NAMES,
                            channel_means: Mapping[str, np.ndarray] | None = None,
                            batch_size: int = AS_TRAINED_BATCH) -> dict[str, np.ndarray]:
    """Eq 9 as the regulariser computes it: {layer: (n, n) float32} for stimuli (n, H, W) in [0, 255].

    Train-mode batch norm on batches of ``batch_size`` stimuli (running statistics left untouched), features
    centred by ``channel_means[layer]`` (C,) (the regulariser's fbar) or, for layers it lacks, by their channel
    mean over all n stimuli; then cosine similarity of the flattened centred maps.
    """
    from pipeline.classifier.train import frozen_bn_statistics

    x = torch.as_tensor(np.asarray(stimuli, np.float32) / 255.0)[:, None]
    feats: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
    was_training = model.training
    model.train()
    try:
        with torch.no_grad(), frozen_bn_statistics(model, True):
            for start in range(0, len(x), batch_size):
                out = model.features(x[start:start + batch_size], layers)
                for layer in layers:
                    feats[layer].append(out[layer])
    finally:
        model.train(was_training)
    # the regulariser's own Eq 9 (similarity_loss.SimilarityRegulariser, in eval mode: fbar is used, not updated)
    features = {layer: torch.cat(f) for layer, f in feats.items()}
    regulariser = SimilarityRegulariser({layer: f.shape[1] for layer, f in features.items()}).eval()
    for layer, f in features.items():
        if channel_means and layer in channel_means:
            mean = torch.as_tensor(np.array(channel_means[layer], dtype=np.float32))
        else:
            mean = f.mean(dim=[d for d in range(f.ndim) if d != 1])
        regulariser.running_mean(layer).copy_(mean)
    with torch.no_grad():
        sims = regulariser.layer_similarities(features)
    return {layer: sims[k].numpy().astype(np.float32) for k, layer in enumerate(regulariser.layers)}


def brain_likeness_as_trained(model, stimuli: np.ndarray, target: np.ndarray, gamma: Mapping[str, float] | None,
                              channel_means: Mapping[str, np.ndarray] | None = None
                              ) -> tuple[float, dict[str, float]]:
    """(combined r, {layer: r}) with the similarity as trained (see the module docstring); arguments as
    :func:`brain_likeness`, plus the regulariser's running channel means ({layer: (C,)}, None if unregularised)."""
    per_layer = as_trained_similarities(model, stimuli, channel_means=channel_means)
    used = {k: v for k, v in per_layer.items() if not gamma or k in gamma}
    combined = offdiagonal_correlation(combined_similarity(used, gamma), target)
    return combined, {k: offdiagonal_correlation(v, target) for k, v in per_layer.items()}
