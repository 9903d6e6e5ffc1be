"""Train an image classifier, optionally with the neural similarity regulariser (Eq 7: L = L_task + alpha L_sim).

Each step: one batch of task images (cross-entropy), and, when alpha > 0, one batch of B stimuli drawn from the
target's images, whose B (B - 1) / 2 pairs give L_sim (see similarity_loss.py). With alpha = 0 or no regulariser
nothing about the stimuli is computed.

Checkpoints: with ``checkpoint_dir`` the full state (model, optimiser, regulariser, RNG states, curves, epoch) is
written after every epoch (temporary file + rename), and a later call with the same arguments resumes from it;
a resumed run ends with exactly the weights of an uninterrupted one (on CPU). The learning-rate schedule is a pure
function of the epoch (:func:`learning_rate`), so the epoch number is the scheduler's whole state, and all
randomness after initialisation (batch order, augmentation, stimulus draws) comes from one seeded
torch.Generator whose state is checkpointed; the caller's global RNG is left untouched.
"""

from __future__ import annotations

from pipeline.errors import NeuralRegError

import contextlib
import hashlib
import json
import math
import numbers
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.classifier.resnet import LAYER_NAMES, ResNet, build_classifier, check_layers
from pipeline.classifier.similarity_loss import SimilarityRegulariser, min_batch_for_pairs, n_pairs
from pipeline.classifier.tasks import TaskData, augment_batch

PAPER_PAIRS_PER_STEP = 16
CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_FORMAT = 1

TRAIN_PRESETS: dict[str, dict] = {
    # Sec 4.1: SGD, 40 epochs, batch 64, lr 0.1 x 0.3 every 4 epochs, back to 0.1 after epoch 20, momentum 0.9.
    # Weight decay is not stated in the paper; 5e-4 is the common CIFAR ResNet choice.
    "paper": dict(epochs=40, batch_size=64, lr=0.1, momentum=0.9, weight_decay=5e-4, lr_decay=0.3,
                  lr_step_epochs=4, lr_reset_epoch=20, augment=True, pad=4, flip=None,
                  max_steps_per_epoch=None, eval_batch_size=500),
    # A few minutes on a laptop CPU with a narrow network: same recipe, compressed schedule, capped epochs.
    "cpu-demo": dict(epochs=4, batch_size=64, lr=0.05, momentum=0.9, weight_decay=5e-4, lr_decay=0.3,
                     lr_step_epochs=2, lr_reset_epoch=None, augment=True, pad=4, flip=None,
                     max_steps_per_epoch=40, eval_batch_size=500),
    # Seconds: for tests and smoke runs.
    "cpu-test": dict(epochs=2, batch_size=32, lr=0.05, momentum=0.9, weight_decay=5e-4, lr_decay=0.3,
                     lr_step_epochs=1, lr_reset_epoch=None, augment=True, pad=4, flip=None,
                     max_steps_per_epoch=4, eval_batch_size=256),
}

REGULARISER_DEFAULTS = dict(alpha=20.0, layers=list(LAYER_NAMES), batch_size=min_batch_for_pairs(PAPER_PAIRS_PER_STEP),
                            momentum=0.9, clip_eps=1e-3, loss_form="arctanh", stimulus_bn="frozen")
STIMULUS_BN_MODES = ("frozen", "update")
# Keys that change no weight: left out of the checkpoint fingerprint (epochs may grow on resume).
NON_FINGERPRINT_KEYS = ("epochs", "eval_batch_size")


class TrainConfigError(NeuralRegError):
    """Bad train / regulariser / target configuration, or a checkpoint that belongs to another run."""


@dataclass
class ClassifierResult:
    """A trained classifier.

    state_dict: model weights on CPU. test_accuracy: fraction correct on the whole test set after the last epoch.
    curves: per epoch lists 'task_loss', 'similarity_loss' (NaN when unregularised), 'train_accuracy',
    'test_accuracy', 'learning_rate'. gamma: {layer: final softmax weight} ({} when unregularised).
    wall_time: seconds of training (summed over resumed parts). pairs_per_step: B (B - 1) / 2, or 0.
    """

    arch: str
    n_classes: int
    state_dict: dict
    test_accuracy: float
    curves: dict
    gamma: dict
    wall_time: float
    device: str
    epochs: int
    steps_per_epoch: int
    pairs_per_step: int
    train_config: dict
    regulariser: dict | None
    regulariser_state: dict | None = field(default=None, repr=False)


# ---------------------------------------------------------------------------------------------------------------
# configuration


def resolve_train_config(train_config: Mapping | str | None) -> dict:
    """A preset name, or a dict (optionally with 'preset', default 'paper') of overrides -> full checked config."""
    if train_config is None:
        train_config = {}
    if isinstance(train_config, str):
        train_config = {"preset": train_config}
    cfg = dict(train_config)
    preset = cfg.pop("preset", "paper")
    if preset not in TRAIN_PRESETS:
        raise TrainConfigError(f"train_config preset {preset!r} is unknown: use one of {sorted(TRAIN_PRESETS)}")
    out = dict(TRAIN_PRESETS[preset])
    unknown = set(cfg) - set(out)
    if unknown:
        raise TrainConfigError(f"train_config keys {sorted(unknown)} are unknown: allowed are {sorted(out)} "
                               "and 'preset'")
    out.update(cfg)
    # numbers.* so that numpy scalars (as a database blob returns them) pass, cast to Python types
    for key in ("epochs", "batch_size", "lr_step_epochs", "eval_batch_size"):
        out[key] = positive_int(out[key], f"train_config {key}")
    for key in ("max_steps_per_epoch", "lr_reset_epoch"):
        out[key] = None if out[key] is None else positive_int(out[key], f"train_config {key}", "or None")
    for key in ("lr", "momentum", "weight_decay", "lr_decay"):
        if not is_number(out[key]) or out[key] < 0:
            raise TrainConfigError(f"train_config {key}={out[key]!r} must be a non-negative number")
        out[key] = float(out[key])
    if not is_int(out["pad"]) or out["pad"] < 0:
        raise TrainConfigError(f"train_config pad={out['pad']!r} must be a non-negative integer")
    out["pad"] = int(out["pad"])
    if out["flip"] not in (None, True, False):
        raise TrainConfigError(f"train_config flip={out['flip']!r} must be True, False or None (task default)")
    out["flip"] = None if out["flip"] is None else bool(out["flip"])
    out["augment"] = bool(out["augment"])
    out["preset"] = preset
    return out


def is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def positive_int(v, what: str, alternative: str = "") -> int:
    if not is_int(v) or v < 1:
        raise TrainConfigError(f"{what}={v!r} must be a positive integer {alternative}".rstrip())
    return int(v)


def learning_rate(epoch: int, cfg: Mapping) -> float:
    """lr of 0-based ``epoch``: lr * lr_decay ** (e // lr_step_epochs), e = epoch mod lr_reset_epoch (if set).

    Paper preset: 0.1 for epochs 0-3, 0.03 for 4-7, ..., 0.1 * 0.3**4 for 16-19, 0.1 again from epoch 20.
    """
    e = epoch % cfg["lr_reset_epoch"] if cfg["lr_reset_epoch"] else epoch
    return float(cfg["lr"] * cfg["lr_decay"] ** (e // cfg["lr_step_epochs"]))


def resolve_regulariser(regulariser: Mapping | None) -> dict | None:
    """Regulariser dict (alpha, layers, batch_size B, momentum, clip_eps, loss_form, stimulus_bn) with defaults.

    Returns None when there is nothing to regularise (no dict, or alpha = 0).
    """
    if regulariser is None:
        return None
    unknown = set(regulariser) - set(REGULARISER_DEFAULTS)
    if unknown:
        raise TrainConfigError(f"regulariser keys {sorted(unknown)} are unknown: allowed are "
                               f"{sorted(REGULARISER_DEFAULTS)}")
    cfg = {**REGULARISER_DEFAULTS, **regulariser}
    alpha = cfg["alpha"]
    if not is_number(alpha) or alpha < 0:
        raise TrainConfigError(f"regulariser alpha={alpha!r} must be a finite number >= 0")
    if alpha == 0:
        return None
    cfg["alpha"] = float(alpha)
    layers = [cfg["layers"]] if isinstance(cfg["layers"], str) else list(cfg["layers"])
    try:
        check_layers(layers)
    except ValueError as err:
        raise TrainConfigError(f"regulariser layers: {err}") from err
    cfg["layers"] = [n for n in LAYER_NAMES if n in layers]
    if not is_int(cfg["batch_size"]) or cfg["batch_size"] < 2:
        raise TrainConfigError(f"regulariser batch_size={cfg['batch_size']!r} must be an integer >= 2 "
                               f"(B stimuli give B(B-1)/2 pairs; the paper's 16 pairs need B >= "
                               f"{min_batch_for_pairs(PAPER_PAIRS_PER_STEP)})")
    cfg["batch_size"] = int(cfg["batch_size"])
    for key in ("momentum", "clip_eps"):
        if not is_number(cfg[key]):
            raise TrainConfigError(f"regulariser {key}={cfg[key]!r} must be a number")
        cfg[key] = float(cfg[key])
    cfg["layers"] = [str(n) for n in cfg["layers"]]
    cfg["loss_form"], cfg["stimulus_bn"] = str(cfg["loss_form"]), str(cfg["stimulus_bn"])
    if cfg["stimulus_bn"] not in STIMULUS_BN_MODES:
        raise TrainConfigError(f"regulariser stimulus_bn={cfg['stimulus_bn']!r} must be one of {STIMULUS_BN_MODES}")
    return cfg


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


def resolve_device(device) -> torch.device:
    """None or 'auto' -> CUDA when available, else CPU; anything else as torch.device."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# ---------------------------------------------------------------------------------------------------------------
# one step


@dataclass
class StimulusSampler:
    """Draws B stimuli and their (B, B) target block. stimuli (N, 1, H, W) in [0, 1] and matrix (N, N), on device."""

    stimuli: torch.Tensor
    matrix: torch.Tensor
    batch_size: int

    def sample(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randperm(self.stimuli.shape[0], generator=generator)[: self.batch_size].to(self.stimuli.device)
        return self.stimuli[idx], self.matrix[idx[:, None], idx[None, :]]


@contextlib.contextmanager
def frozen_bn_statistics(model: nn.Module, frozen: bool = True):
    """Inside, batch norm still normalises by batch statistics but leaves its running statistics unchanged.

    momentum = 0 makes PyTorch's update running = (1 - m) running + m batch an identity; used so the stimulus
    batches (another image distribution and size) do not shift the statistics the classifier is tested with.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)] if frozen else []
    saved = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom


def train_step(model: ResNet, optimiser: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               regulariser: SimilarityRegulariser | None = None, reg_cfg: Mapping | None = None,
               sampler: StimulusSampler | None = None, generator: torch.Generator | None = None):
    """One SGD step on L_task (+ alpha L_sim). Returns detached (task loss, similarity loss or None, n correct)."""
    optimiser.zero_grad(set_to_none=True)
    logits = model(x)
    task_loss = F.cross_entropy(logits, y)
    loss, sim_loss = task_loss, None
    if regulariser is not None:
        stimuli, block = sampler.sample(generator)
        with frozen_bn_statistics(model, reg_cfg["stimulus_bn"] == "frozen"):
            feats = model.features(stimuli, regulariser.layers)
        sim_loss = regulariser(feats, block)
        loss = task_loss + reg_cfg["alpha"] * sim_loss
    loss.backward()
    optimiser.step()
    correct = (logits.detach().argmax(1) == y).sum()
    return task_loss.detach(), None if sim_loss is None else sim_loss.detach(), correct


def make_optimiser(model: nn.Module, regulariser: nn.Module | None, cfg: Mapping) -> torch.optim.SGD:
    """SGD with momentum; weight decay on the network, none on the regulariser's beta."""
    groups = [{"params": list(model.parameters()), "weight_decay": cfg["weight_decay"]}]
    if regulariser is not None:
        groups.append({"params": list(regulariser.parameters()), "weight_decay": 0.0})
    return torch.optim.SGD(groups, lr=cfg["lr"], momentum=cfg["momentum"])


# ---------------------------------------------------------------------------------------------------------------
# the loop


def train_classifier(task: TaskData, arch: str, train_config: Mapping | str | None = None,
                     regulariser: Mapping | None = None, target: Mapping | None = None, seed: int = 0,
                     device=None, checkpoint_dir: str | os.PathLike | None = None, progress: bool = True,
                     on_epoch_end: Callable[[int, dict], None] | None = None) -> ClassifierResult:
    """Train ``arch`` on ``task`` (optionally regularised toward ``target``) and return the result.

    train_config: preset name or dict of overrides (see TRAIN_PRESETS). regulariser: dict of alpha, layers,
    batch_size (B stimuli per step), momentum, clip_eps, loss_form, stimulus_bn ('frozen' | 'update'), or None.
    target: {'matrix': (N, N) float32, 'stimuli': (N, H, W) float32 in [0, 255]}. seed: initialisation and
    sampling. device: None / 'auto' (CUDA if available) or a torch device. checkpoint_dir: resume from and save
    to <dir>/checkpoint.pt each epoch. on_epoch_end(epoch, curves): called after each epoch's checkpoint.
    """
    cfg = resolve_train_config(train_config)
    reg_cfg = resolve_regulariser(regulariser)
    dev = resolve_device(device)
    flip = task.hflip if cfg["flip"] is None else bool(cfg["flip"])
    n_train = task.train_x.shape[0]
    if n_train < cfg["batch_size"]:
        raise TrainConfigError(f"task {task.name!r} has {n_train} training images, fewer than batch_size "
                               f"{cfg['batch_size']}")
    steps = n_train // cfg["batch_size"]
    if cfg["max_steps_per_epoch"]:
        steps = min(steps, cfg["max_steps_per_epoch"])

    with torch.random.fork_rng(devices=[]):  # do not disturb the caller's global RNG
        torch.manual_seed(seed)
        model = build_classifier(arch, task.n_classes)
    model.to(dev)
    reg_module, sampler, target_digest = None, None, None
    if reg_cfg is not None:
        matrix, stimuli = check_target(target, reg_cfg["batch_size"])
        channels = model.layer_channels()
        reg_module = SimilarityRegulariser({n: channels[n] for n in reg_cfg["layers"]}, momentum=reg_cfg["momentum"],
                                           clip_eps=reg_cfg["clip_eps"], loss_form=reg_cfg["loss_form"]).to(dev)
        sampler = StimulusSampler(torch.from_numpy(stimuli / np.float32(255.0))[:, None].to(dev),
                                  torch.from_numpy(matrix).to(dev), reg_cfg["batch_size"])
        target_digest = array_digest(matrix, stimuli)
    optimiser = make_optimiser(model, reg_module, cfg)
    generator = torch.Generator().manual_seed(seed)
    curves = {k: [] for k in ("task_loss", "similarity_loss", "train_accuracy", "test_accuracy", "learning_rate")}
    fingerprint = run_fingerprint(task, arch, cfg, reg_cfg, target_digest, seed)

    start_epoch, wall_before = 0, 0.0
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir is not None else None
    if ckpt_path is not None and ckpt_path.is_file():
        state = load_checkpoint(ckpt_path, fingerprint, cfg["epochs"])
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        if reg_module is not None:
            reg_module.load_state_dict(state["regulariser"])
        generator.set_state(state["generator"])
        curves, start_epoch, wall_before = state["curves"], state["epoch"], state["wall_time"]

    train_x = torch.from_numpy(task.train_x).to(dev)
    train_y = torch.from_numpy(task.train_y).to(dev)
    test_x = torch.from_numpy(task.test_x).to(dev)
    test_y = torch.from_numpy(task.test_y).to(dev)
    wall_start = time.perf_counter()
    for epoch in range(start_epoch, cfg["epochs"]):
        lr = learning_rate(epoch, cfg)
        for group in optimiser.param_groups:
            group["lr"] = lr
        model.train()
        if reg_module is not None:
            reg_module.train()
        order = torch.randperm(n_train, generator=generator)
        task_sum = torch.zeros((), device=dev)
        sim_sum = torch.zeros((), device=dev)
        correct = torch.zeros((), device=dev, dtype=torch.long)
        bar = tqdm_steps(steps, f"epoch {epoch + 1}/{cfg['epochs']}", progress)
        for step in range(steps):
            idx = order[step * cfg["batch_size"]:(step + 1) * cfg["batch_size"]].to(dev)
            x = train_x[idx]
            if cfg["augment"]:
                x = augment_batch(x, generator, pad=cfg["pad"], flip=flip)
            t_loss, s_loss, n_ok = train_step(model, optimiser, x, train_y[idx], reg_module, reg_cfg, sampler,
                                              generator)
            task_sum += t_loss
            correct += n_ok
            if s_loss is not None:
                sim_sum += s_loss
            if bar is not None:
                bar.update(1)
                if step % 20 == 0 or step == steps - 1:
                    bar.set_postfix(task=f"{task_sum.item() / (step + 1):.3f}",
                                    sim=f"{sim_sum.item() / (step + 1):.3f}" if reg_module is not None else "-")
        if bar is not None:
            bar.close()
        curves["task_loss"].append(task_sum.item() / steps)
        curves["similarity_loss"].append(sim_sum.item() / steps if reg_module is not None else float("nan"))
        curves["train_accuracy"].append(correct.item() / (steps * cfg["batch_size"]))
        curves["test_accuracy"].append(accuracy(model, test_x, test_y, cfg["eval_batch_size"]))
        curves["learning_rate"].append(lr)
        if ckpt_path is not None:
            save_checkpoint(ckpt_path, dict(
                format=CHECKPOINT_FORMAT, fingerprint=fingerprint, epoch=epoch + 1, model=model.state_dict(),
                optimiser=optimiser.state_dict(),
                regulariser=None if reg_module is None else reg_module.state_dict(),
                generator=generator.get_state(), curves=curves,
                wall_time=wall_before + time.perf_counter() - wall_start))
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, curves)

    return ClassifierResult(
        arch=arch, n_classes=task.n_classes, state_dict={k: v.detach().cpu() for k, v in model.state_dict().items()},
        test_accuracy=float(curves["test_accuracy"][-1]), curves=curves,
        gamma={} if reg_module is None else reg_module.gamma_dict(),
        wall_time=wall_before + time.perf_counter() - wall_start, device=str(dev), epochs=cfg["epochs"],
        steps_per_epoch=steps, pairs_per_step=0 if reg_cfg is None else n_pairs(reg_cfg["batch_size"]),
        train_config=cfg, regulariser=reg_cfg,
        regulariser_state=None if reg_module is None else {k: v.detach().cpu()
                                                           for k, v in reg_module.state_dict().items()})


def tqdm_steps(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False)


# ---------------------------------------------------------------------------------------------------------------
# checkpoints


def array_digest(*arrays: np.ndarray) -> str:
    digest = hashlib.sha1()
    for a in arrays:
        a = np.ascontiguousarray(a)
        digest.update(f"{a.dtype}{a.shape}".encode())
        digest.update(memoryview(a).cast("B"))
    return digest.hexdigest()


def run_fingerprint(task: TaskData, arch: str, cfg: Mapping, reg_cfg: Mapping | None, target_digest: str | None,
                    seed: int) -> str:
    """A hash of everything that determines the weights, except the number of epochs."""
    desc = dict(task=task.name, n_train=int(task.train_x.shape[0]), n_test=int(task.test_x.shape[0]),
                labels=array_digest(task.train_y), arch=arch, seed=int(seed), reg=reg_cfg, target=target_digest,
                train={k: v for k, v in cfg.items() if k not in NON_FINGERPRINT_KEYS})
    return hashlib.sha1(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()


def save_checkpoint(path: Path, state: dict) -> None:
    """Atomic write: a temporary file in the same folder, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: Path, fingerprint: str, epochs: int) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a damaged file
        raise TrainConfigError(f"checkpoint {path} is unreadable ({err}); delete it to start the run afresh") from err
    if state.get("format") != CHECKPOINT_FORMAT or state.get("fingerprint") != fingerprint:
        raise TrainConfigError(f"checkpoint {path} belongs to another run (different task, architecture, config, "
                               "target or seed); use another checkpoint_dir or delete it")
    if state["epoch"] > epochs:
        raise TrainConfigError(f"checkpoint {path} is at epoch {state['epoch']}, beyond the {epochs} epochs asked "
                               "for; ask for at least that many epochs or use another checkpoint_dir")
    return state


# ---------------------------------------------------------------------------------------------------------------
# using a trained classifier


def load_classifier(arch: str, n_classes: int, state_dict: Mapping) -> ResNet:
    """Rebuild a trained classifier (CPU, eval mode) from its state_dict."""
    model = build_classifier(arch, n_classes)
    model.load_state_dict(state_dict)
    return model.eval()


@torch.no_grad()
def logits_of(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Eval-mode logits (N, n_classes) of a tensor already on the model's device; restores the mode after."""
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(x[k:k + batch_size]) for k in range(0, x.shape[0], batch_size)])
    finally:
        model.train(was_training)


def predict_logits(model: nn.Module, x, batch_size: int = 500) -> np.ndarray:
    """Logits (N, n_classes) float32 of images x (N, 1, H, W) in [0, 1] (numpy or tensor), in eval mode."""
    dev = next(model.parameters()).device
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32) if not torch.is_tensor(x) else x, dtype=torch.float32)
    if xt.ndim != 4:
        raise ValueError(f"x must be (N, C, H, W), got shape {tuple(xt.shape)}")
    if xt.shape[0] == 0:
        return np.zeros((0, model.n_classes), np.float32)
    return logits_of(model, xt.to(dev), batch_size).cpu().numpy().astype(np.float32)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    """Fraction of x (on the model's device) classified as y."""
    if x.shape[0] == 0:
        return float("nan")
    return (logits_of(model, x, batch_size).argmax(1) == y).float().mean().item()
