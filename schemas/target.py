"""target: the similarity matrices a classifier is regularised towards, and the control targets (Fig 4).

TargetConfig holds a resolved configuration (see pipeline.target.config for the kinds and their parameters) and
points at configurations only (the scan group; for neural-model targets the predictor configuration), so an
experiment is entered in one go. Target computes a configuration once its inputs are computed; a shuffle target
permutes its base's matrix, computed from the base's own inputs, so it waits on no other row of this table.
Every kind indexes the non-oracle images of its scan group, so targets compare entry by entry; a fixed fraction
of them (``heldout``) is kept out of regularisation for measuring brain-likeness.
"""

from __future__ import annotations

import datajoint as dj
import numpy as np

from neural_reg.database import check_packet_size
from pipeline.digests import array_digest
from pipeline.errors import NeuralRegError
from pipeline.oracle import similarity as sim
from pipeline.target import controls
from pipeline.target.config import KINDS, inputs_of, resolve_target_config, scan_group_of
from pipeline.target.heldout import heldout_mask

from . import codecs  # noqa: F401
from . import oracle, predictor, recording
from .paramset import ParamSet

schema = dj.Schema()
POPULATE_ORDER = ("Target",)  # for `neural-reg populate`

_KIND_ENUM = ", ".join(f"'{k}'" for k in KINDS)


@schema
class TargetConfig(ParamSet, dj.Manual):
    definition = f"""
    target_hash : char(32)
    ---
    target_name : varchar(64)
    kind : enum({_KIND_ENUM})
    -> oracle.ScanGroup
    params : <blob>                 # resolved: pipeline.target.config.resolve_target_config
    unique index (target_name)
    """
    hash_attr, name_attr = "target_hash", "target_name"
    resolve = staticmethod(resolve_target_config)

    @classmethod
    def insert_target(cls, name: str, kind: str, **params) -> dict:
        resolved = resolve_target_config({"kind": kind, **params})
        group = scan_group_of(resolved)
        if not oracle.ScanGroup & {"scan_group": group}:
            raise NeuralRegError(f"target {name!r}: scan group {group!r} does not exist. Fix: enter it first "
                                 "(neural-reg group NAME, or the experiment spec's scan_group).")
        base = inputs_of(resolved)
        if base["kind"] == "neural-model" and not predictor.PredictorConfig & {"predictor_hash": base["predictor_hash"]}:
            raise NeuralRegError(f"target {name!r}: predictor configuration {base['predictor_hash']} does not exist. "
                                 "Fix: enter the predictor configuration first.")
        return cls.insert_params(name, resolved, kind=kind, scan_group=group)


def group_image_ids(scan_group: str) -> tuple[str, np.ndarray]:
    """(image_set, sorted non-oracle image ids shown in every scan of the group)."""
    image_set = (oracle.ScanGroup & {"scan_group": scan_group}).fetch1("image_set")
    common = None
    for member in (oracle.ScanGroup.Member & {"scan_group": scan_group}).to_dicts():
        trials = recording.load_trials(member)
        ids = np.unique(trials["image_id"][trials["tier"] != "oracle"])
        common = ids if common is None else np.intersect1d(common, ids)
    if common is None or len(common) < 2:
        raise NeuralRegError(f"scan group {scan_group!r} has no common non-oracle images. Fix: group scans that "
                             "showed the same images")
    return image_set, common


def _per_scan_table(config: dict):
    """(the per-scan similarity table a neural kind averages, its restriction), or (None, None)."""
    if config["kind"] == "neural-model":
        return predictor.ModelSimilarity, {"predictor_hash": config["predictor_hash"],
                                           "predictor_seed": config["predictor_seed"]}
    if config["kind"] == "neural-data":
        return oracle.DataSimilarity, {}
    return None, None


def inputs_ready(config: dict) -> bool:
    """Whether every per-scan row a resolved configuration averages is computed (pixel etc.: always)."""
    config = inputs_of(config)
    table, restriction = _per_scan_table(config)
    if table is None:
        return True
    members = oracle.ScanGroup.Member & {"scan_group": config["scan_group"]}
    return len(members) > 0 and not (members - (table & restriction).proj())


def mean_over_group(table, scan_group: str, restriction: dict, image_ids: np.ndarray) -> np.ndarray:
    """Mean of a per-scan similarity table over a group's scans, on the given images."""
    total = sim.SimilarityAccumulator(len(image_ids))
    for member in (oracle.ScanGroup.Member & {"scan_group": scan_group}).to_dicts():
        query = table & {k: v for k, v in member.items() if k != "scan_group"} & restriction
        if len(query) != 1:
            raise NeuralRegError(f"{table.__name__} has {len(query)} rows for scan {member} and {restriction}; "
                                 f"need 1. Fix: populate {table.__name__} first (neural-reg populate).")
        ids, S = query.fetch1("image_ids", "similarity")
        pos = np.searchsorted(ids, image_ids)
        total.add_similarity(S[np.ix_(pos, pos)])
    return total.mean()


def compute_target(config: dict) -> dict:
    """A resolved configuration's target: {image_set, image_ids, heldout, similarity, scans (lineage keys)}."""
    if config["kind"] == "shuffle":
        base = compute_target(config["base"])
        return {**base, "similarity": controls.shuffle_target(base["similarity"], config["seed"])}
    kind, group = config["kind"], config["scan_group"]
    image_set, image_ids = group_image_ids(group)
    heldout = heldout_mask(len(image_ids), config["heldout_fraction"], config["heldout_seed"])
    scans = []
    table, restriction = _per_scan_table(config)
    if table is not None:
        S = mean_over_group(table, group, restriction, image_ids)
        scans = [{k: v for k, v in m.items() if k != "scan_group"}
                 for m in (oracle.ScanGroup.Member & {"scan_group": group}).to_dicts()]
    else:
        _, pixels = recording.load_images(image_set, image_ids)
        if kind == "pixel":
            S = sim.pixel_similarity(pixels)
        elif kind == "random":
            S = controls.random_target(len(image_ids), config["seed"])
        else:  # feature-model
            from pipeline.target.vgg import load_vgg19_features

            vgg = load_vgg19_features(config["weights_path"])
            S = controls.feature_similarity(pixels / 255.0, vgg.grayscale_activations, config["layer"])
    return {"image_set": image_set, "image_ids": image_ids, "heldout": heldout,
            "similarity": np.asarray(S, np.float32), "scans": scans}


def target_checksum(image_ids: np.ndarray, heldout: np.ndarray, similarity: np.ndarray) -> str:
    return array_digest(np.asarray(image_ids, np.int64), np.asarray(heldout, bool), np.asarray(similarity))


@schema
class Target(dj.Computed):
    definition = """
    -> TargetConfig
    ---
    -> recording.ImageSet
    image_ids : <ndarray>           # (n,) the images the target indexes, sorted
    heldout : <ndarray>             # (n,) bool: kept out of regularisation (for BrainLikeness)
    similarity : <ndarray>          # (n, n) float32
    checksum : char(40)             # SHA-1 of image_ids, heldout and similarity: what downstream makes verify
    """

    class Scan(dj.Part):
        definition = """
        # lineage: the scans a neural target averages
        -> master
        -> recording.Scan
        """

    @property
    def key_source(self):  # configurations whose inputs are computed
        ready = [{"target_hash": h} for h, p in zip(*TargetConfig.to_arrays("target_hash", "params"))
                 if inputs_ready(p)]
        return TargetConfig.proj() & ready if ready else TargetConfig.proj() & "FALSE"

    def make(self, key):
        out = compute_target(TargetConfig.params_of(key))
        check_packet_size(self.connection, out["similarity"].nbytes, f"target {key['target_hash']}: its matrix")
        self.insert1(dict(key, image_set=out["image_set"], image_ids=out["image_ids"], heldout=out["heldout"],
                          similarity=out["similarity"],
                          checksum=target_checksum(out["image_ids"], out["heldout"], out["similarity"])))
        self.Scan.insert(dict(key, **m) for m in out["scans"])
