"""The classifier's training loop, optionally with the neural similarity regulariser (Eq 7: L = L_task + alpha L_sim).

Each step: one batch of task images (cross-entropy), and, when alpha > 0, one batch of B stimuli drawn from the
target's images, whose B (B - 1) / 2 pairs give L_sim (see similarity_loss.py). With alpha = 0 or no regulariser
nothing about the stimuli is computed.

With ``checkpoint_dir`` the full state is written after every epoch (checkpoints.py), and a later call with the
same arguments resumes from it; a resumed run ends with exactly the weights of an uninterrupted one (on CPU).
The learning-rate schedule is a pure function of the epoch (config.learning_rate), so the epoch number is the
scheduler's whole state, and all randomness after initialisation (batch order, augmentation, stimulus draws)
comes from one seeded torch.Generator whose state is checkpointed; the caller's global RNG is left untouched.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.checkpoints import checkpoint_path, save_checkpoint
from pipeline.classifier.adversarial import adversarial_batch
from pipeline.classifier.checkpoints import load_checkpoint, run_fingerprint
from pipeline.classifier.config import (TrainConfigError, check_target, learning_rate, resolve_regulariser,
                                        resolve_train_config)
from pipeline.classifier.inference import accuracy
from pipeline.classifier.resnet import ResNet, build_classifier
from pipeline.classifier.similarity_loss import SimilarityRegulariser, n_pairs
from pipeline.classifier.tasks import TaskData, augment_batch
from pipeline.devices import resolve_device
from pipeline.digests import array_digest
from pipeline.version import runtime_versions


@dataclass
class ClassifierResult:
    """A trained classifier.

    state_dict: model weights on CPU. test_accuracy: fraction correct on the whole test set after the last epoch.
    curves: per epoch lists 'task_loss', 'similarity_loss' (NaN when unregularised), 'train_accuracy',
    'test_accuracy', 'learning_rate'. gamma: {layer: final softmax weight} ({} when unregularised).
    wall_time: seconds of training (summed over resumed parts). pairs_per_step: B (B - 1) / 2, or 0.
    train_config, regulariser: the resolved configurations the run used. torch_threads: torch's intra-op thread
    count during the run; versions: 'torch=..., numpy=..., code=...' (pipeline.version.runtime_versions).
    Bit-reproducibility: a run is reproduced bit for bit by the same code, versions, device and thread count (a
    resumed run included, on CPU); 1 and 2 threads give different weights (reductions are split differently),
    and CUDA kernels are not bitwise deterministic unless torch's deterministic algorithms are switched on.
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
    torch_threads: int = 0
    versions: str = ""
    similarity_means: dict | None = None  # {layer: (C,) float32} the regulariser's running channel means (Eq 9)


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


def train_classifier(task: TaskData, arch: str, train_config: Mapping | str | None = None,
                     regulariser: Mapping | None = None, target: Mapping | None = None, seed: int = 0,
                     device=None, checkpoint_dir: str | os.PathLike | None = None, progress: bool = True,
                     on_epoch_end: Callable[[int, dict], None] | None = None) -> ClassifierResult:
    """Train ``arch`` on ``task`` (optionally regularised toward ``target``) and return the result.

    train_config: a resolved train configuration (config.resolve_train_config), or anything that resolves to
    one (a preset name, a dict of overrides); a resolved one is used as it is. regulariser: likewise a resolved
    regulariser (config.resolve_regulariser: alpha, layers, batch_size B stimuli per step, momentum, clip_eps,
    loss_form, stimulus_bn 'frozen' | 'update') or None.
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
    ckpt_path = checkpoint_path(checkpoint_dir)
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
            if cfg["adversarial"] is not None:
                x = adversarial_batch(model, x, train_y[idx], cfg["adversarial"], generator)
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
                fingerprint=fingerprint, epoch=epoch + 1, model=model.state_dict(),
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
        train_config=cfg, regulariser=reg_cfg, torch_threads=torch.get_num_threads(), versions=runtime_versions(),
        similarity_means=None if reg_module is None else {
            layer: reg_module.running_mean(layer).detach().cpu().numpy().astype(np.float32)
            for layer in reg_module.layers})


def tqdm_steps(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False)
