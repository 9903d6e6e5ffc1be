"""`make readme` replaces exactly the marked blocks of README.md; README.md has them."""

from pathlib import Path

import pytest

from neural_reg.readme import replace_block
from pipeline.errors import NeuralRegError


def test_replace_block_keeps_the_markers_and_everything_around_them():
    text = "a\n<!-- t:start -->\nold\nlines\n<!-- t:end -->\nb\n"
    assert replace_block(text, "t", "new") == "a\n<!-- t:start -->\nnew\n<!-- t:end -->\nb\n"
    with pytest.raises(NeuralRegError, match="markers"):
        replace_block(text, "other", "x")


def test_the_readme_has_the_blocks_make_readme_writes():
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for name in ("demo-run", "demo-table", "demo-verdicts", "demo-reading"):
        assert replace_block(text, name, "x").count("<!-- ") == text.count("<!-- ")


def _result(gain_neural, gain_adversarial=None, n_seeds=3, n=80):
    """neural_reg.report.robustness_statistics of synthetic per-sample distances (no database)."""
    import numpy as np
    import pandas as pd

    from neural_reg.report import robustness_statistics

    rng = np.random.default_rng(0)
    difficulty = rng.lognormal(0, 0.5, n)
    gains = {"None": 0.0, "Pixel": 0.0, "Neural": gain_neural}
    if gain_adversarial is not None:
        gains["Adversarial (PGD)"] = gain_adversarial
    rows = [dict(regulariser=r, alpha=10.0 if r in ("Pixel", "Neural") else 0.0, seed=s, norm="L2",
                 sample_idx=np.arange(n), distances=difficulty * np.exp(g + rng.normal(0, 0.03))
                 * rng.lognormal(0, 0.2, n)) for r, g in gains.items() for s in range(n_seeds)]
    return robustness_statistics({"samples": pd.DataFrame(rows)})


def test_the_reading_states_what_neural_does_with_its_ci_from_the_tables():
    from neural_reg.readme import verdict_reading

    worse = _result(-0.5, gain_adversarial=0.9)
    text = verdict_reading(worse)
    cell = worse["verdicts"].loc["Neural beats None", "median L2"]
    assert cell.startswith("no: -") and f"Neural against None: median L2 {cell}" in text
    assert "Of its 2 claim x metric cells, 0 are 'yes' (beats), 2 'no' (worse) and 0 unresolved." in text
    assert "the evaluation can see a robustness gain (median L2)" in text
    assert "n/a" not in text
    better = verdict_reading(_result(0.5))  # no positive control: said, not hidden
    assert "2 are 'yes'" in better and "No adversarially trained classifier" in better
    assert verdict_reading(None) == "There are no robustness results yet, so no verdicts."


def test_the_demo_wall_time_comes_from_the_run_record_and_a_missing_record_says_so(tmp_path):
    from neural_reg.demo import record_run
    from neural_reg.readme import run_text

    assert "No timed run" in run_text(tmp_path) and "db drop" in run_text(tmp_path)
    record_run(tmp_path / "run.json", 733.4)
    text = run_text(tmp_path)
    assert "12.2 minutes (733 s)" in text and "torch threads" in text


def test_the_calibration_table_sets_fig_1d_and_the_exponent_beside_mouse_v1():
    import numpy as np
    import pandas as pd

    from pipeline.report.figures import calibration_table

    rng = np.random.default_rng(1)

    def sym(a):
        return (a + a.T) / 2

    oracle = sym(rng.normal(size=(12, 12)))
    scans = [{"oracle": oracle, "trial": oracle + sym(rng.normal(scale=s, size=(12, 12))),
              "model": oracle, "exponent": e} for s, e in ((1.0, 1.0), (2.0, 1.2))]
    table = calibration_table(scans, pd.DataFrame({"mean oracle r": [0.3, 0.5]}))
    values = dict(zip(table["quantity"], table.iloc[:, 1]))
    assert values["Fig 1D: r(model, oracle similarity)"] == "1.00 (1.00-1.00)"
    assert values["power-law exponent of the population's spectrum"] == "1.10 (1.00-1.20)"
    assert values["mean oracle correlation of a neuron"] == "0.40 (0.30-0.50)"
    low, high = map(float, values["Fig 1D: r(single-trial, oracle similarity)"].split(" (")[1].rstrip(")").split("-"))
    assert 0 < low < high < 1  # the noisier scan's r is the lower one
    assert list(table.iloc[:, 2])[:3] == ["0.39 (paper, Fig 1D)", "0.73 (paper, Fig 1D)",
                                          "1.04 (mouse V1, Stringer et al. 2019)"]
    recorded = calibration_table([{k: v for k, v in scans[0].items() if k != "exponent"}])
    assert recorded.iloc[2, 1] == "-"
