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
    for name in ("demo-table", "demo-reading"):
        assert replace_block(text, name, "x").count("<!-- ") == text.count("<!-- ")
