"""A model mouse V1 that stands in for real 2-photon scans.

Stimuli are 36 x 64 (height x width) grayscale crops of the photographs bundled with scikit-image and
scikit-learn. Model neurons are Gabor-like: simple cells (rectified linear Gabor) and complex cells
(energy model, quadrature pair), with a rectifying, expansive output nonlinearity and a baseline.
Their gain follows running speed and pupil size (per-neuron sensitivity); their receptive fields move
with the eye (pupil_center); behaviour drifts smoothly across trials (AR(1)). Single-trial responses
are Poisson-like (Gamma noise: variance = fano * rate) with a per-neuron Fano factor chosen so that
reliability varies widely, as in real V1 (leave-one-out oracle correlations spread about 0.1..0.8).

Units: pixels are luminance in [0, 255]; rates and responses are arbitrary, non-negative units (like
deconvolved calcium traces); receptive field sizes and shifts are in stimulus pixels; cortical
positions in um; pupil size and pupil centre in eye-camera pixels; running speed in cm/s.

Several scans of one model animal record DIFFERENT neurons drawn from the SAME population model, all
shown the same image set; see :func:`simulate_scans`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.signal import lfilter

from pipeline.recording.scan_data import ScanData

IMAGE_SHAPE = (36, 64)  # (height, width) in pixels, as the paper's stimuli (ImageNet downsampled by 4)
PIXEL_MEAN, PIXEL_SCALE = 127.5, 127.5  # pixels -> contrast in [-1, 1]
PUPIL_CENTER_REFERENCE = (160.0, 120.0)  # eye-camera pixels (x, y) at which receptive fields are not shifted
CORTEX_SIZE_UM = 800.0  # side of the square field of view, um
# Photographs shipped inside installed packages (nothing is downloaded), by package. skimage.data images that
# need pooch (a download) are left out, and so are the non-photographs (text, logos, microscopy, star fields).
SKIMAGE_PHOTOGRAPHS = ("astronaut", "camera", "coffee", "chelsea", "rocket", "grass", "gravel", "brick",
                       "coins", "clock", "moon", "stereo_motorcycle")
SKLEARN_PHOTOGRAPHS = ("china.jpg", "flower.jpg")  # sklearn/datasets/images (load_sample_images)
MATPLOTLIB_PHOTOGRAPHS = ("grace_hopper.jpg",)  # matplotlib/mpl-data/sample_data
# foolbox/data: 20 ImageNet validation photographs (name: imagenet_<index>_<ImageNet class>), the paper's source
FOOLBOX_PHOTOGRAPHS = tuple(f"imagenet_{i:02d}_{c}.jpg" for i, c in enumerate(
    (243, 559, 438, 990, 949, 853, 609, 609, 915, 455, 541, 630, 741, 471, 129, 99, 251, 22, 317, 305)))
PHOTOGRAPH_NAMES = (SKIMAGE_PHOTOGRAPHS + tuple(f.rsplit(".", 1)[0] for f in SKLEARN_PHOTOGRAPHS)
                    + tuple(f.rsplit(".", 1)[0] for f in MATPLOTLIB_PHOTOGRAPHS)
                    + tuple(f.rsplit(".", 1)[0] for f in FOOLBOX_PHOTOGRAPHS))  # the order of photographs()
# Photographs whose crops are shown once (train / validation / test tiers, never oracle) in a fixed share
# HELDOUT_FRACTION of every image set, so that a caller can hold them out of the regularisation target by
# source (ScanData.image_sources) and test brain-likeness on scenes no regularised network has seen:
# a cat (skimage), a portrait (matplotlib), a jeep and a goose (ImageNet, via foolbox).
HELDOUT_PHOTOGRAPHS = ("chelsea", "grace_hopper", "imagenet_07_609", "imagenet_15_99")
HELDOUT_FRACTION = 0.1  # of the images shown once


def _stream(*keys: int) -> np.random.Generator:
    """An independent random stream for each (seed, purpose, ...) key."""
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in keys]))


# ---------------------------------------------------------------------------------------------- stimuli

@lru_cache(maxsize=1)
def photographs() -> tuple[np.ndarray, ...]:
    """The bundled photographs (no download), each (rows, cols) float64 grayscale luminance in [0, 255].

    In the order of PHOTOGRAPH_NAMES: scikit-image's, scikit-learn's sample images, matplotlib's
    sample photograph and foolbox's ImageNet samples; files are read directly (importing
    sklearn.datasets or foolbox would take seconds).
    """
    import importlib.util
    from pathlib import Path

    import skimage.data
    import skimage.io
    from skimage.color import rgb2gray

    def package_dir(name: str) -> Path:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"photographs: package '{name}' is not installed. Fix: pip install the "
                                    "versions pinned in requirements.lock")
        return Path(spec.submodule_search_locations[0])

    raw = []
    for name in SKIMAGE_PHOTOGRAPHS:
        img = getattr(skimage.data, name)()
        raw.append(img[0] if name == "stereo_motorcycle" else img)  # (left, right, disparity): take left
    files = ([package_dir("sklearn") / "datasets" / "images" / f for f in SKLEARN_PHOTOGRAPHS]
             + [package_dir("matplotlib") / "mpl-data" / "sample_data" / f for f in MATPLOTLIB_PHOTOGRAPHS]
             + [package_dir("foolbox") / "data" / f for f in FOOLBOX_PHOTOGRAPHS])
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"photographs: '{f}' is missing. Fix: reinstall its package at the version "
                                    "pinned in requirements.lock")
        raw.append(skimage.io.imread(f))
    out = []
    for img in raw:
        if img.ndim == 3:
            img = rgb2gray(img[..., :3]) * 255.0  # rgb2gray maps uint8 to [0, 1]
        out.append(np.asarray(img, dtype=np.float64))
    return tuple(out)


def photograph_index(names) -> np.ndarray:
    """(k,) int64 positions in PHOTOGRAPH_NAMES (and photographs()) of the photograph names given."""
    names = [names] if isinstance(names, str) else list(names)
    unknown = [n for n in names if n not in PHOTOGRAPH_NAMES]
    if unknown or not names:
        raise ValueError(f"photograph_index: field 'sources' names unknown photographs {unknown} (or none). "
                         f"Fix: choose from PHOTOGRAPH_NAMES {PHOTOGRAPH_NAMES}")
    return np.array([PHOTOGRAPH_NAMES.index(n) for n in names], dtype=np.int64)


@lru_cache(maxsize=1)
def _summed_area_tables() -> tuple[np.ndarray, ...]:
    """(rows + 1, cols + 1) cumulative sums of each photograph, zero-padded at the top and left."""
    return tuple(np.pad(p.cumsum(0).cumsum(1), ((1, 0), (1, 0))) for p in photographs())


def _box_edges(start: np.ndarray, size: np.ndarray, n_out: int) -> np.ndarray:
    """(n, n_out + 1) integer pixel edges splitting [start, start + size) into n_out boxes of >= 1 pixel."""
    edges = np.rint(start[:, None] + np.arange(n_out + 1) * (size[:, None] / n_out)).astype(np.int64)
    return edges


def natural_image_crops(n: int, rng: np.random.Generator, shape: tuple[int, int] = IMAGE_SHAPE,
                        min_scale_fraction: float = 0.3, sources=None, return_sources: bool = False):
    """(n, height, width) float32 in [0, 255]: crops of random photograph, position, scale and mirror flip.

    A crop covers (height * s) x (width * s) photograph pixels, s log-uniform between
    ``min_scale_fraction`` and 1 of the largest scale that fits, so crops show whole scenes as well as
    close-ups. Downsampling is area averaging via summed-area tables, i.e. anti-aliased; hand-written
    (instead of skimage.transform.resize per crop) because it is vectorised over all crops of a photograph.
    sources: names (of PHOTOGRAPH_NAMES) of the photographs to crop, each equally likely; None: all.
    return_sources: also return the (n,) int64 position in PHOTOGRAPH_NAMES of each crop's photograph.
    """
    h, w = shape
    sources_all = photographs()
    tables = _summed_area_tables()
    allowed = np.arange(len(sources_all)) if sources is None else photograph_index(sources)
    which = allowed[rng.integers(len(allowed), size=n)]
    u_scale, u_y, u_x = rng.random(n), rng.random(n), rng.random(n)
    flip = rng.random(n) < 0.5
    out = np.empty((n, h, w), dtype=np.float32)
    for k in np.unique(which):
        photo, table = sources_all[k], tables[k]
        idx = np.flatnonzero(which == k)
        rows, cols = photo.shape
        s_max = min(rows / h, cols / w)
        s_min = max(1.0, min_scale_fraction * s_max)
        s = np.exp(np.log(s_min) + u_scale[idx] * np.log(s_max / s_min))
        ch, cw = h * s, w * s
        y0, x0 = u_y[idx] * (rows - ch), u_x[idx] * (cols - cw)
        ry = np.clip(_box_edges(y0, ch, h), 0, rows)  # (m, h + 1)
        rx = np.clip(_box_edges(x0, cw, w), 0, cols)  # (m, w + 1)
        r0, r1 = ry[:, :-1, None], ry[:, 1:, None]
        c0, c1 = rx[:, None, :-1], rx[:, None, 1:]
        sums = table[r1, c1] - table[r0, c1] - table[r1, c0] + table[r0, c0]
        out[idx] = sums / ((r1 - r0) * (c1 - c0))
    out[flip] = out[flip, :, ::-1]
    out = np.clip(out, 0.0, 255.0)
    return (out, which.astype(np.int64)) if return_sources else out


def shift_images(images: np.ndarray, shifts: np.ndarray, pad: int = 8) -> np.ndarray:
    """Sample each image at (y + dy, x + dx): content moves by (-dx, -dy), receptive fields in effect by (+dx, +dy).

    images (n, H, W); shifts (n, 2) pixels as (dx, dy), sub-pixel allowed, |shift| <= pad.
    Band-limited (Fourier shift theorem) so a sub-pixel shift does not blur the image, as bilinear
    interpolation would; the image is reflect-padded by ``pad`` so nothing wraps around. Hand-written
    because scipy.ndimage.fourier_shift works on one image at a time and wraps at the border.
    Returns (n, H, W) float32.
    """
    images = np.asarray(images, dtype=np.float32)
    shifts = np.asarray(shifts, dtype=np.float64)
    n, h, w = images.shape
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
    ph, pw = h + 2 * pad, w + 2 * pad
    ky = np.fft.fftfreq(ph)[None, :, None]
    kx = np.fft.rfftfreq(pw)[None, None, :]
    dx, dy = np.clip(shifts[:, 0], -pad, pad), np.clip(shifts[:, 1], -pad, pad)
    phase_y = np.exp(2j * np.pi * ky * dy[:, None, None]).astype(np.complex64)  # separable phase ramp
    phase_x = np.exp(2j * np.pi * kx * dx[:, None, None]).astype(np.complex64)
    moved = np.fft.irfft2(np.fft.rfft2(padded) * phase_y * phase_x, s=(ph, pw))
    return moved[:, pad:pad + h, pad:pad + w].astype(np.float32)


# -------------------------------------------------------------------------------------------- behaviour

def _ar1(n: int, rho: float, rng: np.random.Generator, size: int = 1) -> np.ndarray:
    """(n, size) stationary AR(1) with unit variance and lag-one correlation rho (trial to trial)."""
    e = rng.standard_normal((n, size))
    c = np.sqrt(1.0 - rho ** 2)
    e[0] /= c  # start in the stationary distribution
    return lfilter([c], [1.0, -rho], e, axis=0)


def simulate_behavior(n_trials: int, rng: np.random.Generator, rho: float = 0.95,
                      eye_std: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Behaviour drifting smoothly over trials in presentation order.

    A shared arousal latent drives both running and pupil (they correlate, as in mice).
    Returns behavior (n_trials, 3) float32 = (pupil size [px], its trial-to-trial derivative [px/trial],
    running speed [cm/s]) and pupil_center (n_trials, 2) float32 (x, y) [px] around PUPIL_CENTER_REFERENCE
    with standard deviation ``eye_std``.
    """
    latent = _ar1(n_trials, rho, rng, 4)
    arousal = latent[:, 0]
    run = 0.7 * arousal + np.sqrt(1 - 0.49) * latent[:, 1]
    running = 8.0 * np.logaddexp(0.0, 2.0 * (run - 0.3))  # softplus: often near 0 (sitting), sometimes fast
    pupil = np.maximum(20.0 + 4.0 * (0.6 * arousal + 0.8 * latent[:, 2]), 4.0)
    d_pupil = np.diff(pupil, prepend=pupil[0])
    eye = np.asarray(PUPIL_CENTER_REFERENCE) + eye_std * _ar1(n_trials, rho, rng, 2)
    behavior = np.stack([pupil, d_pupil, running], axis=1).astype(np.float32)
    return behavior, eye.astype(np.float32)


@lru_cache(maxsize=1)
def behavior_reference() -> tuple[np.ndarray, np.ndarray]:
    """(mean, std), each (3,), of the stationary behaviour; gains are exp(beta * z) of z = (b - mean) / std."""
    b, _ = simulate_behavior(200_000, _stream(0, 99))
    return b.mean(0).astype(np.float64), b.std(0).astype(np.float64)


# --------------------------------------------------------------------------------------- model neurons

def gabor_filters(center: np.ndarray, orientation: np.ndarray, wavelength: np.ndarray, sigma: np.ndarray,
                  aspect: np.ndarray, phase: np.ndarray, shape: tuple[int, int] = IMAGE_SHAPE) -> np.ndarray:
    """(H * W, n) float32: zero-mean, unit-norm Gabor filters as columns, local (zero far from the centre).

    center (n, 2) pixels (x, y); orientation (n,) radians, the direction of the carrier's wave vector
    (a grating cos(2 pi (x cos o + y sin o) / wavelength) drives it best); wavelength, sigma (n,) pixels;
    aspect (n,) envelope width along the bars relative to sigma (<= 1 elongates along the bars);
    phase (n,) radians of the carrier at the centre.
    """
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dx = xx.reshape(-1, 1) - center[None, :, 0]
    dy = yy.reshape(-1, 1) - center[None, :, 1]
    cos, sin = np.cos(orientation), np.sin(orientation)
    along = dx * cos + dy * sin  # along the wave vector
    across = -dx * sin + dy * cos  # along the bars
    envelope = np.exp(-(along ** 2 + (aspect * across) ** 2) / (2 * sigma ** 2))
    carrier = np.cos(2 * np.pi * along / wavelength + phase)
    # zero mean by removing the carrier's DC under the envelope (not the image-wide mean, which would leave
    # a constant weight on every pixel of the image: a global luminance input that no local RF has)
    dc = (envelope * carrier).sum(0, keepdims=True) / envelope.sum(0, keepdims=True)
    g = envelope * (carrier - dc)
    g /= np.linalg.norm(g, axis=0, keepdims=True)
    return g.astype(np.float32)


@dataclass
class SpikeNoise:
    """Trial-to-trial noise: shared multiplicative gain fluctuations, then Gamma noise of variance fano * rate.

    The shared part has a global gain (every neuron, positive loadings) and a few latent dimensions with
    loadings of either sign, as the low-dimensional, behaviour-related variability that dominates real V1
    population activity (Stringer et al., Science 2019). Unlike independent noise, it does not average out
    over neurons, so it is what makes single-trial population similarity unreliable (paper, Fig 1D).
    """

    fano: np.ndarray  # (n_neurons,) variance / mean of the single-trial response
    shared_loading: np.ndarray  # (n_neurons,) how much each neuron follows the global (unobserved) gain
    shared_std: float = 0.15  # std of the global log-gain fluctuation
    latent_loadings: np.ndarray | None = None  # (n_latent, n_neurons) log-gain loadings of the latent dimensions

    def log_gain(self, n_trials: int, rng: np.random.Generator) -> np.ndarray:
        """(n_trials, n_neurons) shared log-gain, mean-corrected so the expected gain is 1."""
        s = self.shared_std * self.shared_loading[None, :]
        g = s * rng.standard_normal((n_trials, 1)) - 0.5 * s ** 2
        if self.latent_loadings is not None and len(self.latent_loadings):
            L = self.latent_loadings
            g = g + rng.standard_normal((n_trials, L.shape[0])) @ L - 0.5 * (L ** 2).sum(0)[None, :]
        return g

    def sample(self, rates: np.ndarray, rng: np.random.Generator, chunk: int = 1024) -> np.ndarray:
        """(n_trials, n_neurons) float32 responses, non-negative, mean = rates (on average over the shared gain).

        rates (n_trials, n_neurons) >= 0; drawn in chunks of trials to bound float64 temporaries.
        """
        rates = np.asarray(rates)
        out = np.empty(rates.shape, dtype=np.float32)
        for start in range(0, len(rates), chunk):
            r = rates[start:start + chunk].astype(np.float64)
            shared = np.exp(self.log_gain(len(r), rng))
            out[start:start + chunk] = rng.gamma(r * shared / self.fano, np.broadcast_to(self.fano, r.shape))
        return out


def gaussian_pools(center: np.ndarray, width: np.ndarray, shape: tuple[int, int] = IMAGE_SHAPE) -> np.ndarray:
    """(H * W, n) float32: isotropic Gaussian windows as columns, each summing to 1 over the image.

    center (n, 2) pixels (x, y); width (n,) pixels, the Gaussian's standard deviation. A window cut by the
    image border is renormalised over the pixels it keeps, so it is a weighted mean over what is shown.
    """
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    d2 = (xx.reshape(-1, 1) - center[None, :, 0]) ** 2 + (yy.reshape(-1, 1) - center[None, :, 1]) ** 2
    p = np.exp(-d2 / (2 * np.asarray(width, np.float32)[None, :] ** 2))
    return (p / p.sum(0, keepdims=True)).astype(np.float32)


NORMALIZATION_POOLS = ("local", "global")


class ModelV1:
    """A population of Gabor-like model neurons of one mouse's V1 (one scan's worth).

    rate = baseline + amplitude * gain(behaviour) * f(drive(image seen through the eye)), where
    drive is the Gabor projection (simple) or quadrature energy (complex), divided by sigma + the
    contrast c of its normalisation pool (divisive normalisation, Heeger 1992; Carandini & Heeger 2012;
    ``normalization=0`` turns it off), standardised (z) over natural images;
    f = g / (1 + g / saturation) with g = relu(z - threshold) ** exponent (rectifying, expansive near
    threshold, saturating for strong drive), normalised to mean 1 over natural images;
    gain = exp(beta_running * z_running + beta_pupil * z_pupil).

    Normalisation pool (``normalization_pool``): 'local' (default) is the RMS contrast of the image within
    a Gaussian window of width ``pool_scale`` x the RF's envelope sigma, centred on the receptive field
    (c_a^2 = sum_p P_pa (x_p - m_a)^2 with m_a = sum_p P_pa x_p, P the window): the contrast a neuron's
    surround shows it, which a predictor with local receptive fields can learn. 'global' is the RMS
    contrast of the whole image (the simulator before issue 11), which couples every neuron to one
    number and makes overall population activity follow the image's contrast.

    Retinotopy: the cortical field of view maps linearly onto ``rf_coverage`` of the image's width and
    height (plus ``rf_scatter`` pixels of scatter), so receptive fields tile most of the image.

    Population calibration (pipeline.recording.calibration): preferred wavelengths are log-uniform over
    ``wavelength_range`` = 5..32 px (2.7 octaves, as mouse V1's spread of preferred spatial frequency), so
    that the noise-free responses to natural images have a power-law eigenspectrum with exponent near 1,
    as mouse V1 (Stringer et al. 2019: 1.04). Measured by plain PCA of noise-free rates, fitted over ranks
    10..min(n_neurons, n_images) // 4: 1.03..1.15 for 600 neurons x 1500 images (5 seeds), 1.04..1.20 for
    400 x 800; 7..24 px with RFs in the central third (before issue 11): 1.42. The spectrum is not
    straight: its local slope is ~0.7 over ranks 10..30, ~1.1 over 30..100 and steeper beyond N / 4
    (finite population). The leading component carries 7..10% of the variance (14..17% before).
    Fano factors are set from a target signal-to-noise ratio per neuron (log-uniform in ``snr_range``),
    SNR = Var_images(rate) / E_images[noise variance], measured on a fixed natural-image calibration set.
    """

    def __init__(self, n_neurons: int, seed: int = 0, *, complex_fraction: float = 0.5,
                 snr_range: tuple[float, float] = (0.05, 5.0), wavelength_range: tuple[float, float] = (5.0, 32.0),
                 bandwidth_range: tuple[float, float] = (0.35, 0.6), exponent_range: tuple[float, float] = (1.0, 1.5),
                 threshold_range: tuple[float, float] = (-1.0, 0.5),
                 eye_shift_scale: float = 0.5, shared_noise_std: float = 0.15, rf_coverage: float = 0.9,
                 rf_scatter: float = 3.0, latent_dims: int = 4, latent_std: float = 0.4,
                 normalization: float = 1.0, normalization_pool: str = "local", pool_scale: float = 2.0,
                 shape: tuple[int, int] = IMAGE_SHAPE):
        if n_neurons < 1:
            raise ValueError(f"ModelV1: field 'n_neurons' must be >= 1, got {n_neurons}. Fix: pass a positive count")
        if normalization_pool not in NORMALIZATION_POOLS:
            raise ValueError(f"ModelV1: field 'normalization_pool' must be one of {NORMALIZATION_POOLS}, got "
                             f"{normalization_pool!r}. Fix: pass 'local' (RF-centred pool) or 'global' (whole image)")
        if normalization < 0 or pool_scale <= 0:
            raise ValueError(f"ModelV1: fields 'normalization' ({normalization}) and 'pool_scale' ({pool_scale}) "
                             "must be >= 0 and > 0. Fix: pass normalization=0 to turn normalisation off")
        rng = _stream(seed, 1)
        n = int(n_neurons)
        h, w = shape
        self.shape = shape
        self.eye_shift_scale = float(eye_shift_scale)  # stimulus pixels of RF shift per eye-camera pixel
        # cortical position (um) and retinotopy: the field of view maps onto rf_coverage of the image
        self.positions = np.column_stack([rng.uniform(0, CORTEX_SIZE_UM, n), rng.uniform(0, CORTEX_SIZE_UM, n),
                                          rng.uniform(150, 350, n)]).astype(np.float32)
        retinotopy = (self.positions[:, :2] / CORTEX_SIZE_UM - 0.5) * (rf_coverage * np.array([w, h]))
        center = np.array([w / 2, h / 2]) + retinotopy + rf_scatter * rng.standard_normal((n, 2))
        self.center = np.clip(center, [1, 1], [w - 2, h - 2]).astype(np.float32)  # (n, 2) pixels (x, y)
        self.orientation = rng.uniform(0, np.pi, n).astype(np.float32)
        self.wavelength = np.exp(rng.uniform(*np.log(wavelength_range), n)).astype(np.float32)
        self.sigma = (self.wavelength * rng.uniform(*bandwidth_range, n)).astype(np.float32)
        self.aspect = rng.uniform(0.6, 1.0, n).astype(np.float32)
        self.phase = rng.uniform(0, 2 * np.pi, n).astype(np.float32)
        self.is_complex = rng.random(n) < complex_fraction
        self.threshold = rng.uniform(*threshold_range, n).astype(np.float32)
        self.exponent = rng.uniform(*exponent_range, n).astype(np.float32)
        self.saturation = rng.uniform(2.0, 6.0, n).astype(np.float32)
        self.amplitude = np.exp(0.5 * rng.standard_normal(n)).astype(np.float32)
        self.baseline = (self.amplitude * rng.uniform(0.02, 0.3, n)).astype(np.float32)
        self.beta_running = rng.normal(0.2, 0.1, n).astype(np.float32)  # mostly positive: running raises gain
        self.beta_pupil = rng.normal(0.05, 0.1, n).astype(np.float32)
        self.snr = np.exp(rng.uniform(*np.log(snr_range), n))
        shared_loading = rng.uniform(0.5, 1.5, n)

        args = (self.center, self.orientation, self.wavelength, self.sigma, self.aspect)
        self.filters_even = gabor_filters(*args, self.phase, shape)  # (H*W, n)
        c = self.is_complex
        self.filters_odd = gabor_filters(*(a[c] for a in args), self.phase[c] + np.pi / 2, shape)  # (H*W, n_c)

        # calibration on natural images: standardise drives, normalise f, then set Fano factors from the SNR
        calib = natural_image_crops(256, _stream(0, 7), shape)
        # divisive normalisation: the drive is divided by sigma + c (c: the pool's RMS contrast), with
        # sigma = median natural-image c / normalization (per neuron for local pools) and scaled so that the
        # drive is unchanged at the median contrast. Without it, contrast alone dominates the similarity.
        self.normalization = float(normalization)
        self.normalization_pool = normalization_pool
        self.pool_width = (pool_scale * self.sigma).astype(np.float32)  # (n,) pixels
        self.pools = gaussian_pools(self.center, self.pool_width, shape) if normalization_pool == "local" else None
        self._contrast_sigma = None
        if self.normalization > 0:
            median = np.median(self._contrast(self._contrast_input(calib)), axis=0)  # (n,) local, (1,) global
            self._contrast_sigma = (median / self.normalization).astype(np.float32)
            self._contrast_numerator = (median + self._contrast_sigma).astype(np.float32)
        d = self._drive(calib)
        self._drive_mean, self._drive_std = d.mean(0), np.maximum(d.std(0), 1e-6)
        self._f_norm = np.float32(1.0)
        f = self._nonlinearity(d).astype(np.float64)
        self._f_norm = np.maximum(f.mean(0), 1e-6).astype(np.float32)
        r = self.baseline + self.amplitude * f / self._f_norm
        signal_var = np.maximum(r.var(0), 1e-6 * r.mean(0) ** 2)
        latent = (latent_std * rng.standard_normal((int(latent_dims), n))).astype(np.float64)
        self.noise = SpikeNoise(fano=signal_var / (self.snr * r.mean(0)), shared_loading=shared_loading,
                                shared_std=shared_noise_std, latent_loadings=latent)

    @property
    def n_neurons(self) -> int:
        return int(self.center.shape[0])

    @staticmethod
    def _contrast_input(images: np.ndarray) -> np.ndarray:
        """(n, H * W) float32 contrast images x = (pixel - PIXEL_MEAN) / PIXEL_SCALE of (n, H, W) pixels."""
        return (np.asarray(images, np.float32).reshape(len(images), -1) - PIXEL_MEAN) / PIXEL_SCALE

    def _contrast(self, x: np.ndarray) -> np.ndarray:
        """RMS contrast of the normalisation pools of contrast images x (n, H * W): (n, n_neurons) for
        local pools (weighted by each neuron's Gaussian window), (n, 1) for the global pool (whole image)."""
        if self.pools is None:
            return x.std(axis=1, keepdims=True)
        mean = x @ self.pools  # (n, n_neurons) local mean luminance
        energy = (x * x) @ self.pools  # (n, n_neurons) local mean square
        return np.sqrt(np.maximum(energy - mean * mean, 0.0))

    def _drive(self, images: np.ndarray) -> np.ndarray:
        """(n, n_neurons) float32: Gabor projection (simple) or quadrature energy (complex) of (n, H, W) images,
        divided by the contrast-normalisation pool when normalisation is on."""
        x = self._contrast_input(images)
        d = x @ self.filters_even  # (n, n_neurons): images @ filters, one matrix product
        q = x @ self.filters_odd
        d[:, self.is_complex] = np.sqrt(d[:, self.is_complex] ** 2 + q ** 2)
        if self._contrast_sigma is not None:
            d *= self._contrast_numerator / (self._contrast_sigma + self._contrast(x))
        return d

    def _nonlinearity(self, drive: np.ndarray) -> np.ndarray:
        """(n, n_neurons) float32 output nonlinearity f of the drive, mean 1 over natural images."""
        z = (drive - self._drive_mean) / self._drive_std
        g = np.maximum(z - self.threshold, 0.0) ** self.exponent
        return g / (1.0 + g / self.saturation) / self._f_norm

    def gain(self, behavior: np.ndarray) -> np.ndarray:
        """(n, n_neurons) multiplicative gain of behaviour (n, 3); 1 at the stationary mean behaviour."""
        mean, std = behavior_reference()
        z = ((np.asarray(behavior, np.float64) - mean) / std).astype(np.float32)
        return np.exp(z[:, 2:3] * self.beta_running[None] + z[:, 0:1] * self.beta_pupil[None])

    def eye_shift(self, pupil_center: np.ndarray) -> np.ndarray:
        """(n, 2) receptive-field shift in stimulus pixels (dx, dy) for pupil centres (n, 2)."""
        return self.eye_shift_scale * (np.asarray(pupil_center, np.float64) - np.asarray(PUPIL_CENTER_REFERENCE))

    def rates(self, images: np.ndarray, behavior: np.ndarray | None = None,
              pupil_center: np.ndarray | None = None, chunk: int = 1024) -> np.ndarray:
        """(n, n_neurons) float32 noise-free rates to images (n, H, W) in [0, 255] seen on n trials.

        behavior (n, 3) or (3,) and pupil_center (n, 2) or (2,) broadcast over trials; None means the
        stationary mean behaviour and the reference (centred) eye.
        """
        images = np.asarray(images, dtype=np.float32)
        if images.ndim != 3 or images.shape[1:] != self.shape:
            raise ValueError(f"ModelV1.rates: field 'images' must be (n, {self.shape[0]}, {self.shape[1]}), "
                             f"got {images.shape}. Fix: crop or resize the stimuli")
        n = len(images)
        if behavior is None:
            behavior = behavior_reference()[0]
        if pupil_center is None:
            pupil_center = PUPIL_CENTER_REFERENCE
        behavior = np.broadcast_to(np.asarray(behavior, np.float64), (n, 3))
        pupil_center = np.broadcast_to(np.asarray(pupil_center, np.float64), (n, 2))
        out = np.empty((n, self.n_neurons), dtype=np.float32)
        for start in range(0, n, chunk):  # chunks bound the memory of the (chunk, n_neurons) products
            sl = slice(start, start + chunk)
            shift = self.eye_shift(pupil_center[sl])
            seen = shift_images(images[sl], shift) if np.any(shift) else images[sl]
            f = self._nonlinearity(self._drive(seen))
            out[sl] = self.baseline + self.amplitude * self.gain(behavior[sl]) * f
        return out

    def sample(self, rates: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(n, n_neurons) float32 single-trial responses drawn around the noise-free rates."""
        return self.noise.sample(rates, rng)

    def params(self) -> dict:
        """Ground-truth neuron parameters, each (n_neurons,) or (n_neurons, 2)."""
        return {"center": self.center, "orientation": self.orientation, "wavelength": self.wavelength,
                "sigma": self.sigma, "aspect": self.aspect, "phase": self.phase, "is_complex": self.is_complex,
                "threshold": self.threshold, "exponent": self.exponent,
                "saturation": self.saturation, "amplitude": self.amplitude,
                "baseline": self.baseline, "beta_running": self.beta_running, "beta_pupil": self.beta_pupil,
                "snr": self.snr, "fano": self.noise.fano}


# ------------------------------------------------------------------------------------------------ scans

def scan_model(seed: int, scan: int, n_neurons: int, **model_kwargs) -> ModelV1:
    """The neurons recorded in scan ``scan`` of the model animal ``seed``: same population model, new neurons."""
    return ModelV1(n_neurons, seed=int(np.random.SeedSequence([seed, 2, scan]).generate_state(1)[0]),
                   **model_kwargs)


def image_set(n_images: int, n_oracle_images: int, seed: int, with_sources: bool = False) -> tuple[np.ndarray, ...]:
    """The stimulus set shared by all scans of an animal.

    Returns images (n_images + n_oracle_images, H, W) float32, image_ids (same length) int64 (0..n_images-1
    for the images shown once, then the oracle images), and image_tiers (same length) str: train (80%) /
    validation (10%) / test (10%) of the images shown once, 'oracle' for the repeated ones; with
    ``with_sources`` also image_sources (same length) str, the photograph (of PHOTOGRAPH_NAMES) each image
    was cropped from.

    Held-out photographs: round(HELDOUT_FRACTION * n_images) of the images shown once, at random ids (so in
    every tier in proportion), are crops of HELDOUT_PHOTOGRAPHS; all other images, oracle images included,
    are crops of the other photographs. A caller holds them out of regularisation by their source.
    """
    n_held = int(round(HELDOUT_FRACTION * n_images))
    kept = tuple(p for p in PHOTOGRAPH_NAMES if p not in HELDOUT_PHOTOGRAPHS)
    images = np.empty((n_images + n_oracle_images, *IMAGE_SHAPE), dtype=np.float32)
    which = np.empty(n_images + n_oracle_images, dtype=np.int64)
    held = np.zeros(n_images + n_oracle_images, dtype=bool)
    held[np.sort(_stream(seed, 9).permutation(n_images)[:n_held])] = True
    images[~held], which[~held] = natural_image_crops(int((~held).sum()), _stream(seed, 3), sources=kept,
                                                      return_sources=True)
    if n_held:
        images[held], which[held] = natural_image_crops(n_held, _stream(seed, 8), sources=HELDOUT_PHOTOGRAPHS,
                                                        return_sources=True)
    image_ids = np.arange(n_images + n_oracle_images, dtype=np.int64)
    n_train, n_val = int(round(0.8 * n_images)), int(round(0.1 * n_images))
    order = _stream(seed, 4).permutation(n_images)
    tiers = np.empty(n_images + n_oracle_images, dtype="<U10")
    tiers[order[:n_train]] = "train"
    tiers[order[n_train:n_train + n_val]] = "validation"
    tiers[order[n_train + n_val:]] = "test"
    tiers[n_images:] = "oracle"
    if with_sources:
        return images, image_ids, tiers, np.asarray(PHOTOGRAPH_NAMES)[which]
    return images, image_ids, tiers


def simulate_scans(n_scans: int = 2, n_neurons: int = 500, n_images: int = 1000, n_oracle_images: int = 50,
                   n_repeats: int = 10, seed: int = 0, **model_kwargs) -> list[ScanData]:
    """Scans of different neurons of one model animal, all shown the same images.

    n_images counts the images shown once; each of the n_oracle_images is shown n_repeats times, so a
    scan has n_images + n_oracle_images * n_repeats trials, in a per-scan random order (rows follow
    presentation order, trial_idx = 0..n_trials-1). ``image_sources`` names each image's photograph (crops of
    HELDOUT_PHOTOGRAPHS are among the images shown once, see :func:`image_set`). ``extra`` holds the ground truth:
    rates (n_trials, n_neurons) noise-free rate of each trial; mean_rates (n_images_total, n_neurons)
    noise-free rate to each image (rows follow ``images``) at the scan's mean behaviour and centred eye;
    neuron_params (see ModelV1.params); seed and scan index. model_kwargs go to ModelV1.
    """
    for name, val, low in (("n_scans", n_scans, 1), ("n_neurons", n_neurons, 1), ("n_images", n_images, 0),
                           ("n_oracle_images", n_oracle_images, 0)):
        if val < low:
            raise ValueError(f"simulate_scans: field '{name}' must be >= {low}, got {val}. Fix: pass a larger value")
    if n_oracle_images and n_repeats < 2:
        raise ValueError(f"simulate_scans: field 'n_repeats' must be >= 2 for oracle images, got {n_repeats}. "
                         "Fix: repeat oracle images at least twice or pass n_oracle_images=0")
    if n_images + n_oracle_images == 0:
        raise ValueError("simulate_scans: no images (n_images + n_oracle_images == 0). Fix: show some images")
    images, image_ids, image_tiers, image_sources = image_set(n_images, n_oracle_images, seed, with_sources=True)
    shown = np.concatenate([np.arange(n_images), np.repeat(np.arange(n_images, n_images + n_oracle_images),
                                                           n_repeats)])
    scans = []
    unit_base = 0
    for s in range(n_scans):
        model = scan_model(seed, s, n_neurons, **model_kwargs)
        rng = _stream(seed, 5, s)
        order = shown[rng.permutation(len(shown))]  # row of `images` shown on each trial
        behavior, pupil_center = simulate_behavior(len(order), rng)
        rates = model.rates(images[order], behavior, pupil_center)
        responses = model.sample(rates, rng)
        mean_rates = model.rates(images, behavior.mean(0), None)
        scans.append(ScanData(
            images=images, image_ids=image_ids, trial_idx=np.arange(len(order), dtype=np.int64),
            trial_image_ids=image_ids[order], tiers=image_tiers[order], responses=responses,
            behavior=behavior, pupil_center=pupil_center,
            unit_ids=np.arange(unit_base + 1, unit_base + n_neurons + 1, dtype=np.int64),
            areas=np.full(n_neurons, "V1"), layers=np.full(n_neurons, "L2/3"), positions=model.positions,
            image_sources=image_sources, source=f"simulator(seed={seed}, scan={s})",
            extra={"rates": rates, "mean_rates": mean_rates, "neuron_params": model.params(),
                   "seed": seed, "scan": s}).validate())
        unit_base += n_neurons
    return scans
