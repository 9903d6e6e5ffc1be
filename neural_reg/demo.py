"""The embedded default: the whole pipeline on simulated scans and scikit-learn's digits, on a laptop CPU.

``neural_reg/experiments/demo.json`` is the experiment: simulated scans -> oracle -> predictors -> targets ->
classifiers (None, Neural and its controls, the adversarially trained positive control; 4 seeds each) ->
robustness. It is entered once, then every table is
populated in dependency order, then the printed tables (neural_reg.report.summary_table: the conditions with
95 % CIs, then the verdict table "Neural beats None / <each control>" and the positive control "Adversarial (PGD)
beats None", yes / no / unresolved with the effect and its corrected CI) and the figures. A second run computes
nothing twice.
"""

from __future__ import annotations

import time
from pathlib import Path

from .experiment import enter_experiment, load_spec

STAGES = (
    ("oracle statistics, predictors, neural similarity",
     ("OracleStats", "OracleSimilarity", "DataSimilarity", "Stability", "TrainedPredictor", "ModelSimilarity")),
    ("targets", ("Target", "TargetDiagnostics")),  # TargetDiagnostics where the schema has it
    ("classifiers", ("TrainedClassifier",)),
    ("robustness", ("NoiseRobustness", "CorruptionRobustness", "Adversarial", "RobustnessScore", "BrainLikeness")),
)


def run(report_dir: str | None = "reports/demo", spec: dict | None = None) -> dict:
    """Enter the demo experiment, populate everything, print the summary table, write the report."""
    from schemas import recording

    from . import workflow

    spec = spec or load_spec("demo")
    start = time.time()
    print("== experiment", spec["name"])
    from_empty = len(recording.Scan()) == 0  # no scan: nothing downstream either (foreign keys)
    summary = enter_experiment(spec)
    for scan in recording.Scan.to_dicts():
        oracle_trials = len(recording.Trial & scan & "tier = 'oracle'")
        print(f"   scan {scan['animal_id']}-{scan['session']}-{scan['scan_idx']}: {scan['n_neurons']} neurons, "
              f"{scan['n_trials']} trials ({oracle_trials} oracle), images '{scan['image_set']}'")
    print(f"   {len(summary['targets'])} targets, {len(summary['regularisers'])} regularisers, "
          f"{summary['trainings']} classifiers to train")
    from schemas import target

    for title, tables in STAGES:
        tables = tuple(t for t in tables if t != "TargetDiagnostics" or hasattr(target, t))
        print(f"== {title}")
        result = workflow.populate(tables, suppress_errors=False)  # bars as neural_reg.logs.progress_enabled() says
        for table, (done, errors) in result.items():
            if done or errors:
                print(f"   {table}: {done} computed" + (f", {len(errors)} failed" if errors else ""))
    from .report import summary_table

    print()
    print(summary_table())
    if report_dir:
        from .report import build_report

        path = build_report(report_dir)
        print(f"\nreport: {path}")
    seconds = time.time() - start
    print(f"demo finished in {seconds:.0f} s")
    if report_dir and from_empty:
        record_run(Path(report_dir) / RUN_RECORD, seconds)
    return summary


RUN_RECORD = "run.json"


def record_run(path: Path, seconds: float) -> None:
    """What README says of the demo's wall time: written by a run that started from an empty database (so it
    computed everything), with the commit and the machine; a later run that reuses the rows leaves it."""
    import json
    import os
    import platform
    from datetime import datetime, timezone

    import torch

    from pipeline.version import code_version

    info = code_version(Path(__file__).resolve().parent.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "seconds": round(seconds, 1), "git_commit": info["git_commit"], "git_dirty": info["git_dirty"],
        "date": f"{datetime.now(timezone.utc):%Y-%m-%d}", "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "machine": platform.machine()}, indent=1) + "\n")
