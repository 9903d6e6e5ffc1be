"""Checkpoints of a classifier training run: the run's fingerprint, atomic saves, and the checks on loading.

A checkpoint holds the full state after an epoch (model, optimiser, regulariser, generator state, curves,
epoch, wall time) and the fingerprint of the run that wrote it; loading refuses a checkpoint of another run
or one past the epochs asked for, so resuming can only continue the same run.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from pipeline.classifier.config import TrainConfigError
from pipeline.classifier.tasks import TaskData
from pipeline.digests import array_digest

CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_FORMAT = 1
# Keys that change no weight: left out of the fingerprint (epochs may grow on resume).
NON_FINGERPRINT_KEYS = ("epochs", "eval_batch_size")


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
    """The state saved at ``path``, if it is this run's (``fingerprint``) and at most ``epochs`` epochs in."""
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
