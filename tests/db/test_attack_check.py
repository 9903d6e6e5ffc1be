"""`neural-reg check-attacks`: an independent ensemble attacks the stored scores again, and writes nothing."""

import numpy as np

from neural_reg.attack_check import check_scores, format_rows
from neural_reg.cli import main


def test_the_check_attacks_stored_minima_and_reports_per_classifier_and_norm(populated, row_counts):
    before = row_counts()
    rows = check_scores("tiny", limit=2, n_samples=6, steps=10, restarts=1, square_steps=20)
    assert row_counts() == before  # a reviewer's tool: reads only
    assert {r.norm for r in rows} == {"Linf", "L2"} and len({r.classifier for r in rows}) == 2
    assert len({r.classifier.split(" seed=")[0] for r in rows}) == 2  # one per condition first
    for r in rows:
        assert 0 <= r.beaten <= r.n_checked <= 6
        assert r.median_after <= r.median_reported and np.isfinite(r.seconds)
        # both ensembles ran; a sample beaten by either is beaten
        assert set(r.beaten_by) == {"project", "art"} and max(r.beaten_by.values()) <= r.beaten
        assert r.beaten <= sum(r.beaten_by.values())
    text = format_rows(rows, 0.005)
    assert "check-attacks: Linf beaten=" in text and "goal < 5%" in text and "art alone" in text
    art_only = check_scores("tiny", limit=1, n_samples=3, steps=5, restarts=1, ensembles=("art",))
    assert all(set(r.beaten_by) == {"art"} for r in art_only)


def test_the_command_line_names_an_unknown_attack_set(db, populated, capsys, monkeypatch):
    monkeypatch.setenv("NEURALREG_PREFIX", db)
    assert main(["check-attacks", "--attack-set", "no-such-set", "--classifiers", "1", "--samples", "2"]) == 2
    err = capsys.readouterr().err
    assert "no-such-set" in err and "tiny" in err
