"""Which images of a target are held out of regularisation (they measure brain-likeness instead)."""

from __future__ import annotations

import numpy as np

from pipeline.errors import ConfigError

HELDOUT_FRACTION = 0.1
HELDOUT_SEED = 20191208  # fixed: every target of an image set holds out the same images


def heldout_mask(n_images: int, fraction: float = HELDOUT_FRACTION, seed: int = HELDOUT_SEED) -> np.ndarray:
    """(n_images,) bool: round(fraction * n_images) images chosen by a seeded permutation of their positions.

    The positions index the target's sorted image ids, so two targets over the same images and the same
    (fraction, seed) hold out the same images, whatever their kind.
    """
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"heldout_fraction={fraction!r} must be in [0, 1). Fix: e.g. 0.1")
    order = np.random.default_rng(seed).permutation(int(n_images))
    mask = np.zeros(int(n_images), bool)
    mask[order[:int(round(fraction * n_images))]] = True
    return mask
