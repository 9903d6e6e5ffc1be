"""`make readme`: the README's demo tables (conditions with CIs, verdicts), reading and figures, written from the
demo's tables, never by hand: every number in the generated blocks comes from them.

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
    if df.empty or value not in df.columns:
        return {}
    return df.dropna(subset=[value]).groupby("regulariser")[value].mean().to_dict()


def _leading_shares() -> dict:
    """{target kind: leading eigenvalue / trace}: TargetDiagnostics.top1_share where that table has rows,
    else computed here from the target matrices."""
    from schemas import target

    from . import queries

    diagnostics = queries.target_diagnostics()
    if not diagnostics.empty and "top1_share" in diagnostics.columns:
        return {k: float(v) for k, v in zip(diagnostics["kind"], diagnostics["top1_share"]) if np.isfinite(v)}
    share = {}
    for kind, S in zip(*(target.Target * target.TargetConfig).to_arrays("kind", "similarity")):
        S = np.asarray(S, np.float64)
        share.setdefault(kind, float(np.linalg.eigvalsh(S)[-1] / np.trace(S)))
    return share


def _cells(verdicts, claim: str) -> str:
    """'median L2 yes: +31% [+12%, +52%], ...' for one claim row (cells without a value left out)."""
    row = verdicts.loc[claim]
    return ", ".join(f"{metric} {cell}" for metric, cell in row.items() if cell not in ("n/a", "not trained"))


def verdict_reading(result: dict | None, subject: str = "Neural") -> str:
    """What the simulated Neural target does, with its CIs, and whether the positive control shows a gain:
    every number from the verdict table (pipeline.report.stats.verdict_table)."""
    from pipeline.report.conditions import is_adversarial

    if result is None:
        return "There are no robustness results yet, so no verdicts."
    verdicts, claims = result["verdicts"], result["claims"]
    mine = claims[claims["regulariser"] == subject]
    parts = []
    if len(mine):
        counts = mine["verdict"].value_counts()
        rows = [c for c in verdicts.index if c.startswith(f"{subject} ") and _cells(verdicts, c)]
        parts.append(f"The simulated {subject} target (effect [corrected 95 % CI], per metric): "
                     + "; ".join(f"{c.replace(' beats ', ' against ', 1)}: {_cells(verdicts, c)}" for c in rows)
                     + f". Of its {len(mine)} claim x metric cells, {int(counts.get('yes', 0))} are 'yes' (beats), "
                     f"{int(counts.get('no', 0))} 'no' (worse) and {int(counts.get('unresolved', 0))} unresolved.")
    else:
        parts.append(f"No {subject}-regularised classifier has robustness results, so no {subject} verdicts.")
    positive = claims[claims["regulariser"].map(is_adversarial)]
    if len(positive):
        label = next(c for c in verdicts.index if is_adversarial(c.split(" beats ")[0]))
        seen = sorted(set(positive.loc[positive["verdict"] == "yes", "metric"]))
        parts.append(f"The positive control, {label.replace(' beats ', ' against ', 1)}: {_cells(verdicts, label)}; "
                     + (f"so the evaluation can see a robustness gain ({', '.join(seen)})." if seen else
                        "so this evaluation does not resolve even an adversarially trained classifier's gain, "
                        "and an unresolved Neural cell says little."))
    else:
        parts.append("No adversarially trained classifier (positive control) is in this experiment, so whether "
                     "the evaluation could see a gain is not shown.")
    return " ".join(parts)


def run_text(report_dir: Path) -> str:
    """The demo's wall time, from the record of its last run from an empty database (neural_reg.demo.record_run)."""
    import json

    from .demo import RUN_RECORD

    path = Path(report_dir) / RUN_RECORD
    if not path.exists():
        return ("No timed run from an empty database is recorded here (reports/demo/run.json). Fix: "
                "`neural-reg db drop neuralreg`, then `make readme`.")
    run = json.loads(path.read_text())
    at = f"commit {run['git_commit'][:7]}" + (" + uncommitted changes" if run.get("git_dirty") else "") \
        if run.get("git_commit") else "an unknown commit"
    return (f"From an empty database the demo took {run['seconds'] / 60:.1f} minutes ({run['seconds']:.0f} s) on "
            f"this machine ({run['cpus']} CPUs, {run['torch_threads']} torch threads), at {at} on {run['date']}; "
            "a second `make demo` computes nothing and takes seconds.")


def calibration_text() -> str:
    """Fig 1D and the spectrum's exponent of the demo's scans beside the paper's and mouse V1's."""
    from pipeline.recording import calibration
    from pipeline.report import figures

    from . import queries

    scans = queries.oracle_comparison()
    if not scans:
        return ""
    ours = figures.calibration_table(scans).set_index("quantity").iloc[:, 0]
    return (f"The simulated scans beside mouse V1 (mean over scans, min-max): on the oracle images, Fig 1D's "
            f"r(single-trial, oracle similarity) is {ours[figures.CALIBRATION_TRIAL]} (paper "
            f"{calibration.PAPER_TRIAL_VS_ORACLE_R}) and r(model, oracle similarity) {ours[figures.CALIBRATION_MODEL]} "
            f"(paper {calibration.PAPER_MODEL_VS_DATA_R}); the population's power-law exponent is "
            f"{ours[figures.CALIBRATION_EXPONENT]} (Stringer et al. 2019: {calibration.STRINGER_2019_EXPONENT}). ")


def demo_blocks(report_dir: Path | None = None) -> dict[str, str]:
    """{'demo-run', 'demo-table', 'demo-verdicts', 'demo-reading'} from the tables of the activated schemas (and
    the demo's run record in ``report_dir``)."""
    from .report import demo_tables

    stamp = f"Written by `make readme` at {commit()} on {datetime.now(timezone.utc):%Y-%m-%d}, from the demo's tables."
    tables = demo_tables()
    if tables is None:
        raise NeuralRegError("no trained classifiers: run the demo first (make demo)")
    base = tables["frames"]["base"]
    seeds = int(base.groupby(["regulariser", "alpha"]).size().min())
    bl = tables["frames"]["brain"]
    bl = bl[bl["target_kind"] == "neural-model"] if not bl.empty else bl
    trained, evaluated = _mean_over_seeds(bl, "correlation"), _mean_over_seeds(bl, "correlation_eval")
    share = _leading_shares()
    present = [k for k in ("neural-model", "neural-data", "pixel", "contrast-energy") if k in share]
    names = {"neural-model": "the Neural (model) target", "neural-data": "single-trial data", "pixel": "pixels",
             "contrast-energy": "contrast energy"}
    target_text = ("The leading eigenvector of a target's similarity matrix carries "
                   + ", ".join(f"{100 * share[k]:.0f}%" + (" of the trace" if i == 0 else "") + f" for {names[k]}"
                               for i, k in enumerate(present)) + ". ") if present else ""
    order = [r for r in ("Neural", "None", "Shuffle", "Pixel", "Adversarial (PGD)") if r in trained]
    brain_text = ""
    if order:
        brain_text = (" Brain-likeness (r with the neural-model target on held-out images, mean over seeds), as "
                      "trained: " + ", ".join(f"{k} {trained[k]:.2f}" for k in order))
        if evaluated:
            brain_text += "; eval-mode: " + ", ".join(f"{k} {evaluated[k]:.2f}" for k in order if k in evaluated)
        brain_text += "."
    reading = ("Read it as what it is: a pipeline check on toy data, not the paper's result, "
               f"{seeds} seed{'s' if seeds != 1 else ''} per condition. {calibration_text()}{target_text}"
               f"{verdict_reading(tables['result'])}{brain_text} Whether "
               "neural data beat the controls on real scans and CIFAR is what the full-scale run below answers."
               f"\n\n{stamp}")
    return {"demo-run": run_text(report_dir if report_dir is not None else ROOT / "reports" / "demo"),
            "demo-table": f"```\n{tables['conditions']}\n```\n\n{stamp}",
            "demo-verdicts": f"```\n{tables['verdicts']}\n```\n\n{stamp}",
            "demo-reading": reading}


def write_readme(report_dir: Path = ROOT / "reports" / "demo", readme: Path = ROOT / "README.md") -> Path:
    text = readme.read_text()
    for name, content in demo_blocks(report_dir).items():
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
