"""target: the similarity matrices a classifier is regularised towards, and the control targets (Fig 4).

Kinds (TargetConfig.kind, with their params):
- neural-model   {"scan_group", "predictor_hash", "predictor_seed"}: mean of ModelSimilarity (Eq 6) over the group
- neural-data    {"scan_group"}: mean of DataSimilarity (Eq 2 on single trials) over the group
- shuffle        {"base": a target_hash, "seed"}: the base target with its stimulus order permuted
- pixel          {"scan_group"}: Eq 2 on the raw pixels of the same images
- feature-model  {"scan_group", "weights_path", "layer"}: Eq 2 on a layer of an ImageNet VGG19 (weights file given)
- random         {"scan_group", "seed"}: Eq 2 on random vectors
Every kind indexes the non-oracle images of its scan group, so targets compare entry by entry; a fixed fraction
of them (``heldout``) is kept out of regularisation for measuring brain-likeness.
"""

from __future__ import annotations

import datajoint as dj
import numpy as np

from pipeline.oracle import similarity as sim
from pipeline.target import controls

from . import codecs  # noqa: F401
from . import oracle, predictor, recording
from .paramset import ParamSet

schema = dj.Schema()
POPULATE_ORDER = ("Target",)  # for `neural-reg populate`

KINDS = ("neural-model", "neural-data", "shuffle", "pixel", "feature-model", "random")
HELDOUT_FRACTION = 0.1
HELDOUT_SEED = 20191208  # fixed: every target of an image set holds out the same images


@schema
class TargetConfig(ParamSet, dj.Manual):
    definition = """
    target_hash : char(32)
    ---
    target_name : varchar(64)
    kind : enum('neural-model', 'neural-data', 'shuffle', 'pixel', 'feature-model', 'random')
    params : <blob>
    unique index (target_name)
    """
    hash_attr, name_attr = "target_hash", "target_name"

    @classmethod
    def insert_target(cls, name: str, kind: str, **params) -> dict:
        if kind not in KINDS:
            raise dj.DataJointError(f"target kind {kind!r} is unknown. Fix: use one of {KINDS}")
        return cls.insert_params(name, {"kind": kind, **params}, kind=kind)


def heldout_mask(image_ids: np.ndarray, fraction: float = HELDOUT_FRACTION) -> np.ndarray:
    """(n,) bool: the images kept out of regularisation, chosen by a fixed seeded permutation of the ids."""
    order = np.random.default_rng(HELDOUT_SEED).permutation(len(image_ids))
    mask = np.zeros(len(image_ids), bool)
    mask[order[:int(round(fraction * len(image_ids)))]] = True
    return mask


def group_image_ids(scan_group: str) -> tuple[str, np.ndarray]:
    """(image_set, sorted non-oracle image ids shown in every scan of the group)."""
    image_set = (oracle.ScanGroup & {"scan_group": scan_group}).fetch1("image_set")
    common = None
    for member in (oracle.ScanGroup.Member & {"scan_group": scan_group}).to_dicts():
        trials = recording.load_trials(member)
        ids = np.unique(trials["image_id"][trials["tier"] != "oracle"])
        common = ids if common is None else np.intersect1d(common, ids)
    if common is None or len(common) < 2:
        raise dj.DataJointError(f"scan group {scan_group!r} has no common non-oracle images")
    return image_set, common


def mean_over_group(table, scan_group: str, restriction: dict, image_ids: np.ndarray):
    """Mean of a per-scan similarity table over a group, on the given images; returns (S, member keys)."""
    members = (oracle.ScanGroup.Member & {"scan_group": scan_group}).to_dicts()
    total = sim.SimilarityAccumulator(len(image_ids))
    for member in members:
        query = table & {k: v for k, v in member.items() if k != "scan_group"} & restriction
        if len(query) != 1:
            raise dj.DataJointError(f"{table.__name__} has {len(query)} rows for scan {member} and {restriction}; "
                                    f"need 1. Fix: populate {table.__name__} first (neural-reg populate).")
        ids, S = query.fetch1("image_ids", "similarity")
        pos = np.searchsorted(ids, image_ids)
        total.add_similarity(S[np.ix_(pos, pos)])
    return total.mean(), members


@schema
class Target(dj.Computed):
    definition = """
    -> TargetConfig
    ---
    -> recording.ImageSet
    image_ids : <ndarray>           # (n,) the images the target indexes, sorted
    heldout : <ndarray>             # (n,) bool: kept out of regularisation (for BrainLikeness)
    similarity : <ndarray>          # (n, n) float32
    """

    class Scan(dj.Part):
        definition = """
        # lineage: the scans a neural target averages
        -> master
        -> recording.Scan
        """

    @staticmethod
    def populate_passes():
        """Shuffle targets permute another target: populate the other kinds first."""
        return ((TargetConfig & "kind != 'shuffle'").proj(),), ()

    def make(self, key):
        config = (TargetConfig & key).fetch1()
        params, kind = config["params"], config["kind"]
        members = []
        if kind == "shuffle":
            base = Target & {"target_hash": params["base"]}
            if not base:
                raise dj.DataJointError(f"shuffle target {config['target_name']!r}: its base target is not "
                                        "computed yet. Fix: populate the base target first.")
            image_set, image_ids, heldout, S = base.fetch1("image_set", "image_ids", "heldout", "similarity")
            S = controls.shuffle_target(S, params["seed"])
            members = (Target.Scan & {"target_hash": params["base"]}).proj().to_dicts()
            members = [{k: v for k, v in m.items() if k != "target_hash"} for m in members]
        else:
            image_set, image_ids = group_image_ids(params["scan_group"])
            heldout = heldout_mask(image_ids)
            if kind == "neural-model":
                restriction = {"predictor_hash": params["predictor_hash"],
                               "predictor_seed": params.get("predictor_seed", 0)}
                S, members = mean_over_group(predictor.ModelSimilarity, params["scan_group"], restriction,
                                             image_ids)
            elif kind == "neural-data":
                S, members = mean_over_group(oracle.DataSimilarity, params["scan_group"], {}, image_ids)
            else:
                _, pixels = recording.load_images(image_set, image_ids)
                if kind == "pixel":
                    S = sim.pixel_similarity(pixels)
                elif kind == "random":
                    S = controls.random_target(len(image_ids), params["seed"])
                else:  # feature-model
                    from pipeline.target.vgg import load_vgg19_features

                    vgg = load_vgg19_features(params["weights_path"])
                    S = controls.feature_similarity(pixels / 255.0, vgg.grayscale_activations,
                                                    params.get("layer", "conv3_1"))
            members = [{k: v for k, v in m.items() if k != "scan_group"} for m in members]
        self.insert1(dict(key, image_set=image_set, image_ids=image_ids, heldout=heldout,
                          similarity=S.astype(np.float32)))
        self.Scan.insert(dict(key, **m) for m in members)
