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
    assert len(target.Target.Scan & neural) == len(recording.Scan & {"animal_id": "sim21-g2"})
    shuffle = target.Target & {"target_hash": populated["targets"]["Shuffle"]}
    S, S_shuffled = (target.Target & neural).fetch1("similarity"), shuffle.fetch1("similarity")
    assert np.allclose(np.sort(S.ravel()), np.sort(S_shuffled.ravel())) and not np.allclose(S, S_shuffled)
    assert len(target.Target.Scan & shuffle.proj()) == len(target.Target.Scan & neural)


def test_classifier_rows_trace_back_to_scans(populated):
    from schemas import classifier, recording, target

    neural_reg = {"regulariser_hash": populated["regulariser"]["Neural"]}
    lineage = classifier.TrainedClassifier * classifier.Regulariser * target.Target.Scan & neural_reg
    assert set(lineage.to_arrays("scan_idx").tolist()) == set(
        (recording.Scan & {"animal_id": "sim21-g2"}).to_arrays("scan_idx").tolist())
    for row in (classifier.TrainedClassifier * classifier.Regulariser).to_dicts():
        gammas = (classifier.TrainedClassifier.LayerWeight & row).to_arrays("gamma")
        if row["alpha"] > 0:
            assert np.isclose(gammas.sum(), 1, atol=1e-5) and row["pairs_per_step"] >= 16
        else:
            assert len(gammas) == 0 and row["pairs_per_step"] == 0


def test_robustness_scores_are_the_minimum_over_attacks(populated):
    from schemas import robustness

    assert len(robustness.RobustnessScore.Norm()) > 0
    for score in robustness.RobustnessScore.Norm.to_dicts():
        key = {k: score[k] for k in robustness.RobustnessScore.primary_key}
        runs = (robustness.Adversarial * robustness.AttackConfig * robustness.AttackSet.Member & key
                & {"norm": score["norm"]}).to_dicts()
        assert score["n_attacks"] == len(runs)
        for run in runs:
            order = np.argsort(run["sample_idx"])
            assert np.all(score["distances"] <= run["distances"][order] + 1e-7)
        assert np.isclose(score["median"], np.median(score["distances"]))
    for row in robustness.NoiseRobustness.to_dicts():
        assert row["accuracy"][0] >= row["accuracy"][-1] - 0.05


def test_status_reports_a_failed_key_and_retry_clears_it(populated, tmp_path, monkeypatch):
    from schemas import classifier

    # a configuration is checked at entry, so what fails in a worker is the world: here a missing CIFAR archive
    monkeypatch.setenv("NEURALREG_DATA", str(tmp_path))
    row = {**(classifier.Training & {"regulariser_hash": populated["regulariser"]["None"]}).keys()[0],
           "task": "cifar10-gray"}
    classifier.Training.insert1(row)
    try:
        result = workflow.populate(("TrainedClassifier",), reserve_jobs=True, progress=False)
        assert len(result["TrainedClassifier"][1]) == 1
        status = next(r for r in workflow.status(("TrainedClassifier",)))
        assert status["failed"] == 1 and "cifar-10-python.tar.gz" in status["last_error"]
        assert status["failed_key"]["task"] == "cifar10-gray"
        assert workflow.retry_failed(("TrainedClassifier",)) == 1
        status = next(r for r in workflow.status(("TrainedClassifier",)))
        assert status["failed"] == 0 and status["retrying"] == 1  # back to pending, still shown until it succeeds
    finally:
        (classifier.Training & row).delete(prompt=False)


def test_report_writes_figures_and_html(populated, tmp_path):
    from neural_reg.report import build_report, summary_table

    path = build_report(tmp_path / "report")
    html = path.read_text()
    assert html.count("data:image/png;base64") >= 3
    assert "Fig 4" in html and "Fig 1C" in html
    table = summary_table()
    for label in ("None", "Shuffle", "Pixel", "Neural"):
        assert label in table
    # the conditions with CIs, then the verdicts, the positive control told apart by its TrainConfig
    assert "[95 % CI]" in table and table.index("Neural beats None") > table.index("[95 % CI]")
    assert "Adversarial (PGD) beats None" in table and "Robustness with confidence intervals" in html


def _delete_experiment(name: str) -> None:
    """Remove what an experiment entered (its trainings, regularisers, targets, robustness configurations)."""
    from schemas import classifier, robustness, target

    like = f"'{name}-%'"
    attacks = robustness.AttackConfig & f"attack_name like {like}"
    members = robustness.AttackSet.Member & [{"attack_hash": h} for h in attacks.to_arrays("attack_hash")]
    (robustness.AttackSet & [{"attack_set_hash": h} for h in members.to_arrays("attack_set_hash")]).delete(
        prompt=False)
    (classifier.Regulariser & f"regulariser_name like {like}").delete(prompt=False)
    (target.TargetConfig & f"target_name like {like}").delete(prompt=False)
    attacks.delete(prompt=False)
    for table, attr in ((robustness.NoiseConfig, "noise_name"), (robustness.CorruptionConfig, "corruption_name")):
        (table & {attr: name}).delete(prompt=False)


def test_setup_paper_enters_the_whole_experiment_in_one_call(populated):
    from neural_reg.paper import setup_paper
    from pipeline.classifier.config import resolve_train_config
    from pipeline.robustness.attacks import preset_configs
    from schemas import classifier, predictor, robustness, target

    summary = setup_paper("tiny", seeds=3, alphas=(20.0, 40.0))
    try:
        kinds = {label: (target.TargetConfig & {"target_hash": h}).fetch1("kind")
                 for label, h in summary["targets"].items()}
        assert kinds == {"Neural": "neural-model", "Shuffle": "shuffle", "Pixel": "pixel",
                         "Neural (data)": "neural-data", "Deflated": "deflated", "Contrast": "contrast-energy",
                         "Robust net": "robust-net"}
        # the same resolved parameters are the same row: the Pixel control is the tiny experiment's own
        assert summary["targets"]["Pixel"] == populated["targets"]["Pixel"]
        assert len(robustness.AttackConfig & "attack_name like 'paper-tiny-%'") == len(preset_configs("paper"))
        assert len(robustness.AttackSet.Member & summary["attack_set"]) == len(preset_configs("paper"))
        train = classifier.TrainConfig.key_of("paper")
        assert classifier.TrainConfig.params_of(train) == resolve_train_config("paper")
        # None + 6 targets x 2 alphas, 3 seeds each, plus the adversarially trained control's 3 seeds: entered now,
        # trained once their targets are computed
        assert summary["trainings"] == (1 + 6 * 2) * 3 + 3
        assert len(classifier.Training & train) == (1 + 6 * 2) * 3
        assert len(classifier.Training & classifier.TrainConfig.key_of("paper-pgd")) == 3
        # Neural, its Shuffle and Deflated wait for the paper's predictor, the robust net for its training; the
        # Pixel and Contrast targets are the tiny experiment's own, computed already
        waiting = classifier.Training & train & (classifier.Regulariser & [
            {"target_hash": summary["targets"][label]} for label in ("Neural", "Shuffle", "Deflated", "Robust net")])
        ready = classifier.TrainedClassifier.key_source & train
        assert len(waiting) == 4 * 2 * 3 and len(ready & waiting.proj()) == 0
        assert len(ready) == 3 + 2 * 2 * 3  # None, and Pixel and Contrast x 2 alphas, 3 seeds
        assert not target.Target & {"target_hash": summary["targets"]["Neural"]}  # its predictor is not trained
        assert len(target.Target.key_source & {"target_hash": summary["targets"]["Neural"]}) == 0
        # entering it again changes nothing
        assert setup_paper("tiny", seeds=3, alphas=(20.0, 40.0)) == summary
    finally:
        _delete_experiment("paper-tiny")
        (classifier.TrainConfig & [{"train_name": "paper"}, {"train_name": "paper-pgd"}]).delete(prompt=False)
        (predictor.PredictorConfig & {"predictor_name": "paper"}).delete(prompt=False)
        for table, name in ((robustness.NoiseConfig, "noise_name"), (robustness.CorruptionConfig, "corruption_name"),
                            (robustness.AttackSet, "attack_set_name")):
            (table & {name: "paper"}).delete(prompt=False)
        (classifier.Seed & "classifier_seed > 1").delete(prompt=False)
    assert next(r for r in workflow.status(("RobustnessScore",)))["to_do"] == 0


def test_a_stored_hash_means_what_was_entered_whatever_the_presets_say_later(populated, monkeypatch):
    from pipeline.classifier import config as train_config
    from schemas import classifier

    key = classifier.TrainConfig.key_of("tiny-cpu")
    stored = classifier.TrainConfig.params_of(key)
    assert stored == train_config.resolve_train_config("cpu-test") and "preset" not in stored
    monkeypatch.setitem(train_config.TRAIN_PRESETS, "cpu-test", {**train_config.TRAIN_PRESETS["cpu-test"],
                                                                  "lr": 0.5})
    # what a worker runs for the existing hash: the stored, resolved parameters
    fetched = classifier.TrainedClassifier().make_fetch((classifier.Training & key).keys()[0])
    assert fetched[0] == stored and fetched[0]["lr"] != 0.5
    # the edited preset is another configuration, with another hash
    edited = train_config.resolve_train_config("cpu-test")
    assert edited["lr"] == 0.5
    from schemas.paramset import params_hash

    assert params_hash(edited) != key["train_hash"]


def test_a_bad_specification_fails_at_entry_and_writes_nothing(populated, row_counts, tiny):
    from neural_reg.experiment import enter_experiment
    from pipeline.errors import ConfigError

    tiny_spec = tiny.spec

    before = row_counts()
    for change, message in (
            (lambda s: s["classifiers"]["train"].update(epoch=3), "epoch"),
            (lambda s: s["robustness"]["noise"].update(stds=[-0.1]), "std"),
            (lambda s: s["targets"]["Shuffle"].update(base="Nope"), "Nope"),
            (lambda s: s.update(robustnes={}), "robustnes"),
            (lambda s: s["robustness"]["attacks"]["configs"]["tiny-L2-ddn"].update(norm="L3"), "L3")):
        spec = tiny_spec()
        spec["name"] = "bad"
        change(spec)
        with pytest.raises(ConfigError, match=message):
            enter_experiment(spec)
    assert row_counts() == before
    # an error of the database half-way through (a name already taken) rolls the whole entry back
    spec = tiny_spec()
    spec.update(name="half")
    spec["classifiers"]["train"] = {"name": "tiny-cpu", "preset": "cpu-test", "epochs": 3}  # name taken
    with pytest.raises(ConfigError, match="already used"):
        enter_experiment(spec)
    assert row_counts() == before


def test_an_attack_added_later_leaves_old_scores_as_they_were(populated, tiny):
    from schemas import robustness

    ATTACKS = tiny.attacks

    def scores():
        return {(r["classifier_seed"], r["regulariser_hash"], r["attack_set_hash"], r["norm"]):
                (r["n_attacks"], r["distances"]) for r in robustness.RobustnessScore.Norm.to_dicts()}

    before = scores()
    robustness.AttackConfig.insert_attack("tiny-Linf-fmn", {"attack": "fmn", "norm": "Linf",
                                                            "sweep": {"steps": [10]}, "n_samples": 8,
                                                            "batch_size": 8, "seed": 0})
    try:
        workflow.populate(("Adversarial", "RobustnessScore"), progress=False, suppress_errors=False)
        after = scores()
        assert after.keys() == before.keys()
        assert all(after[k][0] == before[k][0] and np.array_equal(after[k][1], before[k][1]) for k in before)
        wider = robustness.AttackSet.insert_attack_set("tiny+fmn", [*ATTACKS, "tiny-Linf-fmn"])
        workflow.populate(("RobustnessScore",), progress=False, suppress_errors=False)
        widened = {k: v for k, v in scores().items() if k[2] == wider["attack_set_hash"]}
        assert len(widened) == len(before)
        for (seed, reg, _, norm), (n_attacks, distances) in widened.items():
            old_n, old_distances = next(v for k, v in before.items() if k[:2] == (seed, reg) and k[3] == norm)
            assert n_attacks == old_n + (norm == "Linf")
            assert np.all(distances <= old_distances + 1e-7)
    finally:
        (robustness.AttackSet & {"attack_set_name": "tiny+fmn"}).delete(prompt=False)
        (robustness.AttackConfig & {"attack_name": "tiny-Linf-fmn"}).delete(prompt=False)


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


def test_readme_blocks_come_from_the_tables(populated):
    from neural_reg.readme import demo_blocks

    blocks = demo_blocks()
    for label in ("None", "Shuffle", "Pixel", "Neural"):
        assert label in blocks["demo-table"]
    assert "Written by `make readme` at " in blocks["demo-reading"] and "n/a" not in blocks["demo-reading"]
