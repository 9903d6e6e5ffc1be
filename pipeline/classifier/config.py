"""What a classifier training run is configured by: the train presets, the regulariser defaults, their resolvers.

A configuration is resolved once, when it is entered: :func:`resolve_train_config` and :func:`resolve_regulariser`
fill in the defaults, check every value and return the COMPLETE configuration as plain Python values (int,
float, bool, None, str, list), without a 'preset' key. That dict is what is stored and hashed, and what the
training functions run, so a stored configuration means the same whatever TRAIN_PRESETS or REGULARISER_DEFAULTS
say later. Resolving is idempotent (a resolved dict resolves to itself) and survives a JSON round trip.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from pipeline.classifier.adversarial import resolve_adversarial
from pipeline.checks import apply_preset, check_keys, is_int, non_negative_number, positive_int
from pipeline.classifier.resnet import LAYER_NAMES, ArchitectureError, check_layers
from pipeline.classifier.similarity_loss import RegulariserError, check_settings, min_batch_for_pairs
from pipeline.errors import ConfigError

PAPER_PAIRS_PER_STEP = 16

TRAIN_PRESETS: dict[str, dict] = {
    # Sec 4.1: SGD, 40 epochs, batch 64, lr 0.1 x 0.3 every 4 epochs, back to 0.1 after epoch 20, momentum 0.9.
    # Weight decay is not stated in the paper; 5e-4 is the common CIFAR ResNet choice.
    "paper": dict(epochs=40, batch_size=64, lr=0.1, momentum=0.9, weight_decay=5e-4, lr_decay=0.3,
                  lr_step_epochs=4, lr_reset_epoch=20, augment=True, pad=4, flip=None,
                  max_steps_per_epoch=None, eval_batch_size=500, adversarial=None),
    # A few minutes on a laptop CPU with a narrow network: same recipe, compressed schedule, capped epochs.
    "cpu-demo": dict(epochs=4, batch_size=64, lr=0.05, momentum=0.9, weight_decay=5e-4, lr_decay=0.3,
                     lr_step_epochs=2, lr_reset_epoch=None, augment=True, pad=4, flip=None,
                     max_steps_per_epoch=40, eval_batch_size=500, adversarial=None),
    # Seconds: for tests and smoke runs.
    "cpu-test": dict(epochs=2, batch_size=32, lr=0.05, momentum=0.9, weight_decay=5e-4, lr_decay=0.3,
                     lr_step_epochs=1, lr_reset_epoch=None, augment=True, pad=4, flip=None,
                     max_steps_per_epoch=4, eval_batch_size=256, adversarial=None),
}
TRAIN_KEYS = tuple(TRAIN_PRESETS["paper"])

REGULARISER_DEFAULTS = dict(alpha=20.0, layers=list(LAYER_NAMES), batch_size=min_batch_for_pairs(PAPER_PAIRS_PER_STEP),
                            momentum=0.9, clip_eps=1e-3, loss_form="arctanh", stimulus_bn="frozen")
STIMULUS_BN_MODES = ("frozen", "update")


class TrainConfigError(ConfigError):
    """Bad train / regulariser / target configuration, or a checkpoint that belongs to another run."""


def resolve_train_config(config: Mapping | str | None) -> dict:
    """The complete, checked train configuration (every key of TRAIN_KEYS, plain Python values, no 'preset').

    config: a preset name (a key of TRAIN_PRESETS), or a dict of train keys plus optionally 'preset' (default
    'paper') whose values fill the keys the dict leaves out; None is the 'paper' preset. A complete dict is
    returned as it is (checked and cast), so resolving a resolved configuration changes nothing.
    """
    out = apply_preset(dict(config) if isinstance(config, Mapping) else config, TRAIN_PRESETS, TRAIN_KEYS,
                       "train_config", error=TrainConfigError)
    for key in ("epochs", "batch_size", "lr_step_epochs", "eval_batch_size"):
        out[key] = positive_int(out[key], f"train_config {key}", error=TrainConfigError)
    for key in ("max_steps_per_epoch", "lr_reset_epoch"):
        if out[key] is not None:
            out[key] = positive_int(out[key], f"train_config {key}", "or None", error=TrainConfigError)
    for key in ("lr", "momentum", "weight_decay", "lr_decay"):
        out[key] = non_negative_number(out[key], f"train_config {key}", error=TrainConfigError)
    if not is_int(out["pad"]) or out["pad"] < 0:
        raise TrainConfigError(f"train_config pad={out['pad']!r} must be a non-negative integer")
    out["pad"] = int(out["pad"])
    if not isinstance(out["augment"], (bool, np.bool_)):
        raise TrainConfigError(f"train_config augment={out['augment']!r} must be True or False")
    out["augment"] = bool(out["augment"])
    if out["flip"] is not None and not isinstance(out["flip"], (bool, np.bool_)):
        raise TrainConfigError(f"train_config flip={out['flip']!r} must be True, False or None (task default)")
    out["flip"] = None if out["flip"] is None else bool(out["flip"])
    try:
        out["adversarial"] = resolve_adversarial(out["adversarial"])
    except ConfigError as err:
        raise TrainConfigError(str(err)) from err
    return {key: out[key] for key in TRAIN_KEYS}


def learning_rate(epoch: int, cfg: Mapping) -> float:
    """lr of 0-based ``epoch``: lr * lr_decay ** (e // lr_step_epochs), e = epoch mod lr_reset_epoch (if set).

    Paper preset: 0.1 for epochs 0-3, 0.03 for 4-7, ..., 0.1 * 0.3**4 for 16-19, 0.1 again from epoch 20.
    """
    e = epoch % cfg["lr_reset_epoch"] if cfg["lr_reset_epoch"] else epoch
    return float(cfg["lr"] * cfg["lr_decay"] ** (e // cfg["lr_step_epochs"]))


def resolve_regulariser(regulariser: Mapping | None) -> dict | None:
    """The complete, checked regulariser (alpha, layers, batch_size B, momentum, clip_eps, loss_form, stimulus_bn).

    Keys left out take REGULARISER_DEFAULTS. Returns None when there is nothing to regularise (None, or
    alpha = 0); layers come back as a list in network order.
    """
    if regulariser is None:
        return None
    if not isinstance(regulariser, Mapping):
        raise TrainConfigError(f"regulariser={regulariser!r} must be a dict of {sorted(REGULARISER_DEFAULTS)}, "
                               "or None")
    check_keys(regulariser, REGULARISER_DEFAULTS, "regulariser", error=TrainConfigError)
    cfg = {**REGULARISER_DEFAULTS, **regulariser}
    cfg["alpha"] = non_negative_number(cfg["alpha"], "regulariser alpha", error=TrainConfigError)
    if cfg["alpha"] == 0:
        return None
    layers = [cfg["layers"]] if isinstance(cfg["layers"], str) else list(cfg["layers"])
    try:
        check_layers(layers)
    except ArchitectureError as err:
        raise TrainConfigError(f"regulariser layers: {err}") from err
    cfg["layers"] = [n for n in LAYER_NAMES if n in layers]
    if not is_int(cfg["batch_size"]) or cfg["batch_size"] < 2:
        raise TrainConfigError(f"regulariser batch_size={cfg['batch_size']!r} must be an integer >= 2 "
                               f"(B stimuli give B(B-1)/2 pairs; the paper's {PAPER_PAIRS_PER_STEP} pairs need "
                               f"B >= {min_batch_for_pairs(PAPER_PAIRS_PER_STEP)})")
    cfg["batch_size"] = int(cfg["batch_size"])
    for key in ("momentum", "clip_eps"):
        cfg[key] = non_negative_number(cfg[key], f"regulariser {key}", error=TrainConfigError)
    for key in ("loss_form", "stimulus_bn"):
        if not isinstance(cfg[key], str):
            raise TrainConfigError(f"regulariser {key}={cfg[key]!r} must be a string")
        cfg[key] = str(cfg[key])
    try:
        check_settings(cfg["momentum"], cfg["clip_eps"], cfg["loss_form"])
    except RegulariserError as err:
        raise TrainConfigError(f"regulariser: {err}") from err
    if cfg["stimulus_bn"] not in STIMULUS_BN_MODES:
        raise TrainConfigError(f"regulariser stimulus_bn={cfg['stimulus_bn']!r} must be one of {STIMULUS_BN_MODES}")
    return {key: cfg[key] for key in REGULARISER_DEFAULTS}


def check_target(target: Mapping | None, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate target {'matrix': (N, N) in [-1, 1], 'stimuli': (N, H, W) in [0, 255]} -> float32 arrays."""
    if target is None or "matrix" not in target or "stimuli" not in target:
        raise TrainConfigError("a regulariser with alpha > 0 needs target={'matrix': (N, N) float32 similarity, "
                               "'stimuli': (N, H, W) float32 images in [0, 255]}")
    matrix = np.asarray(target["matrix"], dtype=np.float32)
    stimuli = np.asarray(target["stimuli"], dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise TrainConfigError(f"target matrix must be square (N, N), got {matrix.shape}")
    n = matrix.shape[0]
    if stimuli.ndim != 3 or stimuli.shape[0] != n:
        raise TrainConfigError(f"target stimuli must be (N, H, W) with N = {n} (the matrix's size), "
                               f"got {stimuli.shape}")
    if n < batch_size:
        raise TrainConfigError(f"target has {n} stimuli, fewer than the regulariser batch_size {batch_size}")
    if not np.isfinite(matrix).all() or np.abs(matrix).max() > 1.0 + 1e-4:
        raise TrainConfigError("target matrix must be finite similarities in [-1, 1]")
    if not np.isfinite(stimuli).all() or stimuli.min() < 0.0 or stimuli.max() > 255.0:
        raise TrainConfigError("target stimuli must be finite pixel values in [0, 255]")
    if stimuli.max() <= 1.0:
        raise TrainConfigError("target stimuli are all <= 1: they look scaled to [0, 1] already; pass them in [0, 255]")
    return matrix, stimuli
