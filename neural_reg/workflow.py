"""Orchestration: ingest recordings, populate the tables in dependency order, report where things stand.

The only part of ``pipeline/`` (with the command line) that imports ``schemas/``.
"""

from __future__ import annotations

from pipeline.errors import NeuralRegError

import re
from pathlib import Path

from pipeline.recording.scan_data import RecordingError

class WorkflowError(NeuralRegError):
    """A request the pipeline cannot act on (e.g. an unknown table name); the message says the fix."""


SENSORIUM_NAME = re.compile(r"static(\d+)-(\d+)-(\d+)")


def scan_key_from_folder(path: Path) -> dict | None:
    """Sensorium folders are named static{animal}-{session}-{scan}-...; return that key, or None."""
    match = SENSORIUM_NAME.search(Path(path).name)
    if not match:
        return None
    return {"animal_id": match.group(1), "session": int(match.group(2)), "scan_idx": int(match.group(3))}


def ingest_filetree(path, animal_id=None, session=None, scan_idx=None, image_set=None) -> dict:
    """Read a Sensorium file tree and ingest it as one scan, all or nothing. Returns the scan key."""
    from pipeline.recording.filetree import read_filetree
    from schemas import recording

    path = Path(path)
    key = scan_key_from_folder(path) or {}
    given = {"animal_id": animal_id, "session": session, "scan_idx": scan_idx}
    key.update({k: v for k, v in given.items() if v is not None})
    missing = [k for k in ("animal_id", "session", "scan_idx") if k not in key]
    if missing:
        raise RecordingError(f"{path}: cannot tell the scan's {', '.join(missing)} from the folder name (expected "
                             "static<animal>-<session>-<scan>-...). Fix: pass --animal, --session and --scan.")
    scan = read_filetree(path)
    return recording.ingest_scan(scan, key, image_set=image_set or path.name[:64], source_format="filetree",
                                 image_set_description=f"stimuli of {path.name}")


def ingest_simulated(n_scans=3, n_neurons=500, n_images=1000, n_oracle_images=50, n_repeats=10, seed=0,
                     animal_id=None, progress=True) -> list[dict]:
    """Simulate scans of one model animal and ingest each (a scan already present is an error)."""
    from pipeline.recording.simulator import simulate_scans
    from schemas import recording

    animal_id = animal_id or f"sim{seed}"
    image_set = f"sim{seed}-{n_images}+{n_oracle_images}"
    scans = simulate_scans(n_scans=n_scans, n_neurons=n_neurons, n_images=n_images,
                           n_oracle_images=n_oracle_images, n_repeats=n_repeats, seed=seed)
    keys = []
    for index, scan in enumerate(scans, start=1):
        keys.append(recording.ingest_scan(
            scan, {"animal_id": animal_id, "session": 1, "scan_idx": index}, image_set=image_set,
            source_format="simulator", image_provenance="crop of a photograph bundled with scikit-image/-learn",
            image_set_description=f"simulator seed {seed}: {n_images} images + {n_oracle_images} oracle images"))
    return keys


def pipeline_tables() -> list:
    """Every auto-populated table, in dependency order (data flows one way)."""
    import schemas

    tables = []
    for module in schemas.modules():
        for name in getattr(module, "POPULATE_ORDER", ()):
            tables.append(getattr(module, name))
    return tables


def _select(names) -> list:
    tables = pipeline_tables()
    if not names:
        return tables
    by_name = {t.__name__.lower(): t for t in tables}
    by_name.update({f"{t.__module__.split('.')[-1]}.{t.__name__}".lower(): t for t in tables})
    unknown = [n for n in names if n.lower() not in by_name]
    if unknown:
        raise WorkflowError(f"unknown table(s) {unknown}. Fix: choose from {[t.__name__ for t in tables]}")
    chosen = {by_name[n.lower()] for n in names}
    return [t for t in tables if t in chosen]


def populate(names=(), reserve_jobs=False, max_calls=None, progress=True, suppress_errors=None) -> dict:
    """Populate the chosen tables (all by default) in dependency order; return {table: (done now, errors)}.

    With reserve_jobs, workers coordinate through DataJoint's job tables: any number of them can run at once
    without computing a key twice, and a failed key is recorded (see `status`) instead of stopping the worker.
    """
    suppress = reserve_jobs if suppress_errors is None else suppress_errors
    summary = {}
    for table in _select(names):
        result = table.populate(reserve_jobs=reserve_jobs, max_calls=max_calls, display_progress=progress,
                                suppress_errors=suppress)
        summary[table.__name__] = (result["success_count"], list(result["error_list"]))
    return summary


def status(names=()) -> list[dict]:
    """Per table: rows done, keys to do, jobs reserved and failed, and the last error of a failed key."""
    rows = []
    for table in _select(names):
        remaining, _total = table.progress()
        row = {"table": f"{table.__module__.split('.')[-1]}.{table.__name__}", "done": len(table()),
               "to_do": remaining, "reserved": 0, "failed": 0, "last_error": None, "failed_key": None}
        try:
            jobs = table.jobs  # declares the job table on first access
        except Exception:  # e.g. an analyst's read-only account: no job table, so no jobs to report
            jobs = None
        if jobs is not None and jobs.is_declared:
            counts = jobs.progress()
            row["reserved"], row["failed"] = counts.get("reserved", 0), counts.get("error", 0)
            if row["failed"]:
                last = jobs.errors.to_dicts(order_by="completed_time DESC", limit=1)
                if last:
                    row["last_error"] = last[0].get("error_message")
                    row["failed_key"] = {k: last[0][k] for k in table.primary_key if k in last[0]}
        rows.append(row)
    return rows


def retry_failed(names=()) -> int:
    """Forget the failed jobs of the chosen tables so the next populate tries them again; return how many."""
    count = 0
    for table in _select(names):
        if table.jobs.is_declared:
            errors = table.jobs.errors
            count += len(errors)
            errors.delete_quick()
    return count
