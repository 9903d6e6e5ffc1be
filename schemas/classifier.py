"""classifier: ResNets trained on a classification task, regularised towards a Target (Eq 7-10).

``Training`` lists what to train (task x architecture x schedule x regulariser x seed, as DataJoint Elements'
ProcessingTask does), so a lab trains the combinations it asks for rather than every product of the lookups.
TrainedClassifier trains with the three-part make and a checkpoint per epoch under the project's home, so a
stopped or crashed worker resumes where it was.
"""

from __future__ import annotations

import shutil

import datajoint as dj
import numpy as np

from pipeline.classifier import resnet, tasks
from pipeline.classifier import train as classifier_train
from neural_reg.settings import load_settings

from . import codecs  # noqa: F401
from . import recording, target
from .heavy import HeavyInputs
from .paramset import ParamSet, params_hash

schema = dj.Schema()
POPULATE_ORDER = ("TrainedClassifier",)


@schema
class TaskDataset(dj.Lookup):
    definition = """
    task : varchar(64)              # a name pipeline.classifier.tasks.load_task knows
    ---
    n_classes : int16
    description : varchar(255)
    """
    contents = [
        ("digits", 10, "scikit-learn's 8x8 digits resized to 32x32: embedded, for the offline demo and tests"),
        ("cifar10-gray", 10, "CIFAR-10 in grayscale (ITU-R 601 luma), from the official python archive"),
        ("cifar100-gray", 100, "CIFAR-100 in grayscale (ITU-R 601 luma), from the official python archive"),
    ]


@schema
class Architecture(dj.Lookup):
    definition = """
    arch : varchar(32)              # a name pipeline.classifier.resnet.build_classifier knows
    ---
    description : varchar(255)
    """
    contents = [
        ("resnet18", "ResNet18 for 32x32 grayscale (3x3 stem, no max-pool), width 64: the paper's CIFAR-10 net"),
        ("resnet34", "ResNet34 for 32x32 grayscale, width 64: the paper's CIFAR-100 net"),
        ("resnet18-narrow", f"ResNet18 at width {resnet.NARROW_WIDTH}: for CPU runs"),
    ]


@schema
class TrainConfig(ParamSet, dj.Manual):
    definition = """
    train_hash : char(32)
    ---
    train_name : varchar(64)
    params : <blob>                 # {'preset': ..., overrides}; see pipeline.classifier.train.TRAIN_PRESETS
    unique index (train_name)
    """
    hash_attr, name_attr = "train_hash", "train_name"


@schema
class Regulariser(ParamSet, dj.Manual):
    definition = """
    # the similarity loss: alpha (Eq 7), the layers (Eq 9-10), the stimulus batch; no target = the None control
    regulariser_hash : char(32)
    ---
    regulariser_name : varchar(64)
    alpha : float32
    -> [nullable] target.Target
    params : <blob>                 # overrides of pipeline.classifier.train.REGULARISER_DEFAULTS
    unique index (regulariser_name)
    """
    hash_attr, name_attr = "regulariser_hash", "regulariser_name"

    @classmethod
    def insert_regulariser(cls, name: str, alpha: float, target_hash: str | None = None, **params) -> dict:
        if alpha > 0 and target_hash is None:
            raise dj.DataJointError(f"regulariser {name!r}: alpha > 0 needs a target. Fix: give target_hash.")
        if target_hash is not None and not (target.Target & {"target_hash": target_hash}):
            raise dj.DataJointError(f"regulariser {name!r}: target {target_hash} is not computed yet. "
                                    "Fix: populate target.Target first.")
        params = {"alpha": float(alpha), **params}
        digest = params_hash({**params, "target_hash": target_hash})
        key = {"regulariser_hash": digest}
        if cls() & key:
            return key
        cls.insert1(dict(key, regulariser_name=name, alpha=float(alpha), target_hash=target_hash, params=params))
        return key


@schema
class Seed(dj.Lookup):
    definition = """
    classifier_seed : int32
    """
    contents = [(0,), (1,)]


@schema
class Training(dj.Manual):
    definition = """
    # a classifier to train: what populate works through
    -> TaskDataset
    -> Architecture
    -> TrainConfig
    -> Regulariser
    -> Seed
    """


def checkpoint_dir(key: dict):
    """Where a training run keeps its per-epoch checkpoint: unique per key and per schema prefix."""
    digest = params_hash({k: str(v) for k, v in key.items()})
    return load_settings().checkpoint_dir / f"{TrainedClassifier.database}-{digest}"


def regularisation_target(key: dict) -> dict | None:
    """{'matrix', 'stimuli', 'image_ids'} restricted to the target's images not held out, or None (no target)."""
    target_hash = (Regulariser & key).fetch1("target_hash")
    if target_hash is None:
        return None
    image_set, image_ids, heldout, S = (target.Target & {"target_hash": target_hash}).fetch1(
        "image_set", "image_ids", "heldout", "similarity")
    keep = ~heldout.astype(bool)
    _, stimuli = recording.load_images(image_set, image_ids[keep])
    return {"matrix": np.ascontiguousarray(S[np.ix_(keep, keep)]), "stimuli": stimuli,
            "image_ids": image_ids[keep]}


@schema
class TrainedClassifier(HeavyInputs, dj.Computed):
    definition = """
    -> Training
    ---
    state_dict : <blob>             # dict of numpy arrays
    test_accuracy : float32         # clean accuracy on the whole test set
    curves : <blob>                 # per epoch: task_loss, similarity_loss, train_accuracy, test_accuracy, lr
    epochs : int32
    pairs_per_step : int32          # stimulus pairs in each regulariser step (0: unregularised)
    wall_time : float32             # s of training, resumed parts summed
    device : varchar(32)
    """

    class LayerWeight(dj.Part):
        definition = """
        # Table 1: the final softmax weight gamma of each regularised layer
        -> master
        layer : varchar(16)
        ---
        gamma : float32
        """

    def fetch_inputs(self, key):
        reg = (Regulariser & key).fetch1()
        params = {"train": TrainConfig.params_of(key), "alpha": float(reg["alpha"]),
                  "regulariser": reg["params"] if reg["alpha"] > 0 else None}
        target_arrays = regularisation_target(key) if reg["alpha"] > 0 else None
        return params, (target_arrays or {})

    def compute(self, key, params, target_arrays):
        task = tasks.load_task(key["task"], root=load_settings().data_dir)
        folder = checkpoint_dir(key)
        result = classifier_train.train_classifier(
            task, key["arch"], params["train"], regulariser=params["regulariser"],
            target=target_arrays or None, seed=key["classifier_seed"], checkpoint_dir=folder, progress=True)
        return result

    def make_insert(self, key, result):
        self.insert1(dict(key, state_dict={k: v.numpy() for k, v in result.state_dict.items()},
                          test_accuracy=float(result.test_accuracy), curves=result.curves, epochs=result.epochs,
                          pairs_per_step=int(result.pairs_per_step), wall_time=float(result.wall_time),
                          device=str(result.device)))
        self.LayerWeight.insert(dict(key, layer=layer, gamma=float(g)) for layer, g in result.gamma.items())
        shutil.rmtree(checkpoint_dir(key), ignore_errors=True)  # the row holds the weights now


def load_trained(key: dict):
    """The trained torch classifier of one TrainedClassifier row, in eval mode on the CPU."""
    import torch

    state = (TrainedClassifier & key).fetch1("state_dict")
    n_classes = (TaskDataset & key).fetch1("n_classes")
    arch = (TrainedClassifier & key).fetch1("arch")
    return classifier_train.load_classifier(arch, int(n_classes),
                                            {k: torch.from_numpy(np.array(v)) for k, v in state.items()})
