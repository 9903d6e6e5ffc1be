"""predictor: models that predict a scan's responses from the image and behaviour, and their similarity (Eq 6).

TrainedPredictor trains with DataJoint's three-part make (fetch, compute, insert), so no transaction stays open
while a model trains: make_fetch returns the resolved parameters and the scan's stored checksum (a short string
DataJoint compares again before inserting), make_compute reads the arrays itself. The numbers come from
pipeline.predictor. Training writes a checkpoint per epoch under the project's home (``checkpoint_dir``), so a
stopped or crashed worker resumes where it was; the folder is removed once the row is inserted.
"""

from __future__ import annotations

import shutil

import datajoint as dj
import numpy as np
import torch

from neural_reg.database import check_packet_size
from neural_reg.logs import progress_enabled
from neural_reg.resilience import KeepComputedResult
from neural_reg.settings import load_settings
from pipeline import checkpoints
from pipeline.oracle import similarity as sim
from pipeline.predictor import config as predictor_config
from pipeline.predictor import train as predictor_train
from pipeline.version import runtime_versions

from . import codecs  # noqa: F401
from . import oracle, recording
from .paramset import ParamSet

schema = dj.Schema()
POPULATE_ORDER = ("TrainedPredictor", "ModelSimilarity")  # for `neural-reg populate`


@schema
class PredictorConfig(ParamSet, dj.Manual):
    definition = """
    # a predictive model and its training, keyed by the hash of its parameters
    predictor_hash : char(32)
    ---
    predictor_name : varchar(64)
    params : <blob>                 # resolved: pipeline.predictor.config.resolve_config
    unique index (predictor_name)
    """
    hash_attr, name_attr = "predictor_hash", "predictor_name"
    resolve = staticmethod(predictor_config.resolve_config)


@schema
class Seed(dj.Lookup):
    definition = """
    predictor_seed : int32
    """
    contents = [(0,)]


def to_numpy_state(state_dict: dict) -> dict:
    return {name: value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
            for name, value in state_dict.items()}


def training_data(key: dict) -> dict:
    """The arrays train_predictor takes: each trial's image, responses, behaviour, pupil centre and tier."""
    trials = recording.load_trials(key)
    image_set = (recording.Scan & key).fetch1("image_set")
    image_ids, pixels = recording.load_images(image_set, trials["image_id"])
    rows = np.searchsorted(image_ids, trials["image_id"])
    return {"images": pixels[rows], "responses": recording.load_responses(key), "behavior": trials["behavior"],
            "pupil_center": trials["pupil_center"], "tiers": trials["tier"]}


def checkpoint_dir(key: dict):
    """Where a predictor's training keeps its per-epoch checkpoint: unique per key and per schema prefix."""
    return checkpoints.key_folder(load_settings().checkpoint_dir, TrainedPredictor.database, key)


@schema
class TrainedPredictor(KeepComputedResult, dj.Computed):
    definition = """
    -> recording.Scan
    -> PredictorConfig
    -> Seed
    ---
    state_dict : <npfile@bulk>      # dict of numpy arrays (torch state_dict on the CPU; .npz in the store)
    curves : <blob>                 # dict of per-epoch lists: train_loss, val_correlation, ...
    heldout_tier : varchar(16)      # the trials v is measured on
    mean_correlation : float32      # mean over neurons of v
    best_val_correlation : float32
    best_epoch : int32
    n_epochs : int32
    wall_time : float32             # s
    device : varchar(32)
    torch_threads : int32           # torch's intra-op threads of the run (CPU weights depend on it)
    versions : varchar(255)         # torch, numpy and code version the run used
    """

    class Unit(dj.Part):
        definition = """
        -> master
        -> recording.Scan.Unit
        ---
        correlation : float32          # v_a: correlation of predicted and measured held-out single trials
        """

    def make_fetch(self, key):
        return PredictorConfig.params_of(key), (recording.Scan & key).fetch1("checksum")

    def make_compute(self, key, params, _checksum):
        return (predictor_train.train_predictor(training_data(key), params, seed=key["predictor_seed"],
                                                progress=progress_enabled(), checkpoint_dir=checkpoint_dir(key)),)

    def make_insert(self, key, result):
        unit_ids = (recording.Scan.Unit & key).to_arrays("unit_id", order_by="unit_index")
        state = to_numpy_state(result.state_dict)
        check_packet_size(self.connection, sum(v.nbytes for v in state.values()), f"predictor {key}: its weights")
        self.insert1(dict(key, state_dict=state, curves=result.curves,
                          heldout_tier=result.heldout_tier, mean_correlation=float(result.mean_correlation),
                          best_val_correlation=float(result.best_val_correlation), best_epoch=result.best_epoch,
                          n_epochs=result.n_epochs, wall_time=float(result.wall_time), device=str(result.device),
                          torch_threads=torch.get_num_threads(), versions=runtime_versions()[:255]))
        self.Unit.insert(dict(key, unit_id=int(u), correlation=float(v))
                         for u, v in zip(unit_ids, result.correlation))
        shutil.rmtree(checkpoint_dir(key), ignore_errors=True)  # the row holds the weights now


def load_trained(key: dict):
    """The trained torch model of one TrainedPredictor row, in eval mode on the CPU."""
    import torch

    state = (TrainedPredictor & key).fetch1("state_dict")
    params = PredictorConfig.params_of(key)
    n_neurons = len(recording.Scan.Unit & key)
    image_set = (recording.Scan & key).fetch1("image_set")
    shape = tuple(int(v) for v in (recording.ImageSet & {"image_set": image_set}).fetch1("height", "width"))
    return predictor_train.load_model({k: torch.from_numpy(np.array(v)) for k, v in state.items()},
                                      params, n_neurons, shape)


@schema
class ModelSimilarity(dj.Computed):
    definition = """
    # Eq 6: similarity of the predicted responses (behaviour at its mean), scaled by w * v
    -> TrainedPredictor
    -> oracle.OracleStats
    ---
    image_ids : <ndarray>           # (n,) the non-oracle images, sorted
    similarity : <npfile@bulk>      # (n, n) float32
    """

    def make(self, key):
        trials = recording.load_trials(key)
        image_ids = np.unique(trials["image_id"][trials["tier"] != "oracle"])
        image_set = (recording.Scan & key).fetch1("image_set")
        _, pixels = recording.load_images(image_set, image_ids)
        predicted = predictor_train.predict(load_trained(key), pixels)
        v = (TrainedPredictor.Unit * recording.Scan.Unit & key).to_arrays("correlation", order_by="unit_index")
        S = sim.model_similarity(predicted, oracle.snr_weights(key), v)
        self.insert1(dict(key, image_ids=image_ids, similarity=S))
