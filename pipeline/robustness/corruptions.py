"""Common corruptions (CIFAR-10-C / ImageNet-C style) applied on the fly to grayscale images.

The corruption functions are those of the maintained ``imagecorruptions`` package (imagecorruptions-imaug
1.1.5, Michaelis et al. 2019, a port of Hendrycks & Dietterich 2019): 15 common corruptions in four
families (noise, blur, weather, digital) plus 3 usable held-out ones, each at severities 1..5.

Caveats that matter for reading the numbers:
- The library's severity parameters are those of ImageNet-C, not the (milder) ones Hendrycks used to
  make CIFAR-10-C, so at 32 x 32 several corruptions (defocus/motion blur, contrast, frost) are harsher
  than in the published CIFAR-10-C files; compare models with each other, not with published CIFAR-10-C
  accuracies.
- Images are quantised to uint8 before corrupting (the library's input type); the corrupted result is
  kept in float (not re-quantised), see ``corrupt_images``.

Grayscale handling: the library stacks a 2-D image into 3 identical RGB channels and returns (H, W, 3).
We return one channel:
- noise corruptions that draw independent noise per RGB channel (gaussian, shot, impulse, speckle):
  channel 0, so the noise keeps the std of the severity table (averaging 3 independent channels would
  divide it by about 1.7);
- all others: ITU-R 601 luminance (0.299 R + 0.587 G + 0.114 B, the library's own rgb2gray), which for
  the colour overlays (frost, spatter) is what a grayscale camera would see and for the rest equals any
  channel.
'saturate' is rejected: it changes HSV saturation, which a gray image does not have (at severities 1-3 it
is the identity on every channel).

Size: the library refuses images smaller than 32 x 32 (its ``corrupt`` wrapper raises). Every remaining corruption
was checked to run at exactly 32 x 32 with numpy 2 (tests/unit/test_noise_corruptions.py runs every name
at every severity); nothing needed special-casing at 32 x 32. For smaller images we raise a clear error
rather than silently upsampling, since the corruption parameters are in pixels.

Determinism: every image gets its own seed, drawn from ``np.random.default_rng([seed, corruption, severity])``
in image order, so the corrupted image i depends only on (x[i], name, severity, seed, i), not on batching
or on the other corruptions evaluated. The library draws from numpy's global RNG (and glass_blur from
numba's, which it seeds from its ``seed`` argument); we seed it per image and restore the caller's global
numpy state afterwards. Not thread-safe (global RNG).

Configuration (``corruption_config``, a plain dict a DataJoint paramset can hold; ``resolve_corruption_config``
checks it and fills the defaults when it is entered):
    corruptions  non-empty list of distinct names from ``ALL_CORRUPTIONS``, default the 15 ``COMMON_CORRUPTIONS``
    severities   non-empty list of distinct integers in 1..5, default [1, 2, 3, 4, 5]
    n_samples    how many test samples (a seeded subset, see ``samples.select_samples``); None = all (default)
    seed         picks the samples and seeds the corruptions, default 0
"""

from __future__ import annotations

import hashlib
import zlib
from collections import OrderedDict
from typing import Mapping, Sequence

import numpy as np
import torch

from pipeline.checks import check_keys, is_int
from pipeline.devices import resolve_device

from .errors import RobustnessConfigError, RobustnessInputError
from .images import check_batch_size, check_images, predict_labels
from .samples import resolve_n_samples, resolve_seed

__all__ = [
    "CORRUPTION_FAMILIES",
    "COMMON_CORRUPTIONS",
    "ALL_CORRUPTIONS",
    "SEVERITIES",
    "MIN_SIZE",
    "CORRUPTION_KEYS",
    "resolve_corruption_config",
    "corrupt_images",
    "corruption_accuracy",
    "summarize_corruptions",
]

CORRUPTION_FAMILIES: dict[str, tuple[str, ...]] = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    "weather": ("snow", "frost", "fog", "brightness"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression"),
    # the library's held-out ("validation") corruptions usable on grayscale images
    "extra": ("speckle_noise", "gaussian_blur", "spatter"),
}
COMMON_CORRUPTIONS: tuple[str, ...] = tuple(
    n for fam in ("noise", "blur", "weather", "digital") for n in CORRUPTION_FAMILIES[fam]
)
ALL_CORRUPTIONS: tuple[str, ...] = COMMON_CORRUPTIONS + CORRUPTION_FAMILIES["extra"]
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
MIN_SIZE = 32  # imagecorruptions.corrupt rejects images smaller than 32 x 32
CORRUPTION_KEYS = ("corruptions", "severities", "n_samples", "seed")

# independent noise per RGB channel: keep one channel (see module docstring)
_PER_CHANNEL_NOISE = frozenset({"gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"})
# corruptions whose library function takes a `seed` argument instead of (only) numpy's global RNG
_SEED_ARGUMENT = frozenset({"glass_blur", "impulse_noise"})
_LUMINANCE = np.array([0.299, 0.587, 0.114])


def _check_name(name, what: str = "corruption", error: type[Exception] = RobustnessInputError) -> str:
    if name == "saturate":
        raise error(f"{what} 'saturate' changes colour saturation and has no effect on grayscale images; drop it")
    if name not in ALL_CORRUPTIONS:
        raise error(f"{what} {name!r} is unknown; choose from {list(ALL_CORRUPTIONS)}")
    return str(name)


def _check_severity(severity, what: str = "severity", error: type[Exception] = RobustnessInputError) -> int:
    if severity not in SEVERITIES:
        raise error(f"{what}: expected an integer in 1..5, got {severity!r}")
    return int(severity)


def _distinct_list(values, what: str) -> list:
    """``values`` (a list or tuple, not a string) as a non-empty list without repeats, else RobustnessConfigError."""
    if not isinstance(values, (list, tuple, np.ndarray)) or len(values) == 0:
        raise RobustnessConfigError(f"{what}={values!r} must be a non-empty list")
    values = [v.item() if isinstance(v, np.generic) else v for v in values]
    repeated = sorted({str(v) for v in values if values.count(v) > 1})
    if repeated:
        raise RobustnessConfigError(f"{what} repeats {repeated} (each would be one result row). Fix: list each once")
    return values


def resolve_corruption_config(params: Mapping) -> dict:
    """The complete, checked corruption configuration: {'corruptions', 'severities', 'n_samples', 'seed'}.

    Defaults: corruptions ``COMMON_CORRUPTIONS``, severities 1..5, n_samples None (every test sample), seed 0.
    Unknown keys are an error. Plain Python types, idempotent.
    Raises RobustnessConfigError (a ``pipeline.errors.ConfigError``) naming the field and the fix.
    """
    if not isinstance(params, Mapping):
        raise RobustnessConfigError(f"corruption config must be a dict with keys {list(CORRUPTION_KEYS)}, "
                                    f"got {type(params).__name__}")
    check_keys(params, CORRUPTION_KEYS, "corruption config", error=RobustnessConfigError)
    names = _distinct_list(params.get("corruptions", list(COMMON_CORRUPTIONS)), "corruption config corruptions")
    severities = _distinct_list(params.get("severities", list(SEVERITIES)), "corruption config severities")
    for s in severities:
        if not is_int(s):
            raise RobustnessConfigError(f"corruption config severities: {s!r} is not an integer. Fix: use 1..5")
    return {
        "corruptions": [_check_name(n, "corruption config corruptions:", RobustnessConfigError) for n in names],
        "severities": [_check_severity(s, "corruption config severities", RobustnessConfigError) for s in severities],
        "n_samples": resolve_n_samples(params.get("n_samples"), "corruption config"),
        "seed": resolve_seed(params.get("seed", 0), "corruption config"),
    }


def _image_seeds(n: int, name: str, severity: int, seed: int) -> np.ndarray:
    """(n,) uint32 per-image seeds for one (corruption, severity); crc32 gives a stable id for the name."""
    rng = np.random.default_rng([int(seed), zlib.crc32(name.encode()), int(severity)])
    return rng.integers(0, 2**32, size=n, dtype=np.uint64).astype(np.uint32)


def _to_gray(rgb: np.ndarray, name: str) -> np.ndarray:
    """(H, W, 3) library output in [0, 255] -> (H, W) float32 in [0, 1]."""
    if name in _PER_CHANNEL_NOISE:
        gray = rgb[..., 0]
    else:
        gray = rgb @ _LUMINANCE
    return np.clip(gray / 255.0, 0.0, 1.0).astype(np.float32)


def corrupt_images(x: np.ndarray, name: str, severity: int, seed: int, *, first_index: int = 0,
                   n_total: int | None = None) -> np.ndarray:
    """Apply one corruption at one severity to every image.

    Args:
        x: (N, 1, H, W) float images in [0, 1], H and W >= 32.
        name: a corruption from ``ALL_CORRUPTIONS``.
        severity: 1..5.
        seed: seeds the corruption's randomness; same seed, same output.
        first_index, n_total: for corrupting a chunk of a larger set: image k of ``x`` is image
            first_index + k of a set of n_total, and gets that image's seed (so chunking does not matter).
    Returns:
        (N, 1, H, W) float32 corrupted images in [0, 1].
    """
    from imagecorruptions import corruption_dict  # heavy import (cv2, numba): only when used
    from PIL import Image

    x, _ = check_images(x)
    _check_name(name)
    _check_severity(severity)
    h, w = x.shape[2:]
    if h < MIN_SIZE or w < MIN_SIZE:
        raise RobustnessInputError(
            f"x: corruptions need images of at least {MIN_SIZE} x {MIN_SIZE} pixels (the imagecorruptions "
            f"library's limit; its parameters are in pixels), got {h} x {w}; upsample the images first"
        )
    n_total = len(x) + first_index if n_total is None else n_total
    seeds = _image_seeds(n_total, name, severity, seed)[first_index:first_index + len(x)]
    images = np.round(x[:, 0] * 255.0).astype(np.uint8)
    out = np.empty_like(x)
    saved = np.random.get_state()
    try:
        # a Python loop over images: the library corrupts one image per call
        for k, (img, s) in enumerate(zip(images, seeds)):
            np.random.seed(int(s))
            kwargs = {"seed": int(s)} if name in _SEED_ARGUMENT else {}
            # the library's own `corrupt` wrapper does exactly this, then truncates the float result to uint8
            # (np.uint8(x)), a bias of -0.5/255 on average; we call its corruption function directly and keep
            # the float result (PIL.Image results, from jpeg and pixelate, are uint8 already)
            rgb = corruption_dict[name](Image.fromarray(np.stack((img,) * 3, axis=-1)), int(severity), **kwargs)
            out[k, 0] = _to_gray(np.asarray(rgb, dtype=np.float64), name)
    finally:
        np.random.set_state(saved)
    return out


class _CorruptedCache:
    """Corrupted test images of this process, reused across models.

    Every model under one corruption config sees the same corrupted images (same seed), and the library
    corrupts one image per Python call (~1-5 ms each), so a worker scoring many classifiers would otherwise
    redo identical work for each. Bounded by bytes; the oldest entries go first.
    """

    def __init__(self, max_bytes: int = 512 * 2**20):
        self.max_bytes, self.entries = max_bytes, OrderedDict()

    def get(self, x: np.ndarray, name: str, severity: int, seed: int, first_index: int, n_total: int) -> np.ndarray:
        key = (hashlib.sha1(np.ascontiguousarray(x).view(np.uint8).data).hexdigest(), x.shape, name, severity,
               seed, first_index, n_total)
        if key in self.entries:
            self.entries.move_to_end(key)
            return self.entries[key]
        out = corrupt_images(x, name, severity, seed, first_index=first_index, n_total=n_total)
        self.entries[key] = out
        while sum(v.nbytes for v in self.entries.values()) > self.max_bytes and len(self.entries) > 1:
            self.entries.popitem(last=False)
        return out


_CACHE = _CorruptedCache()


def corruption_accuracy(
    model: torch.nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    corruptions: Sequence[str] = COMMON_CORRUPTIONS,
    severities: Sequence[int] = SEVERITIES,
    seed: int = 0,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> dict[tuple[str, int], float]:
    """Accuracy of ``model`` on each corruption at each severity.

    Args:
        model: torch classifier, (B, 1, H, W) in [0, 1] -> logits; set to eval mode here.
        x: (N, 1, H, W) float images in [0, 1], H, W >= 32.
        y: (N,) integer labels.
        corruptions: names from ``ALL_CORRUPTIONS`` (default: the 15 common ones).
        severities: subset of 1..5.
        seed: the same seed gives the same corrupted images for every model.
        batch_size: images corrupted and classified per chunk (results do not depend on it).
        device: where to run (None: the model's device).
    Returns:
        {(name, severity): accuracy in [0, 1]}, in the order given. ``summarize_corruptions`` gives the mean.
    """
    x, y = check_images(x, y)
    batch_size = check_batch_size(batch_size)
    corruptions = list(corruptions)
    severities = [int(s) for s in severities]
    if not corruptions or not severities:
        raise RobustnessInputError("corruptions, severities: need at least one of each")
    for name in corruptions:  # fail before any work
        _check_name(name)
    for s in severities:
        _check_severity(s)
    model.eval()
    dev = resolve_device(device, model)
    result: dict[tuple[str, int], float] = {}
    for name in corruptions:
        for s in severities:
            correct = 0
            for start in range(0, len(x), batch_size):
                xc = _CACHE.get(x[start:start + batch_size], name, s, seed, start, len(x))
                pred = predict_labels(model, xc, batch_size=batch_size, device=dev)
                correct += int((pred == y[start:start + batch_size]).sum())
            result[(name, s)] = correct / len(x)
    return result


def summarize_corruptions(accuracy: dict[tuple[str, int], float]) -> dict[str, object]:
    """Means of a ``corruption_accuracy`` result.

    Returns:
        {'mean': mean over all (corruption, severity) entries,
         'per_corruption': {name: mean over its severities},
         'per_severity': {severity: mean over corruptions},
         'per_family': {family: mean over its entries}}  (families with no entry are left out).
    """
    if not accuracy:
        raise RobustnessInputError("accuracy: empty result, nothing to summarise")
    names = sorted({n for n, _ in accuracy}, key=list(ALL_CORRUPTIONS).index)
    sevs = sorted({s for _, s in accuracy})
    family_of = {n: fam for fam, ns in CORRUPTION_FAMILIES.items() for n in ns}
    per_family: dict[str, list[float]] = {}
    for (n, _), a in accuracy.items():
        per_family.setdefault(family_of[n], []).append(a)
    return {
        "mean": float(np.mean(list(accuracy.values()))),
        "per_corruption": {n: float(np.mean([a for (m, _), a in accuracy.items() if m == n])) for n in names},
        "per_severity": {s: float(np.mean([a for (_, t), a in accuracy.items() if t == s])) for s in sevs},
        "per_family": {f: float(np.mean(v)) for f, v in per_family.items()},
    }
