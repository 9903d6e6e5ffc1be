"""Checkpoints of a classifier training run: the run's fingerprint and the checks on loading.

A checkpoint holds the full state after an epoch (model, optimiser, regulariser, generator state, curves,
epoch, wall time) and the fingerprint of the run that wrote it. Saving, the checksum and the checks on loading
are pipeline.checkpoints' (shared with the predictor): loading refuses a damaged checkpoint, one of another run,
one whose epoch counter is unsound or disagrees with its curves, or one with non-finite values, so resuming can
only continue the same run from a sound state.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pipeline import checkpoints
from pipeline.checkpoints import CheckpointError
from pipeline.classifier.config import TrainConfigError
from pipeline.classifier.tasks import TaskData
from pipeline.digests import array_digest

# Keys that change no weight: left out of the fingerprint (epochs may grow on resume).
NON_FINGERPRINT_KEYS = ("epochs", "eval_batch_size")
STATE_KEYS = ("model", "optimiser", "regulariser", "generator", "wall_time")


class ClassifierCheckpointError(TrainConfigError, CheckpointError):
    """A classifier checkpoint that cannot be resumed (a TrainConfigError, and a CheckpointError)."""


def run_fingerprint(task: TaskData, arch: str, cfg: Mapping, reg_cfg: Mapping | None, target_digest: str | None,
                    seed: int) -> str:
    """A hash of everything that determines the weights, except the number of epochs."""
    desc = dict(task=task.name, n_train=int(task.train_x.shape[0]), n_test=int(task.test_x.shape[0]),
                labels=array_digest(task.train_y), arch=arch, seed=int(seed), reg=reg_cfg, target=target_digest,
                train={k: v for k, v in cfg.items() if k not in NON_FINGERPRINT_KEYS})
    return checkpoints.fingerprint(desc)


def load_checkpoint(path: Path, fingerprint: str, epochs: int) -> dict:
    """The state saved at ``path``, if it is intact, this run's (``fingerprint``), sound, and at most ``epochs``
    epochs in; else a ClassifierCheckpointError naming the file and the fix."""
    return checkpoints.load_checkpoint(path, fingerprint, epochs, required=STATE_KEYS,
                                       error=ClassifierCheckpointError)
