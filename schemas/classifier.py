"""classifier: ResNets trained on a classification task, regularised towards a target (Eq 7-10).

``Regulariser`` points at a target *configuration*, never at a computed target, so an experiment is entered in
one go; TrainedClassifier works through ``Training`` (task x architecture x schedule x regulariser x seed, as
DataJoint Elements' ProcessingTask does) once the regulariser's target is computed. It trains with the
three-part make and a checkpoint per epoch under the project's home, so a stopped or crashed worker resumes
where it was; make_fetch hands DataJoint the resolved parameters and the target's stored checksum, not its arrays.
"""

from __future__ import annotations

import shutil

import datajoint as dj
import numpy as np

from neural_reg.database import check_packet_size
from neural_reg.logs import progress_enabled
from neural_reg.resilience import KeepComputedResult
from neural_reg.settings import load_settings
from pipeline import checkpoints
from pipeline.classifier import config as train_config
from pipeline.classifier import inference, resnet, tasks
from pipeline.classifier import train as classifier_train
from pipeline.errors import ConfigError

from . import codecs  # noqa: F401
from . import recording, target
from .paramset import ParamSet

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
    contents = [(name, n_classes, description) for name, (n_classes, description) in tasks.TASKS.items()]


@schema
class Architecture(dj.Lookup):
    definition = """
    arch : varchar(32)              # a name pipeline.classifier.resnet.build_classifier knows
    ---
    description : varchar(255)
    """
    contents = list(resnet.ARCHITECTURES.items())


@schema
class TrainConfig(ParamSet, dj.Manual):
    definition = """
    train_hash : char(32)
    ---
    train_name : varchar(64)
    params : <blob>                 # resolved: pipeline.classifier.config.resolve_train_config
    unique index (train_name)
    """
    hash_attr, name_attr = "train_hash", "train_name"
    resolve = staticmethod(train_config.resolve_train_config)


def resolve_regulariser_config(params: dict) -> dict:
    """{'alpha', 'target_hash' (None for the None control), other regulariser keys} -> the complete configuration.

    alpha = 0 is the None control whatever else is given: {'alpha': 0.0, 'target_hash': None}.
    """
    params = dict(params)
    target_hash = params.pop("target_hash", None)
    if "alpha" not in params:
        raise ConfigError(f"regulariser {params}: needs 'alpha' (0 for the None control)")
    resolved = train_config.resolve_regulariser(params)
    if resolved is None:
        if target_hash is not None:
            raise ConfigError("regulariser: alpha = 0 with a target regularises nothing. Fix: give alpha > 0, or "
                              "no target for the None control")
        return {"alpha": 0.0, "target_hash": None}
    if target_hash is None:
        raise ConfigError(f"regulariser: alpha = {resolved['alpha']} needs a target. Fix: give target_hash")
    return {**resolved, "target_hash": str(target_hash)}


@schema
class Regulariser(ParamSet, dj.Manual):
    definition = """
    # the similarity loss: alpha (Eq 7), the layers (Eq 9-10), the stimulus batch; no target = the None control
    regulariser_hash : char(32)
    ---
    regulariser_name : varchar(64)
    alpha : float32
    -> [nullable] target.TargetConfig
    params : <blob>                 # resolved: alpha, target_hash and pipeline.classifier.config.resolve_regulariser
    unique index (regulariser_name)
    """
    hash_attr, name_attr = "regulariser_hash", "regulariser_name"
    resolve = staticmethod(resolve_regulariser_config)

    @classmethod
    def insert_regulariser(cls, name: str, alpha: float, target_hash: str | None = None, **params) -> dict:
        resolved = resolve_regulariser_config({"alpha": alpha, "target_hash": target_hash, **params})
        if target_hash is not None and not target.TargetConfig & {"target_hash": target_hash}:
            raise ConfigError(f"regulariser {name!r}: target configuration {target_hash} does not exist. Fix: "
                              "enter the target configuration first")
        return cls.insert_params(name, resolved, alpha=resolved["alpha"], target_hash=resolved["target_hash"])


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
    return checkpoints.key_folder(load_settings().checkpoint_dir, TrainedClassifier.database, key)


def regularisation_target(target_hash: str) -> dict:
    """{'matrix', 'stimuli', 'image_ids'} of a computed target, restricted to the images not held out."""
    image_set, image_ids, heldout, S = (target.Target & {"target_hash": target_hash}).fetch1(
        "image_set", "image_ids", "heldout", "similarity")
    keep = ~heldout.astype(bool)
    _, stimuli = recording.load_images(image_set, image_ids[keep])
    return {"matrix": np.ascontiguousarray(S[np.ix_(keep, keep)]), "stimuli": stimuli,
            "image_ids": image_ids[keep]}


@schema
class TrainedClassifier(KeepComputedResult, dj.Computed):
    definition = """
    -> Training
    ---
    state_dict : <npfile@bulk>      # dict of numpy arrays (.npz in the store)
    test_accuracy : float32         # clean accuracy on the whole test set
    curves : <blob>                 # per epoch: task_loss, similarity_loss, train_accuracy, test_accuracy, lr
    epochs : int32
    pairs_per_step : int32          # stimulus pairs in each regulariser step (0: unregularised)
    wall_time : float32             # s of training, resumed parts summed
    device : varchar(32)
    torch_threads : int32           # torch's intra-op threads: CPU weights are bit-reproducible at a fixed count
    versions : varchar(255)         # torch, numpy and code version the run used
    similarity_means = null : <blob>  # {layer: (C,)} the regulariser's running channel means fbar (Eq 9); null: none
    """

    class LayerWeight(dj.Part):
        definition = """
        # Table 1: the final softmax weight gamma of each regularised layer
        -> master
        layer : varchar(16)
        ---
        gamma : float32
        """

    @property
    def key_source(self):  # what to train, once the regulariser's target (if any) is computed
        ready = (Regulariser & "target_hash IS NULL").proj(), (Regulariser * target.Target.proj()).proj()
        return Training & list(ready)

    def make_fetch(self, key):
        regulariser = Regulariser.params_of(key)
        target_hash = regulariser.pop("target_hash")
        checksum = None if target_hash is None else (target.Target & {"target_hash": target_hash}).fetch1("checksum")
        return TrainConfig.params_of(key), regulariser, target_hash, checksum

    def make_compute(self, key, train, regulariser, target_hash, _checksum):
        task = tasks.load_task(key["task"], root=load_settings().data_dir)
        result = classifier_train.train_classifier(
            task, key["arch"], train, regulariser=regulariser if target_hash else None,
            target=regularisation_target(target_hash) if target_hash else None, seed=key["classifier_seed"],
            checkpoint_dir=checkpoint_dir(key), progress=progress_enabled())
        return (result,)

    def make_insert(self, key, result):
        state = {k: v.numpy() for k, v in result.state_dict.items()}
        check_packet_size(self.connection, sum(v.nbytes for v in state.values()), f"classifier {key}: its weights")
        self.insert1(dict(key, state_dict=state,
                          test_accuracy=float(result.test_accuracy), curves=result.curves, epochs=result.epochs,
                          pairs_per_step=int(result.pairs_per_step), wall_time=float(result.wall_time),
                          device=str(result.device), torch_threads=int(result.torch_threads),
                          versions=str(result.versions)[:255], similarity_means=result.similarity_means))
        self.LayerWeight.insert(dict(key, layer=layer, gamma=float(g)) for layer, g in result.gamma.items())
        shutil.rmtree(checkpoint_dir(key), ignore_errors=True)  # the row holds the weights now


def load_trained(key: dict):
    """The trained torch classifier of one TrainedClassifier row, in eval mode on the CPU."""
    import torch

    state, arch = (TrainedClassifier & key).fetch1("state_dict", "arch")
    n_classes = (TaskDataset & key).fetch1("n_classes")
    return inference.load_classifier(arch, int(n_classes),
                                     {k: torch.from_numpy(np.array(v)) for k, v in state.items()})
