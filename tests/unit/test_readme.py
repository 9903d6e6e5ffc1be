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
    for name in ("demo-table", "demo-verdicts", "demo-reading"):
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
