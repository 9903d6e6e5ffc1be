"""target: the similarity matrices a classifier is regularised towards, and the control targets (Fig 4).

TargetConfig holds a resolved configuration (see pipeline.target.config for the kinds and their parameters) and
points at configurations only (the scan group; for neural-model targets the predictor configuration), so an
experiment is entered in one go. Target computes a configuration once its inputs are computed; a shuffle target
permutes its base's matrix, a deflated one removes its leading eigencomponents, both computed from the base's own
inputs, so they wait on no other row of this table. TargetDiagnostics measures how low-rank each target is and
which image statistic it follows (pipeline.target.diagnostics).
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
from pipeline.recording import truth as recording_truth
from pipeline.target import controls
from pipeline.target import diagnostics as target_diagnostics
from pipeline.target.config import KINDS, inputs_of, resolve_target_config, scan_group_of
from pipeline.target.heldout import heldout_mask

from . import codecs  # noqa: F401
from . import oracle, predictor, recording
from .paramset import ParamSet

schema = dj.Schema()
POPULATE_ORDER = ("Target", "TargetDiagnostics")  # for `neural-reg populate`

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
        if base["kind"] == "neural-truth":
            check_simulated(group, f"target {name!r}")
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


def check_simulated(scan_group: str, what: str) -> None:
    """A 'neural-truth' target needs simulated scans: NeuralRegError naming the first scan that is not."""
    members = (oracle.ScanGroup.Member * recording.Scan & {"scan_group": scan_group}).to_dicts()
    for m in members:
        if m["source_format"] != "simulator":
            raise NeuralRegError(f"{what}: scan {m['animal_id']}-{m['session']}-{m['scan_idx']} of scan group "
                                 f"{scan_group!r} is not simulated (source_format {m['source_format']!r}, source "
                                 f"{m['source']!r}), so it has no noise-free truth. Fix: use a neural-model target "
                                 "for recorded scans, or a group of simulated scans only")


def inputs_ready(config: dict) -> bool:
    """Whether every per-scan row a resolved configuration averages is computed (pixel etc.: always)."""
    config = inputs_of(config)
    table, restriction = _per_scan_table(config)
    if config["kind"] == "neural-truth":  # its Eq 6 weights: the SNR weights of every scan
        table, restriction = oracle.OracleStats, {}
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


def _members(scan_group: str) -> list[dict]:
    """The scan keys of a group (without the group's name), in key order."""
    return [{k: v for k, v in m.items() if k != "scan_group"}
            for m in (oracle.ScanGroup.Member & {"scan_group": scan_group}).to_dicts(order_by="KEY")]


def truth_scan(scan_key: dict, image_set: str, image_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One simulated scan's noise-free rates to the images (n_images, n_neurons), behaviour at the scan's mean,
    and their Eq 6 weights w_a max(v_a, 0) (n_neurons,), v_a the truth's correlation with the scan's held-out
    single trials (the tier a predictor's v is measured on)."""
    from pipeline.predictor.train import heldout_tier

    scan = (recording.Scan & scan_key).fetch1()
    label = "{animal_id}-{session}-{scan_idx}".format(**scan)
    if scan["source_format"] != "simulator":
        raise NeuralRegError(f"neural-truth target: scan {label} is not simulated (source_format "
                             f"{scan['source_format']!r}), so it has no noise-free truth. Fix: use a neural-model "
                             "target for recorded scans, or a group of simulated scans only")
    positions = (recording.Scan.Unit & scan_key).to_arrays("position", order_by="unit_index")
    positions = None if any(p is None for p in positions) else np.stack(positions)
    trials = recording.load_trials(scan_key)
    _, pixels = recording.load_images(image_set, image_ids)
    try:
        rates = recording_truth.simulator_truth(scan["source"], scan["n_neurons"], pixels,
                                                trials["behavior"].mean(0), positions)
        held = np.flatnonzero(trials["tier"] == heldout_tier(trials["tier"]))
        held_ids, held_pixels = recording.load_images(image_set, np.unique(trials["image_id"][held]))
        trial_rates = recording_truth.trial_truth(
            scan["source"], scan["n_neurons"], held_pixels[np.searchsorted(held_ids, trials["image_id"][held])],
            trials["behavior"][held], trials["pupil_center"][held], positions)
    except recording_truth.TruthError as err:
        raise NeuralRegError(f"neural-truth target, scan {label}: {err}. Fix: re-ingest the scan from the "
                             "simulator with its default model arguments, or use a neural-model target") from err
    v = recording_truth.truth_correlation(trial_rates, recording.load_responses(scan_key)[held])
    return rates, controls.truth_weights(oracle.snr_weights(scan_key), v)


def compute_target(config: dict) -> dict:
    """A resolved configuration's target: {image_set, image_ids, heldout, similarity, scans (lineage keys)}."""
    if config["kind"] == "shuffle":
        base = compute_target(config["base"])
        return {**base, "similarity": controls.shuffle_target(base["similarity"], config["seed"])}
    if config["kind"] == "deflated":
        base = compute_target(config["base"])
        return {**base, "similarity": controls.deflate_target(base["similarity"], config["k"])}
    kind, group = config["kind"], config["scan_group"]
    image_set, image_ids = group_image_ids(group)
    sources = recording.load_image_sources(image_set, image_ids) if config["heldout_by"] == "source" else None
    heldout = heldout_mask(len(image_ids), config["heldout_fraction"], config["heldout_seed"], sources)
    scans = []
    table, restriction = _per_scan_table(config)
    if table is not None:
        S = mean_over_group(table, group, restriction, image_ids)
        scans = [{k: v for k, v in m.items() if k != "scan_group"}
                 for m in (oracle.ScanGroup.Member & {"scan_group": group}).to_dicts()]
    elif kind == "neural-truth":
        total = sim.SimilarityAccumulator(len(image_ids))
        scans = _members(group)
        for member in scans:
            total.add(*truth_scan(member, image_set, image_ids), overwrite=True)
        S = total.mean()
    elif kind == "robust-net":
        from neural_reg.settings import load_settings
        from pipeline.target.robust import robust_net_similarity

        _, pixels = recording.load_images(image_set, image_ids)
        S, _accuracy = robust_net_similarity(pixels, config, data_dir=load_settings().data_dir)
    else:
        _, pixels = recording.load_images(image_set, image_ids)
        if kind == "pixel":
            S = sim.pixel_similarity(pixels)
        elif kind == "contrast-energy":
            S = controls.contrast_energy_similarity(pixels, config["grid"], config["sigma"])
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
    similarity : <npfile@bulk>      # (n, n) float32
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


def group_activity(config: dict, image_set: str, image_ids: np.ndarray) -> np.ndarray | None:
    """(n_images,) each image's overall population activity for a target, or None where it is not available.

    Per scan of the target's group, controls.population_activity (the mean over neurons of the scaled responses)
    of the responses the target is made of, z-scored over the images; then the mean over the scans. The
    responses: a neural-model target's predictions (its predictor, behaviour at its mean; weights
    w_a max(v_a, 0) as in Eq 6), a neural-truth target's noise-free rates (its Eq 6 weights), and for every
    other kind the group's measured responses per image (the mean of an image's single trials, weights w_a as
    in Eq 2). A shuffle or deflated target: its base's, in the true image order. None when a scan's oracle
    statistics (or, for neural-model, its trained predictor) are not computed.
    """
    from pipeline.predictor import train as predictor_train

    base = inputs_of(config)
    members = _members(scan_group_of(config))
    if not members:
        return None
    total = np.zeros(len(image_ids))
    pixels = None
    for member in members:
        if not oracle.OracleStats & member:
            return None
        if base["kind"] == "neural-model":
            key = dict(member, predictor_hash=base["predictor_hash"], predictor_seed=base["predictor_seed"])
            if not predictor.TrainedPredictor & key:
                return None
            if pixels is None:
                _, pixels = recording.load_images(image_set, image_ids)
            responses = predictor_train.predict(predictor.load_trained(key), pixels)
            v = (predictor.TrainedPredictor.Unit * recording.Scan.Unit & key).to_arrays("correlation",
                                                                                      order_by="unit_index")
            weights = oracle.snr_weights(member) * np.clip(v, 0.0, None)
        elif base["kind"] == "neural-truth":
            responses, weights = truth_scan(member, image_set, image_ids)
        else:
            ids, responses = oracle.single_trial_responses(member)
            responses, weights = responses[np.searchsorted(ids, image_ids)], oracle.snr_weights(member)
        total += controls.zscore(controls.population_activity(responses, weights))
    return total / len(members)


def reference_targets(config: dict, image_set: str, image_ids: np.ndarray) -> dict:
    """The reference targets TargetDiagnostics correlates a target with, on its images, each built when needed:
    pixel (Eq 2 on pixels), contrast (contrast-energy, the default grid and sigma of controls, whatever the
    target's own parameters, so r_contrast compares across targets), luminance (same grid), activity
    (controls.activity_similarity of group_activity; None where that is None)."""
    _, pixels = recording.load_images(image_set, image_ids)

    def activity():
        a = group_activity(config, image_set, image_ids)
        return None if a is None else controls.activity_similarity(a)

    return {"pixel": lambda: sim.pixel_similarity(pixels),
            "contrast": lambda: controls.contrast_energy_similarity(pixels),
            "luminance": lambda: controls.luminance_similarity(pixels),
            "activity": activity}


@schema
class TargetDiagnostics(dj.Computed):
    definition = """
    # how low-rank a target is and which image statistic it follows (pipeline.target.diagnostics)
    -> Target
    ---
    n_images : int32
    top1_share : float32            # lambda_1 / trace
    top5_share : float32            # (lambda_1 + ... + lambda_5) / trace
    spectrum_exponent = null : float32  # alpha of lambda_r ~ r^-alpha over ranks 2..max(4, n/10); null: undefined
    r_rank1 = null : float32        # r of the off-diagonal entries with the rank-1 part lambda_1 v_1 v_1^T
    r_pixel = null : float32        # ... with the pixel target of the same images
    r_contrast = null : float32     # ... with the contrast-energy target (default grid)
    r_luminance = null : float32    # ... with the local-luminance target (default grid)
    r_activity = null : float32     # ... with the population-activity target; null: no responses available
    eigenvalue_shares : <ndarray>   # (min(50, n),) float32 leading eigenvalues / trace, descending
    """

    def make(self, key):
        config = TargetConfig.params_of(key)
        image_set, image_ids, S = (Target & key).fetch1("image_set", "image_ids", "similarity")
        out = target_diagnostics.target_diagnostics(S, reference_targets(config, image_set, image_ids))
        self.insert1(dict(key, n_images=out["n_images"], eigenvalue_shares=out["eigenvalue_shares"],
                          **{name: _nullable(out[name]) for name in (
                              "top1_share", "top5_share", "spectrum_exponent", "r_rank1", "r_pixel", "r_contrast",
                              "r_luminance", "r_activity")}))


def _nullable(value):
    """A diagnostic as a column value: None for an undefined (None or NaN) one."""
    return None if value is None or not np.isfinite(value) else float(value)
