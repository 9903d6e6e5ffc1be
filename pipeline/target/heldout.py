"""Which images of a target are held out of regularisation (they measure brain-likeness instead)."""

from __future__ import annotations

import numpy as np

from pipeline.errors import ConfigError

HELDOUT_FRACTION = 0.1
HELDOUT_SEED = 20191208  # fixed: every target of an image set holds out the same images


HELDOUT_BY = ("source", "image")


def heldout_mask(n_images: int, fraction: float = HELDOUT_FRACTION, seed: int = HELDOUT_SEED,
                 sources=None) -> np.ndarray:
    """(n_images,) bool: the images kept out of regularisation.

    sources None: round(fraction * n_images) images chosen by a seeded permutation of their positions. The
    positions index the target's sorted image ids, so two targets over the same images and the same
    (fraction, seed) hold out the same images, whatever their kind.

    sources (n_images,) str, the photograph each image was cut from ('' unknown): whole photographs are held
    out, so brain-likeness is measured on photographs the classifier never saw during regularisation (crops
    of one photograph share content). The known photographs, in a seeded order, are taken until their images
    reach round(fraction * n_images) (at least one photograph, never all of them); images of unknown source
    count as their own photographs. With no known source at all this is exactly the per-image split above.
    """
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"heldout_fraction={fraction!r} must be in [0, 1). Fix: e.g. 0.1")
    n = int(n_images)
    want = int(round(fraction * n))
    mask = np.zeros(n, bool)
    known = None if sources is None else np.asarray(sources).astype(str) != ""
    if known is None or not known.any() or want == 0:
        mask[np.random.default_rng(seed).permutation(n)[:want]] = True
        return mask
    sources = np.asarray(sources).astype(str)
    if len(sources) != n:
        raise ConfigError(f"heldout_mask: sources has {len(sources)} entries for {n} images")
    groups = np.where(known, sources, np.char.add("image:", np.arange(n).astype(str)))
    names = np.unique(groups)
    if len(names) < 2:
        raise ConfigError(f"heldout_mask: every image comes from one photograph ({names[0]!r}), so none can be "
                          "held out by photograph. Fix: heldout_by='image'")
    for name in names[np.random.default_rng(seed).permutation(len(names))][:-1]:
        mask |= groups == name
        if mask.sum() >= want:
            break
    return mask
