"""`make readme`: the README's demo table, numbers and figures, written from the demo's tables, never by hand.

    make readme        # runs the demo (nothing is recomputed if it ran), then this module

Each generated part of README.md sits between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` markers and is
replaced whole; the figures are copied from the demo's report into docs/. Every block says which commit made it.
"""

from __future__ import annotations

import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from pipeline.errors import NeuralRegError
from pipeline.version import code_version

ROOT = Path(__file__).resolve().parent.parent
FIGURES = {"fig4_noise_*.png": "demo_fig4_noise.png", "fig1c_stability_*.png": "demo_fig1c_stability.png"}


def replace_block(text: str, name: str, content: str) -> str:
    """``text`` with the lines between the ``name`` markers replaced by ``content``; the markers stay."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    i, j = text.find(start), text.find(end)
    if i < 0 or j < i:
        raise NeuralRegError(f"README.md: the markers {start} ... {end} are missing. Fix: put them around the "
                             f"part that `make readme` writes")
    return text[:i + len(start)] + "\n" + content.rstrip("\n") + "\n" + text[j:]


def commit() -> str:
    """The commit the numbers come from (with '+ uncommitted changes' when the tree differs from it)."""
    info = code_version(ROOT)
    if not info["git_commit"]:
        return "an unknown commit (not a git checkout)"
    return f"commit {info['git_commit'][:7]}" + (" + uncommitted changes" if info["git_dirty"] else "")


def _mean_over_seeds(df, value: str) -> dict:
    return df.groupby("regulariser")[value].mean().to_dict() if not df.empty else {}


def demo_blocks() -> dict[str, str]:
    """{'demo-table': ..., 'demo-reading': ...} from the tables of the activated schemas."""
    from schemas import target

    from . import queries
    from .report import summary_table

    stamp = f"Written by `make readme` at {commit()} on {datetime.now(timezone.utc):%Y-%m-%d}, from the demo's tables."
    base = queries.classifiers()
    if base.empty:
        raise NeuralRegError("no trained classifiers: run the demo first (make demo)")
    base = queries.restrict(base, queries.experiments(base)[0])
    seeds = int(base.groupby(["regulariser", "alpha"]).size().min())
    scores = queries.scores(base)
    l2 = _mean_over_seeds(scores[scores["norm"] == "L2"], "median") if not scores.empty else {}
    bl = queries.brain_likeness(base)
    bl = _mean_over_seeds(bl[bl["target_kind"] == "neural-model"], "correlation") if not bl.empty else {}
    share = {}
    for kind, S in zip(*(target.Target * target.TargetConfig).to_arrays("kind", "similarity")):
        S = np.asarray(S, np.float64)
        share.setdefault(kind, float(np.linalg.eigvalsh(S)[-1] / np.trace(S)))
    table = f"```\n{summary_table()}\n```\n\n{stamp}"

    def pct(kind):
        return f"{100 * share[kind]:.0f}%" if kind in share else "n/a"

    def num(d, k, digits):
        return f"{d[k]:.{digits}f}" if k in d else "n/a"

    reading = (
        "Read it as what it is: a pipeline check on toy data, not the paper's result. The predictive model's "
        "similarity of the simulated population is dominated by one factor (its leading eigenvector carries "
        f"{pct('neural-model')} of the target's trace, against {pct('neural-data')} for single-trial data and "
        f"{pct('pixel')} for pixels). Median minimal L2 perturbation, mean over {seeds} seeds: "
        + ", ".join(f"{k} {num(l2, k, 2)}" for k in ("None", "Shuffle", "Pixel", "Neural")) +
        ". Brain-likeness (r with the neural-model target on held-out images): "
        + ", ".join(f"{k} {num(bl, k, 2)}" for k in ("Neural", "None", "Shuffle", "Pixel")) +
        f". With {seeds} seeds per condition these comparisons are unresolved; whether neural data beat the "
        "controls on real scans and CIFAR is what the full-scale run below answers.\n\n" + stamp)
    return {"demo-table": table, "demo-reading": reading}


def write_readme(report_dir: Path = ROOT / "reports" / "demo", readme: Path = ROOT / "README.md") -> Path:
    text = readme.read_text()
    for name, content in demo_blocks().items():
        text = replace_block(text, name, content)
    for pattern, target_name in FIGURES.items():
        found = sorted(Path(report_dir).glob(pattern))
        if not found:
            raise NeuralRegError(f"{report_dir}: no {pattern}. Fix: run the demo (make demo) first")
        shutil.copyfile(found[0], ROOT / "docs" / target_name)
    readme.write_text(text)
    return readme


def main() -> int:
    import schemas

    schemas.activate()
    try:
        print(f"wrote {write_readme()}")
    except NeuralRegError as err:
        print(f"neural-reg readme: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
