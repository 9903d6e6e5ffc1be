"""oracle: per-neuron signal and noise from the repeated (oracle) images, and the similarity of the data.

Eq 1 (OracleStats), Eq 3 (OracleSimilarity), Eq 2 on single trials (DataSimilarity), Eq 4-5 (Stability) of
paper/equations.md; the numbers come from pipeline.oracle.
"""

from __future__ import annotations

import contextlib

import datajoint as dj
import numpy as np

from pipeline.oracle import statistics as oracle_math
from pipeline.errors import NeuralRegError
from pipeline.oracle import similarity as sim

from . import codecs  # noqa: F401
from . import recording

schema = dj.Schema()
POPULATE_ORDER = ("OracleStats", "OracleSimilarity", "DataSimilarity", "Stability")  # for `neural-reg populate`


def snr_weights(key: dict) -> np.ndarray:
    """(n_neurons,) signal-to-noise weights w of a scan's neurons, in response-matrix column order."""
    return (OracleStats.Unit * recording.Scan.Unit & key).to_arrays("snr_weight", order_by="unit_index")


@schema
class OracleStats(dj.Computed):
    definition = """
    # Eq 1: signal and noise of each neuron on the oracle images
    -> recording.Scan
    ---
    n_oracle_images : int32
    n_oracle_trials : int32
    n_degenerate : int32            # neurons with zero signal or noise variance: weight 0, flagged
    mean_oracle_correlation : float32
    mean_snr_weight : float32
    """

    class Unit(dj.Part):
        definition = """
        -> master
        -> recording.Scan.Unit
        ---
        signal_var : float32          # sigma^2 = Var_i(E_t r_ait)
        noise_var : float32           # eta^2 = E_i(Var_t r_ait)
        snr_weight : float32          # w = sigma / eta (0 where degenerate)
        oracle_correlation : float32  # leave-one-out oracle correlation
        degenerate : bool
        """

    def make(self, key):
        trials = recording.load_trials(key)
        oracle = trials["tier"] == "oracle"
        if not oracle.any():
            raise NeuralRegError(f"scan {key} has no oracle trials: Eq 1 needs repeated images. Fix: ingest the "
                                    "scan with its repeated test images (tier 'oracle').")
        stats = oracle_math.oracle_stats(recording.load_responses(key)[oracle], trials["image_id"][oracle])
        unit_ids = (recording.Scan.Unit & key).to_arrays("unit_id", order_by="unit_index")
        self.insert1(dict(key, n_oracle_images=len(np.unique(trials["image_id"][oracle])),
                          n_oracle_trials=int(oracle.sum()), n_degenerate=int(stats.degenerate.sum()),
                          mean_oracle_correlation=float(np.mean(stats.oracle_correlation)),
                          mean_snr_weight=float(np.mean(stats.snr_weight))))
        self.Unit.insert(
            dict(key, unit_id=int(u), signal_var=float(s), noise_var=float(n), snr_weight=float(w),
                 oracle_correlation=float(c), degenerate=bool(d))
            for u, s, n, w, c, d in zip(unit_ids, stats.signal_var, stats.noise_var, stats.snr_weight,
                                        stats.oracle_correlation, stats.degenerate))


@schema
class OracleSimilarity(dj.Computed):
    definition = """
    # Eq 3: similarity of the oracle images, averaged over pairs of repeats
    -> OracleStats
    ---
    image_ids : <ndarray>           # (n,) the oracle images, sorted
    similarity : <npfile@bulk>      # (n, n) float32
    mean_reliability : float32      # mean of the diagonal: repeat-to-repeat similarity of an image
    """

    def make(self, key):
        trials = recording.load_trials(key)
        oracle = trials["tier"] == "oracle"
        S, image_ids = sim.oracle_similarity(recording.load_responses(key)[oracle], trials["image_id"][oracle],
                                             snr_weights(key))
        self.insert1(dict(key, image_ids=image_ids, similarity=S, mean_reliability=float(np.mean(np.diag(S)))))


def single_trial_responses(key: dict) -> tuple[np.ndarray, np.ndarray]:
    """(image_ids (n,), responses (n, n_neurons)) of the scan's non-oracle images (pipeline's responses_per_image)."""
    trials = recording.load_trials(key)
    keep = trials["tier"] != "oracle"
    return sim.responses_per_image(trials["image_id"][keep], recording.load_responses(key)[keep])


@schema
class DataSimilarity(dj.Computed):
    definition = """
    # Eq 2 on single-trial responses to the non-oracle images, scaled by the SNR weights
    -> OracleStats
    ---
    image_ids : <ndarray>           # (n,) sorted
    similarity : <npfile@bulk>      # (n, n) float32
    """

    def make(self, key):
        image_ids, responses = single_trial_responses(key)
        S = sim.population_similarity(responses, snr_weights(key))
        self.insert1(dict(key, image_ids=image_ids, similarity=S))


@schema
class ScanGroup(dj.Manual):
    definition = """
    # scans whose similarities are averaged: the scans of a target, or of a stability analysis
    scan_group : varchar(32)
    ---
    -> recording.ImageSet
    description = '' : varchar(255)
    """

    class Member(dj.Part):
        definition = """
        -> master
        -> recording.Scan
        """

    @classmethod
    def create(cls, name: str, scan_keys: list[dict], description: str = "") -> dict:
        """Enter a group of scans that share one image set (idempotent for the same members)."""
        scan_keys = [(recording.Scan & k).fetch1("KEY") for k in scan_keys]
        sets = {(recording.Scan & k).fetch1("image_set") for k in scan_keys}
        if len(sets) != 1:
            raise NeuralRegError(f"scan group {name!r}: its scans show different image sets {sorted(sets)}; "
                                    "a group's similarities must index the same images.")
        key = {"scan_group": name}
        if cls() & key:
            members = {tuple(sorted(m.items())) for m in (cls.Member & key).to_dicts()}
            wanted = {tuple(sorted(dict(k, **key).items())) for k in scan_keys}
            if members != wanted:
                raise NeuralRegError(f"scan group {name!r} exists with other scans. Fix: choose another name.")
            return key
        # inside a caller's transaction (enter_experiment), join it: DataJoint has no nested transactions
        with contextlib.nullcontext() if cls.connection.in_transaction else cls.connection.transaction:
            cls.insert1(dict(key, image_set=sets.pop(), description=description))
            cls.Member.insert(dict(k, **key) for k in scan_keys)
        return key


@schema
class Stability(dj.Computed):
    definition = """
    # Eq 4-5 (Fig 1C): fluctuation of the oracle similarity across scans vs across repeats
    -> ScanGroup
    ---
    n_scans : int32
    scan_width : float32            # standard deviation of dS^scan
    repeat_width : float32          # standard deviation of dS^rep
    bin_edges : <ndarray>           # (n_bins + 1,) shared histogram bins
    scan_histogram : <ndarray>      # (n_bins,) density of dS^scan
    repeat_histogram : <ndarray>    # (n_bins,) density of dS^rep
    """

    @property
    def key_source(self):  # groups of 2+ scans whose members all have their oracle similarity
        complete = ScanGroup - (ScanGroup.Member - OracleSimilarity.proj())
        return complete & (ScanGroup.aggr(ScanGroup.Member, n="count(*)") & "n >= 2").proj()

    def make(self, key):
        members = (ScanGroup.Member & key).to_dicts()
        sims = [(OracleSimilarity & m).fetch1("image_ids", "similarity") for m in members]
        if any(not np.array_equal(ids, sims[0][0]) for ids, _ in sims):
            raise NeuralRegError(f"scan group {key}: its scans' oracle images differ; Eq 4 needs the same ones")
        scan_dS = oracle_math.scan_fluctuations(np.stack([S for _, S in sims]))
        repeat_dS = []
        for m in members:
            trials = recording.load_trials(m)
            oracle = trials["tier"] == "oracle"
            repeat_dS.append(oracle_math.repeat_fluctuations(recording.load_responses(m)[oracle],
                                                             trials["image_id"][oracle], snr_weights(m)))
        self.insert1(dict(key, n_scans=len(members),
                          **oracle_math.fluctuation_histograms(scan_dS, np.concatenate(repeat_dS))))
