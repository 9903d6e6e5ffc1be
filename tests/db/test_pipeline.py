"""The whole pipeline on a tiny simulated data set, against the real server: every table populates, every row
keeps its lineage back to the scans, a second populate computes nothing, and the numbers hold together."""

import numpy as np
import pytest

from neural_reg import workflow


def test_every_table_is_populated_and_nothing_is_left(populated):
    for row in workflow.status():
        assert row["done"] > 0, row
        assert row["to_do"] == 0 and row["failed"] == 0, row
    again = workflow.populate(progress=False)
    assert all(done == 0 and not errors for done, errors in again.values()), again


def test_oracle_and_predictor_numbers(populated):
    from schemas import oracle, predictor

    stats = oracle.OracleStats.to_dicts()
    assert all(0.05 < s["mean_oracle_correlation"] < 0.9 for s in stats)
    units = oracle.OracleStats.Unit.to_dicts()
    assert all(u["snr_weight"] >= 0 for u in units)
    assert all(u["snr_weight"] == 0 for u in units if u["degenerate"])
    stab = oracle.Stability.to_dicts()[0]
    assert stab["scan_width"] < stab["repeat_width"]
    for row in predictor.TrainedPredictor.to_dicts():
        assert row["heldout_tier"] == "oracle" and -1 < row["mean_correlation"] < 1
    S = predictor.ModelSimilarity.to_dicts()[0]["similarity"]
    np.testing.assert_allclose(S, S.T, atol=1e-6)


def test_targets_keep_lineage_to_their_scans(populated):
    from schemas import recording, target

    neural = {"target_hash": populated["targets"]["Neural"]}
    assert len(target.Target.Scan & neural) == len(recording.Scan & {"animal_id": "sim21"})
    shuffle = target.Target & {"target_hash": populated["targets"]["Shuffle"]}
    S, S_shuffled = (target.Target & neural).fetch1("similarity"), shuffle.fetch1("similarity")
    assert np.allclose(np.sort(S.ravel()), np.sort(S_shuffled.ravel())) and not np.allclose(S, S_shuffled)
    assert len(target.Target.Scan & shuffle.proj()) == len(target.Target.Scan & neural)


def test_classifier_rows_trace_back_to_scans(populated):
    from schemas import classifier, recording, target

    neural_reg = {"regulariser_hash": populated["regulariser"]["Neural"]}
    lineage = classifier.TrainedClassifier * classifier.Regulariser * target.Target.Scan & neural_reg
    assert set(lineage.to_arrays("scan_idx").tolist()) == set(
        (recording.Scan & {"animal_id": "sim21"}).to_arrays("scan_idx").tolist())
    for row in (classifier.TrainedClassifier * classifier.Regulariser).to_dicts():
        gammas = (classifier.TrainedClassifier.LayerWeight & row).to_arrays("gamma")
        if row["alpha"] > 0:
            assert np.isclose(gammas.sum(), 1, atol=1e-5) and row["pairs_per_step"] >= 16
        else:
            assert len(gammas) == 0 and row["pairs_per_step"] == 0


def test_robustness_scores_are_the_minimum_over_attacks(populated):
    from schemas import robustness

    for score in robustness.RobustnessScore.Norm.to_dicts():
        key = {k: score[k] for k in robustness.RobustnessScore.primary_key}
        runs = (robustness.Adversarial * robustness.AttackConfig & key & {"norm": score["norm"]}).to_dicts()
        assert score["n_attacks"] == len(runs)
        for run in runs:
            order = np.argsort(run["sample_idx"])
            assert np.all(score["distances"] <= run["distances"][order] + 1e-7)
        assert np.isclose(score["median"], np.median(score["distances"]))
    for row in robustness.NoiseRobustness.to_dicts():
        assert row["accuracy"][0] >= row["accuracy"][-1] - 0.05


def test_status_reports_a_failed_key_and_retry_clears_it(populated):
    from schemas import classifier, robustness

    bad = robustness.NoiseConfig.insert_params("broken", {"stds": [-1.0], "n_samples": 10, "seed": 0})
    result = workflow.populate(("NoiseRobustness",), reserve_jobs=True, progress=False)
    assert len(result["NoiseRobustness"][1]) == len(classifier.TrainedClassifier())
    row = next(r for r in workflow.status(("NoiseRobustness",)))
    assert row["failed"] == len(classifier.TrainedClassifier()) and "std" in row["last_error"].lower()
    assert workflow.retry_failed(("NoiseRobustness",)) == row["failed"]
    (robustness.NoiseConfig & bad).delete(prompt=False)
    assert next(r for r in workflow.status(("NoiseRobustness",)))["failed"] == 0


def test_report_writes_figures_and_html(populated, tmp_path):
    from neural_reg.report import build_report, summary_table

    path = build_report(tmp_path / "report")
    html = path.read_text()
    assert html.count("data:image/png;base64") >= 3
    assert "Fig 4" in html and "Fig 1C" in html
    table = summary_table()
    for label in ("None", "Shuffle", "Pixel", "Neural"):
        assert label in table


def test_setup_paper_enters_the_full_scale_configuration(populated):
    from neural_reg.paper import enter_training, setup_paper
    from pipeline.robustness.attacks import preset_configs
    from schemas import classifier, predictor, robustness, target

    summary = setup_paper("tiny", seeds=3, alphas=(20.0,))
    try:
        kinds = {label: (target.TargetConfig & {"target_hash": h}).fetch1("kind")
                 for label, h in summary["targets"].items()}
        assert kinds == {"Neural": "neural-model", "Shuffle": "shuffle", "Pixel": "pixel"}
        # the same parameters are the same row: the Pixel control is the tiny group's existing one
        assert (target.TargetConfig & {"target_hash": summary["targets"]["Pixel"]}).fetch1("target_name") == \
            "tiny-pixel"
        assert len(robustness.AttackConfig & "attack_name like 'paper-%'") == len(preset_configs("paper"))
        assert classifier.TrainConfig.params_of(summary["train"]) == {"preset": "paper"}
        # the neural target is not computed yet (the paper's predictor is not trained): no classifier is entered
        assert not target.Target & {"target_hash": summary["targets"]["Neural"]}
        with pytest.raises(Exception, match="not computed"):
            enter_training(summary)
    finally:
        (target.TargetConfig & "target_name like 'paper-%'").delete(prompt=False)
        (robustness.AttackConfig & "attack_name like 'paper-%'").delete(prompt=False)
        for table, name in ((robustness.NoiseConfig, "noise_name"), (robustness.CorruptionConfig, "corruption_name"),
                            (classifier.TrainConfig, "train_name"), (predictor.PredictorConfig, "predictor_name")):
            (table & {name: "paper"}).delete(prompt=False)
        (classifier.Seed & "classifier_seed > 1").delete(prompt=False)
    assert next(r for r in workflow.status(("RobustnessScore",)))["to_do"] == 0


def test_command_line_status_populate_and_worker(populated, db, monkeypatch, capsys):
    from neural_reg.cli import main

    monkeypatch.setenv("NEURALREG_PREFIX", db)
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "robustness.RobustnessScore" in out and "oracle.OracleStats" in out
    assert main(["populate", "OracleStats", "Target"]) == 0
    assert "OracleStats: 0 computed" in capsys.readouterr().out  # nothing computed twice
    assert main(["worker", "--once", "--max-calls", "1"]) == 0
    assert main(["populate", "NoSuchTable"]) == 2
    assert "unknown table" in capsys.readouterr().err
