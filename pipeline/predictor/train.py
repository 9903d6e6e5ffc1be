"""Training and use of the predictive model (Sec 2.2): fit on 'train', stop on 'validation', score on held-out.

Data (one scan, n trials, N neurons, images H x W), a dict of arrays:

- images        (n, H, W) float32 raw pixels in [0, 255], the image shown on each trial
- responses     (n, N) float >= 0
- behavior      (n, 3) pupil size, its derivative, running speed
- pupil_center  (n, 2) eye position (x, y)
- tiers         (n,) str in train / validation / test / oracle

The readout positions start at each neuron's estimated receptive field (``readout_init``, see readout.py).
Loss per batch: mean over trials of the Poisson negative log-likelihood summed over neurons (responses in
units of each neuron's training std), plus the model's regulariser. Adam; after ``patience`` epochs
without a better validation correlation the best weights are restored and the learning rate decays, at
most ``lr_decay_steps`` times, then training stops. The held-out correlation v_a (Eq 6) is computed on
single trials of the 'oracle' tier (else 'test') with each trial's own behaviour and eye position.
With ``checkpoint_dir`` training checkpoints after every epoch and resumes like the classifier's
(pipeline.checkpoints): the early-stopping state and every generator are part of the checkpoint.
The configuration is the one config.resolve_config returns (resolved when it is entered, run as given here).
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from pipeline import checkpoints
from pipeline.devices import resolve_device
from pipeline.digests import array_digest
from pipeline.errors import NeuralRegError
from pipeline.recording.scan_data import TIERS

from .config import resolve_config
from .model import PredictiveModel, build_model

DATA_FIELDS = ("images", "responses", "behavior", "pupil_center", "tiers")


class PredictorDataError(NeuralRegError):
    """Bad training data: the message names the field and the fix."""


# ---- helpers -------------------------------------------------------------------------------------------
def correlation_per_neuron(measured: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Pearson correlation of each column of two (n_trials, n_neurons) arrays -> (n_neurons,) float64.

    A column with zero variance (in either input) gives 0, not NaN.
    """
    a, b = np.asarray(measured, dtype=np.float64), np.asarray(predicted, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"correlation_per_neuron: fields 'measured' {a.shape} and 'predicted' {b.shape} must "
                         "be 2-D arrays of the same shape. Fix: pass (n_trials, n_neurons) arrays")
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    denom = np.sqrt((a * a).sum(axis=0) * (b * b).sum(axis=0))
    num = (a * b).sum(axis=0)
    out = np.zeros(a.shape[1])
    ok = denom > 0
    out[ok] = num[ok] / denom[ok]
    return out


def poisson_loss(rate: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Poisson negative log-likelihood (without the log-factorial), mean over trials, sum over neurons."""
    return (rate - target * torch.log(rate + eps)).sum(dim=1).mean()


def validate_data(data: dict) -> dict:
    """Check a training data dict; return its arrays as numpy (float32, tiers as str)."""
    missing = [f for f in DATA_FIELDS if f not in data]
    if missing:
        raise PredictorDataError(f"predictor data: missing fields {missing}. Fix: pass a dict with {DATA_FIELDS}")
    out = {f: np.asarray(data[f], dtype=np.float32) for f in DATA_FIELDS if f != "tiers"}
    out["tiers"] = np.asarray(data["tiers"]).astype(str)
    images, responses = out["images"], out["responses"]
    if images.ndim == 4 and images.shape[1] == 1:
        images = out["images"] = images[:, 0]
    if images.ndim != 3:
        raise PredictorDataError(f"predictor data: field 'images' must be (n_trials, H, W), got {images.shape}. "
                                 "Fix: pass one grayscale image per trial")
    if responses.ndim != 2 or responses.shape[1] < 1:
        raise PredictorDataError(f"predictor data: field 'responses' must be (n_trials, n_neurons), got "
                                 f"{responses.shape}")
    n = responses.shape[0]
    expected = {"images": (n, *images.shape[1:]), "behavior": (n, 3), "pupil_center": (n, 2), "tiers": (n,)}
    for name, shape in expected.items():
        if out[name].shape != shape:
            raise PredictorDataError(f"predictor data: field '{name}' has shape {out[name].shape}, expected "
                                     f"{shape}. Fix: one row per trial ({n} trials in 'responses')")
    for name in ("images", "responses", "behavior", "pupil_center"):
        if not np.isfinite(out[name]).all():
            raise PredictorDataError(f"predictor data: field '{name}' has NaN or infinite values. "
                                     "Fix: drop or repair those trials")
    if (responses < 0).any():
        raise PredictorDataError(f"predictor data: field 'responses' has {int((responses < 0).sum())} negative "
                                 "values; the Poisson loss needs responses >= 0. Fix: clip or shift them to >= 0")
    bad = sorted(set(out["tiers"]) - set(TIERS))
    if bad:
        raise PredictorDataError(f"predictor data: field 'tiers' has unknown tiers {bad}. Fix: use {TIERS}")
    for tier in ("train", "validation"):
        if not (out["tiers"] == tier).any():
            raise PredictorDataError(f"predictor data: field 'tiers' has no '{tier}' trials. Fix: mark some "
                                     f"trials '{tier}' (training needs train and validation trials)")
    if not np.isin(out["tiers"], ("oracle", "test")).any():
        raise PredictorDataError("predictor data: field 'tiers' has no 'oracle' or 'test' trials. Fix: hold out "
                                 "some trials to score the model (v in Eq 6)")
    return out


def heldout_tier(tiers: np.ndarray) -> str:
    """'oracle' when there are oracle trials, else 'test'."""
    return "oracle" if (np.asarray(tiers) == "oracle").any() else "test"


# ---- prediction ----------------------------------------------------------------------------------------
def _as_tensor(x, device) -> torch.Tensor | None:
    return None if x is None else torch.as_tensor(np.asarray(x, dtype=np.float32), device=device)


@torch.no_grad()
def predict(model: PredictiveModel, images: np.ndarray, behavior: np.ndarray | None = None,
            pupil_center: np.ndarray | None = None, batch_size: int = 256) -> np.ndarray:
    """Predicted rates (n_images, n_neurons) float32 for raw-pixel images (n_images, H, W).

    behavior (n_images, 3) / pupil_center (n_images, 2): None holds them at their training means (Eq 6).
    Puts the model in eval mode (readout at its mean positions, batch norm on running statistics).
    """
    model.eval()
    device = next(model.parameters()).device
    images = np.asarray(images, dtype=np.float32)
    n = images.shape[0]
    for name, x, width in (("behavior", behavior, 3), ("pupil_center", pupil_center, 2)):
        if x is not None and np.shape(x) != (n, width):
            raise ValueError(f"predict: field '{name}' must have shape ({n}, {width}), got {np.shape(x)}. "
                             "Fix: one row per image, or None to hold it at its training mean")
    out = np.empty((n, model.n_neurons), dtype=np.float32)
    for start in range(0, n, batch_size):
        sl = slice(start, start + batch_size)
        rate = model(_as_tensor(images[sl], device),
                     None if behavior is None else _as_tensor(behavior[sl], device),
                     None if pupil_center is None else _as_tensor(pupil_center[sl], device))
        out[sl] = rate.cpu().numpy()
    return out


def load_model(state_dict: dict, config: dict, n_neurons: int, image_shape: tuple[int, int],
               device: str | torch.device = "cpu") -> PredictiveModel:
    """Rebuild a trained model from its state_dict and config, in eval mode on ``device``."""
    model = build_model(config, n_neurons, image_shape)
    model.load_state_dict(state_dict)
    return model.to(device).eval()


# ---- training ------------------------------------------------------------------------------------------
@dataclass
class PredictorResult:
    """A trained predictor. correlation: v_a, per-neuron held-out single-trial correlation (n_neurons,)."""

    state_dict: dict
    config: dict
    curves: dict
    correlation: np.ndarray
    heldout_tier: str
    best_epoch: int
    n_epochs: int
    wall_time: float
    device: str
    n_neurons: int
    image_shape: tuple
    best_val_correlation: float
    mean_correlation: float = field(init=False)

    def __post_init__(self):
        self.mean_correlation = float(np.mean(self.correlation))

    @property
    def v(self) -> np.ndarray:
        """Alias of ``correlation`` in the notation of Eq 6."""
        return self.correlation

    def summary(self) -> dict:
        """Plain-number summary: mean held-out and best validation correlation, epochs, time, device."""
        return {"mean_correlation": self.mean_correlation, "best_val_correlation": self.best_val_correlation,
                "heldout_tier": self.heldout_tier, "best_epoch": self.best_epoch, "n_epochs": self.n_epochs,
                "wall_time": self.wall_time, "device": self.device}

    def model(self, device: str | torch.device = "cpu") -> PredictiveModel:
        """The trained model, rebuilt from the state_dict."""
        return load_model(self.state_dict, self.config, self.n_neurons, self.image_shape, device)


def _evaluate(model: PredictiveModel, t: dict, idx: np.ndarray, batch_size: int) -> np.ndarray:
    """Per-neuron correlation on trials ``idx`` with their own behaviour and eye position."""
    model.eval()
    preds = []
    with torch.no_grad():
        for start in range(0, len(idx), batch_size):
            i = torch.as_tensor(idx[start:start + batch_size], device=t["images"].device)
            preds.append(model(t["images"][i], t["behavior"][i], t["pupil_center"][i]).cpu().numpy())
    return correlation_per_neuron(t["responses_np"][idx], np.concatenate(preds))


def _train_epoch(model, optimizer, t: dict, train_idx: torch.Tensor, batch_size: int,
                 generator: torch.Generator) -> float:
    """One pass over the training trials in a seeded random order; returns the mean batch loss."""
    model.train()
    order = train_idx[torch.randperm(len(train_idx), generator=generator)].to(t["images"].device)
    scale = model.response_scale
    total = 0.0
    n_batches = math.ceil(len(order) / batch_size)
    for b in range(n_batches):
        i = order[b * batch_size:(b + 1) * batch_size]
        rate = model(t["images"][i], t["behavior"][i], t["pupil_center"][i])
        loss = poisson_loss(rate / scale, t["responses"][i] / scale) + model.regularizer()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach())
    return total / n_batches


CHECKPOINT_STATE_KEYS = ("model", "optimiser", "early_stopping", "generator", "rng", "wall_time")
# Keys that change no weight: left out of the fingerprint (a run may be extended; any device may resume it).
NON_FINGERPRINT_KEYS = ("max_epochs", "device")


def run_fingerprint(arrays: dict, cfg: dict, seed: int) -> str:
    """A hash of everything that determines a predictor's weights: the data, the configuration and the seed."""
    return checkpoints.fingerprint(dict(
        kind="predictor", seed=int(seed), data=array_digest(*(arrays[f] for f in DATA_FIELDS)),
        train={k: v for k, v in cfg.items() if k not in NON_FINGERPRINT_KEYS}))


def _rng_state(dev: torch.device) -> dict:
    """The global generators the readout's position sampling draws from (inside train_predictor's fork_rng)."""
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None}


def _set_rng_state(state: dict, dev: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if dev.type == "cuda" and state["cuda"] is not None:
        torch.cuda.set_rng_state(state["cuda"], dev)


def train_predictor(data: dict, config: dict | str | None = None, seed: int = 0, device: str | None = None,
                    progress: bool = True, checkpoint_dir: str | os.PathLike | None = None,
                    on_epoch_end: Callable[[int, dict], None] | None = None) -> PredictorResult:
    """Train a predictive model on one scan's trials (see the module docstring for ``data``).

    config: a resolved predictor configuration (config.resolve_config), or anything that resolves to one (a
    preset name, a dict of overrides); a resolved one is used as it is. seed: fixes initialisation, batch order
    and readout sampling (identical weights on CPU for the same seed); device: overrides config['device'].
    The global torch RNG state is left as it was.
    checkpoint_dir: after every epoch the full state (model, optimiser, early-stopping state with the best
    weights, RNG states, curves, epoch) is written to <dir>/checkpoint.pt (pipeline.checkpoints), and a later
    call with the same arguments resumes from it, to exactly the weights of an uninterrupted run (on CPU); a
    checkpoint of a finished run returns its result without training. on_epoch_end(epoch, curves): called after
    each epoch's checkpoint.
    """
    cfg = resolve_config(config)
    arrays = validate_data(data)
    dev = resolve_device(device if device is not None else cfg["device"])
    tiers = arrays["tiers"]
    train_mask = tiers == "train"
    n_neurons, image_shape = arrays["responses"].shape[1], tuple(arrays["images"].shape[1:])
    ckpt_path = checkpoints.checkpoint_path(checkpoint_dir)
    fingerprint = run_fingerprint(arrays, cfg, seed) if ckpt_path is not None else None
    start_time = time.perf_counter()
    cuda_devices = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        model = build_model(cfg, n_neurons, image_shape)
        model.set_statistics(arrays["images"][train_mask], arrays["behavior"][train_mask],
                             arrays["pupil_center"][train_mask], arrays["responses"][train_mask])
        model.to(dev)
        train_idx_np = np.flatnonzero(train_mask)
        t = {name: torch.as_tensor(arrays[name], device=dev)
             for name in ("images", "responses", "behavior", "pupil_center")}
        if cfg["readout_init"] == "receptive_field":
            model.initialize_positions(t["images"][train_idx_np], t["responses"][train_idx_np])
        t["images"] = t["images"].unsqueeze(1)
        t["responses_np"] = arrays["responses"]
        train_idx = torch.as_tensor(train_idx_np)
        val_idx = np.flatnonzero(tiers == "validation")
        generator = torch.Generator().manual_seed(seed)
        lr = cfg["lr"]
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)

        curves = {"train_loss": [], "val_correlation": [], "lr": []}
        best_val, best_epoch, best_state = -np.inf, 0, copy.deepcopy(model.state_dict())
        bad_epochs, decays, epoch, stopped, wall_before = 0, 0, 0, False, 0.0
        if ckpt_path is not None and ckpt_path.is_file():
            state = checkpoints.load_checkpoint(ckpt_path, fingerprint, cfg["max_epochs"],
                                                required=CHECKPOINT_STATE_KEYS)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimiser"])
            es = state["early_stopping"]
            best_val, best_epoch, best_state = es["best_val"], es["best_epoch"], es["best_state"]
            bad_epochs, decays, lr, stopped = es["bad_epochs"], es["decays"], es["lr"], es["stopped"]
            generator.set_state(state["generator"])
            _set_rng_state(state["rng"], dev)
            curves, epoch, wall_before = state["curves"], state["epoch"], state["wall_time"]
        epochs_left = range(epoch + 1, cfg["max_epochs"] + 1) if not stopped else range(0)
        bar = tqdm(epochs_left, desc=f"predictor seed={seed}", disable=not progress, leave=False,
                   initial=epoch, total=cfg["max_epochs"])
        for epoch in bar:
            loss = _train_epoch(model, optimizer, t, train_idx, cfg["batch_size"], generator)
            val = float(_evaluate(model, t, val_idx, cfg["eval_batch_size"]).mean())
            curves["train_loss"].append(loss)
            curves["val_correlation"].append(val)
            curves["lr"].append(lr)
            bar.set_postfix(loss=f"{loss:.3f}", val_corr=f"{val:.3f}", lr=f"{lr:.1e}")
            if val > best_val + cfg["tolerance"]:
                best_val, best_epoch, best_state = val, epoch, copy.deepcopy(model.state_dict())
                bad_epochs = 0
            else:
                bad_epochs += 1
            if bad_epochs >= cfg["patience"]:
                if decays >= cfg["lr_decay_steps"]:
                    stopped = True
                else:
                    decays, bad_epochs = decays + 1, 0
                    model.load_state_dict(best_state)
                    lr *= cfg["lr_decay_factor"]
                    for group in optimizer.param_groups:
                        group["lr"] = lr
            if ckpt_path is not None:
                checkpoints.save_checkpoint(ckpt_path, dict(
                    fingerprint=fingerprint, epoch=epoch, model=model.state_dict(), optimiser=optimizer.state_dict(),
                    early_stopping=dict(best_val=float(best_val), best_epoch=best_epoch, best_state=best_state,
                                        bad_epochs=bad_epochs, decays=decays, lr=lr, stopped=stopped),
                    generator=generator.get_state(), rng=_rng_state(dev), curves=curves,
                    wall_time=wall_before + time.perf_counter() - start_time))
            if on_epoch_end is not None:
                on_epoch_end(epoch, curves)
            if stopped:
                break
        bar.close()
        model.load_state_dict(best_state)
        tier = heldout_tier(tiers)
        correlation = _evaluate(model, t, np.flatnonzero(tiers == tier), cfg["eval_batch_size"])
    return PredictorResult(
        state_dict={k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        config=cfg, curves=curves, correlation=correlation, heldout_tier=tier, best_epoch=best_epoch,
        n_epochs=epoch, wall_time=wall_before + time.perf_counter() - start_time, device=str(dev),
        n_neurons=n_neurons, image_shape=image_shape, best_val_correlation=float(best_val))
