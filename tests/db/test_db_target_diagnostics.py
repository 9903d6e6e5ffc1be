"""The new target kinds (contrast-energy, deflated, neural-truth) and TargetDiagnostics, on the tiny scan group.

The tiny experiment's scans and predictor, entered through an experiment specification (so 'deflated' names its
base by label, as 'shuffle' does) without classifiers, and only the tables the targets need populated.
"""

import numpy as np
import pytest

from neural_reg import workflow
from neural_reg.experiment import enter_experiment
from pipeline.oracle.similarity import offdiagonal_correlation

TABLES = ("OracleStats", "DataSimilarity", "TrainedPredictor", "ModelSimilarity", "Target", "TargetDiagnostics")


@pytest.fixture
def diagnosed(db, tiny, monkeypatch, tmp_path):
    monkeypatch.setenv("NEURALREG_CHECKPOINTS", str(tmp_path / "checkpoints"))
    spec = tiny.spec()
    for section in ("classifiers", "robustness"):
        spec.pop(section)
    spec["targets"] = {"Neural": {"kind": "neural-model"}, "Pixel": {"kind": "pixel"},
                       "Contrast": {"kind": "contrast-energy"}, "Truth": {"kind": "neural-truth"},
                       "Deflated": {"kind": "deflated", "base": "Neural", "k": 1},
                       "Deflated shuffle": {"kind": "shuffle", "base": "Deflated", "seed": 1}}
    summary = enter_experiment(spec)
    workflow.populate(TABLES, progress=False, suppress_errors=False)
    return summary["targets"]


def test_deflated_contrast_and_truth_targets_and_their_diagnostics(diagnosed):
    from schemas import oracle, target

    rows = {label: (target.TargetDiagnostics & {"target_hash": h}).fetch1() for label, h in diagnosed.items()}
    S = {label: (target.Target & {"target_hash": h}).fetch1("similarity") for label, h in diagnosed.items()}
    for label, row in rows.items():  # for the report of this change
        print(f"{label:17s} n={row['n_images']} top1={row['top1_share']:.3f} top5={row['top5_share']:.3f} "
              f"alpha={row['spectrum_exponent']:.2f} r_rank1={row['r_rank1']:.3f} r_pixel={row['r_pixel']:.3f} "
              f"r_contrast={row['r_contrast']:.3f} r_luminance={row['r_luminance']:.3f} "
              f"r_activity={row['r_activity'] if row['r_activity'] is None else round(row['r_activity'], 3)}")
    print("r(Truth, Neural) =", offdiagonal_correlation(S["Truth"], S["Neural"]))

    n = rows["Neural"]["n_images"]
    assert n == 240 and all(r["n_images"] == n for r in rows.values())
    assert rows["Neural"]["eigenvalue_shares"].shape == (50,)
    # deflation removes the leading component: less of the trace on top, a valid similarity still
    assert rows["Deflated"]["top1_share"] < rows["Neural"]["top1_share"]
    assert rows["Deflated"]["top1_share"] == pytest.approx(rows["Neural"]["eigenvalue_shares"][1] /
                                                           (1 - rows["Neural"]["top1_share"]), rel=0.5)
    np.testing.assert_array_equal(np.diag(S["Deflated"]), 1.0)
    assert S["Deflated"].min() >= -1 and S["Deflated"].max() <= 1
    # a shuffle of it has its spectrum (a permutation is a similarity transform) but not its image statistics
    assert rows["Deflated shuffle"]["top1_share"] == pytest.approx(rows["Deflated"]["top1_share"], rel=1e-4)
    assert abs(rows["Deflated shuffle"]["r_pixel"]) < 0.1
    # the contrast-energy target is its own contrast reference (the same default grid and sigma)
    assert rows["Contrast"]["r_contrast"] == pytest.approx(1.0, abs=1e-6)
    # the predictive model's target follows, if weakly (4 epochs of training here: r about 0.13), the noise-free
    # truth it approximates; and the truth is far less dominated by one component than the model's target is
    assert offdiagonal_correlation(S["Truth"], S["Neural"]) > 0.05
    assert rows["Truth"]["top1_share"] < 0.5 * rows["Neural"]["top1_share"]
    # population activity is known for every target of a group with oracle statistics
    assert all(r["r_activity"] is not None for r in rows.values())
    truth_key = {"target_hash": diagnosed["Truth"]}
    assert len(target.Target.Scan & truth_key) == len(oracle.ScanGroup.Member & {"scan_group": "tiny"}) == 2


def test_a_neural_truth_target_of_a_recorded_scan_is_refused_when_entered_naming_the_scan(db):
    from pipeline.errors import NeuralRegError
    from pipeline.recording.simulator import simulate_scans
    from schemas import oracle, recording, target

    scan = simulate_scans(n_scans=1, n_neurons=6, n_images=10, n_oracle_images=2, n_repeats=2, seed=77)[0]
    key = recording.ingest_scan(scan, {"animal_id": "recorded77", "session": 1, "scan_idx": 1}, "recorded77",
                                "filetree")  # as if recorded: no noise-free truth
    oracle.ScanGroup.create("recorded77", [key])
    try:
        with pytest.raises(NeuralRegError, match="scan recorded77-1-1 .*not simulated.*Fix: use a neural-model"):
            target.TargetConfig.insert_target("recorded77-truth", "neural-truth", scan_group="recorded77")
        with pytest.raises(NeuralRegError, match="recorded77-1-1"):  # deflating it does not get round the check
            target.TargetConfig.insert_target("recorded77-deflated", "deflated",
                                              base={"kind": "neural-truth", "scan_group": "recorded77"})
        assert not target.TargetConfig & {"target_name": "recorded77-truth"}
    finally:  # the session's other tests expect only the tiny experiment's scans (nothing left to compute)
        from neural_reg import stores

        stores.delete(oracle.ScanGroup & {"scan_group": "recorded77"})
        stores.delete(recording.Scan & key)
        stores.delete(recording.ImageSet & {"image_set": "recorded77"})
        stores.delete(recording.Animal & {"animal_id": "recorded77"})
