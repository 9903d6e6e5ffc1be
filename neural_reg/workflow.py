"""Orchestration: ingest recordings, populate the tables in dependency order, report where things stand.

The only part of ``pipeline/`` (with the command line) that imports ``schemas/``.

Workers (:func:`work`, ``neural-reg worker``; :func:`populate` with ``reserve_jobs``) coordinate through
DataJoint's job tables and survive faults without losing or stranding a key:

- **a stop signal** (SIGTERM from ``docker stop`` or Slurm, SIGINT): the key in progress goes back to pending
  (not recorded as an error) and the worker returns; ``neural-reg worker`` then exits 0. Checkpoints let a
  classifier resume where it was.
- **a killed worker or a dead machine**: every pass reclaims stale reservations (a dead pid on this host at
  once, a silent worker after ``stale_after`` s; see :mod:`neural_reg.jobs`), so another worker completes them.
- **a database outage**: the worker waits with back-off (one log line per attempt: what failed, retry in N s)
  and carries on when the server is back; an idle worker just waits. A make interrupted by a lost connection is
  retried under the same reservation; with :class:`neural_reg.resilience.KeepComputedResult` on the table a
  three-part make's computed result is kept and only the insert is retried.
- **a failed key**: recorded with its error (``neural-reg status``, ``neural-reg jobs list``); ``jobs retry`` or
  ``populate --retry-failed`` puts it back to pending with its last error kept, so status shows it as
  "retrying" until it succeeds or fails again.

DataJoint's own populate is used as it is for a plain populate; for a reserving worker the per-key step
(``_populate1``, DataJoint 2.3.5) runs under a reservation this module takes, watches and settles itself.
"""

from __future__ import annotations

from pipeline.errors import NeuralRegError

import contextlib
import logging
import re
import signal
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from . import jobs as joblib
from . import logs
from .resilience import Backoff, StopSignals, WorkerStopped, describe, forget, is_connection_error, reconnect

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


# Bumped whenever the simulator's output changes, so scans and images of an older simulator in a database are
# never taken for the current one's (the default animal and image-set names carry it).
SIMULATOR_GENERATION = 2


def simulated_animal_id(seed: int) -> str:
    """The default animal id of the simulator's model animal ``seed`` (of this simulator generation)."""
    return f"sim{seed}-g{SIMULATOR_GENERATION}"


def ingest_simulated(n_scans=3, n_neurons=500, n_images=1000, n_oracle_images=50, n_repeats=10, seed=0,
                     animal_id=None, progress=True) -> list[dict]:
    """Simulate scans of one model animal and ingest each (a scan already present is an error)."""
    from pipeline.recording.simulator import simulate_scans
    from schemas import recording

    animal_id = animal_id or simulated_animal_id(seed)
    image_set = f"sim{seed}-g{SIMULATOR_GENERATION}-{n_images}+{n_oracle_images}"
    scans = simulate_scans(n_scans=n_scans, n_neurons=n_neurons, n_images=n_images,
                           n_oracle_images=n_oracle_images, n_repeats=n_repeats, seed=seed)
    keys = []
    for index, scan in enumerate(scans, start=1):
        keys.append(recording.ingest_scan(
            scan, {"animal_id": animal_id, "session": 1, "scan_idx": index}, image_set=image_set,
            source_format="simulator", image_provenance="crop of a photograph bundled with an installed package",
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


def select_tables(names=(), tables=None) -> list:
    """The tables named (by class name or 'module.Class', any case), in dependency order; all if none named.

    ``tables`` replaces the pipeline's tables (a worker for other tables, e.g. in tests).
    """
    tables = list(tables) if tables is not None else pipeline_tables()
    if not names:
        return tables
    by_name = {t.__name__.lower(): t for t in tables}
    by_name.update({joblib.table_name(t).lower(): t for t in tables})
    unknown = [n for n in names if n.lower() not in by_name]
    if unknown:
        raise WorkflowError(f"unknown table(s) {unknown}. Fix: choose from {[t.__name__ for t in tables]}")
    chosen = {by_name[n.lower()] for n in names}
    return [t for t in tables if t in chosen]


_select = select_tables  # the name it had before


log = logging.getLogger("neural_reg.worker")


@dataclass
class WorkResult:
    """What a worker did: keys computed and failed per table, passes made, and why it stopped (if signalled)."""

    computed: dict = field(default_factory=dict)  # table name -> keys computed
    errors: dict = field(default_factory=dict)  # table name -> [(key, "Error: message")]
    reclaimed: int = 0  # stale reservations put back to pending
    passes: int = 0
    stopped: str | None = None  # 'SIGTERM' / 'SIGINT' when a signal stopped it
    released: list = field(default_factory=list)  # (table name, key, 'pending' | 'done' | ...) handed back

    def summary(self) -> dict:
        """{table: (computed, [(key, error)])}, the form populate returns."""
        names = list(dict.fromkeys([*self.computed, *self.errors]))
        return {n: (self.computed.get(n, 0), list(self.errors.get(n, []))) for n in names}


def _message(err: BaseException) -> str:
    """An error as DataJoint records it: 'Type: message'."""
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


class _Worker:
    """One worker's state: its connection, stop signals, heartbeat, back-off and the job tables it works on."""

    def __init__(self, connection, stop: StopSignals, heartbeat, *, stale_after: float, max_backoff: float,
                 raise_errors: bool):
        self.connection = connection
        self.stop = stop
        self.heartbeat = heartbeat
        self.stale_after = stale_after
        self.backoff = Backoff(first=min(1.0, max_backoff), cap=max_backoff)
        self.raise_errors = raise_errors
        self.result = WorkResult()
        self._jobs = {}

    # -- the database, patiently ---------------------------------------------------------------------------
    def wait_for_database(self, what: str, err: BaseException) -> None:
        """Log what failed, then retry connecting with back-off until the server answers."""
        started = time.monotonic()
        while True:
            delay = self.backoff.next()
            log.warning("%s: database unreachable (%s); retry in %g s", what, describe(err), delay)
            self.stop.sleep(delay)
            try:
                reconnect(self.connection)
            except Exception as again:  # noqa: BLE001
                if not is_connection_error(again):
                    raise
                err = again
                continue
            log.warning("database reachable again after %.0f s; continuing", time.monotonic() - started)
            self.backoff.reset()
            return

    def call(self, what: str, fn):
        """fn(), retried after the database comes back if the connection is lost."""
        while True:
            try:
                return fn()
            except Exception as err:  # noqa: BLE001
                if not is_connection_error(err):
                    raise
                self.wait_for_database(what, err)

    def jobs(self, table):
        if table not in self._jobs:
            self._jobs[table] = self.call(f"{joblib.table_name(table)}: opening its job table",
                                          lambda: joblib.job_table(table, declare=True))
        return self._jobs[table]

    # -- one pass over the tables --------------------------------------------------------------------------
    def one_pass(self, tables, max_calls=None) -> int:
        done = 0
        self.result.passes += 1
        for table in tables:
            self.stop.check()
            name = joblib.table_name(table)
            jobs = self.jobs(table)
            target = jobs.target
            self.call(f"{name}: refreshing its jobs", lambda: jobs.refresh(delay=-1))
            reclaimed = self.call(f"{name}: reclaiming stale reservations",
                                  lambda: joblib.reclaim(jobs, stale_after=self.stale_after, holding_none=True))
            self.result.reclaimed += len(reclaimed)
            pending = (jobs.pending & "scheduled_time <= CURRENT_TIMESTAMP(3)").restrict(
                target.key_source.proj(), semantic_check=False)
            keys = self.call(f"{name}: listing pending keys", lambda: pending.keys(
                order_by="priority ASC, scheduled_time ASC", limit=max_calls))
            for key in keys:
                self.stop.check()
                if self.run_key(target, jobs, key) == "computed":
                    done += 1
                    self.result.computed[name] = self.result.computed.get(name, 0) + 1
        return done

    def run_key(self, target, jobs, key: dict) -> str:
        """Reserve, make and settle one key: 'computed', 'failed', 'skipped' (taken or done) or 'lost'."""
        name = f"{joblib.table_name(target)} {logs.format_key(key)}"
        tried = []

        def reserve():  # a retry after a lost answer: the first UPDATE may have reserved it for us
            if tried and joblib.owned(jobs, key):
                return True
            tried.append(1)
            return joblib.reserve(jobs, key)

        if not self.call(f"{name}: reserving", reserve):
            return "skipped"
        try:
            self.heartbeat.hold(jobs, key)
            while True:
                started = time.time()
                try:
                    with self.stop.interruptible():
                        status = target._populate1(key, None, suppress_errors=True, return_exception_objects=True)
                    error = status[1] if isinstance(status, tuple) else None
                except WorkerStopped:
                    raise
                except Exception as err:  # noqa: BLE001 - e.g. a lost connection raised by DataJoint's own cleanup
                    status, error = None, err
                if error is None:
                    self.heartbeat.drop()  # before the row goes: a late beat must not take it for a lost key
                    self.call(f"{name}: recording it done", lambda: self._settle_done(jobs, key, time.time() - started))
                    if status is True:
                        logs.log_populated(log, joblib.table_name(target), key, time.time() - started)
                        return "computed"
                    return "skipped"
                if is_connection_error(error):
                    self.wait_for_database(f"{name}: make interrupted", error)
                    held = self.call(f"{name}: checking its reservation", lambda: joblib.owned(jobs, key))
                    if held:
                        continue  # the same key, under the same reservation (a kept result is inserted)
                    log.warning("%s: its reservation was taken over while the database was away; leaving it", name)
                    return "lost"
                self.heartbeat.drop()
                return self._settle_failed(name, jobs, key, error)
        except WorkerStopped as stopped:
            self.heartbeat.drop()
            self.result.stopped = stopped.signame
            outcome = self._release(name, jobs, key)
            self.result.released.append((joblib.table_name(target), dict(key), outcome))
            raise
        finally:
            self.heartbeat.drop()
            forget(target)

    def _settle_done(self, jobs, key, duration) -> None:
        joblib.complete(jobs, key, duration=duration)

    def _settle_failed(self, name, jobs, key, error) -> str:
        if self.call(f"{name}: checking its row", lambda: key in jobs.target):
            # computed meanwhile by a worker that took the key over (e.g. this one was suspended): not an error
            log.warning("%s: %s, but the key was computed by another worker meanwhile", name, describe(error))
            self.call(f"{name}: recording it done", lambda: joblib.complete(jobs, key))
            return "skipped"
        message = _message(error)
        stack = "".join(traceback.format_exception(error))
        log.error("%s: failed: %s", name, describe(error))

        def record():
            if joblib.owned(jobs, key):
                jobs.error(key, error_message=message, error_stack=stack)

        self.call(f"{name}: recording its error", record)
        self.result.errors.setdefault(joblib.table_name(jobs.target), []).append((dict(key), message))
        if self.raise_errors:
            raise error
        return "failed"

    def _release(self, name, jobs, key) -> str:
        """Hand the key back after a stop; a few quick attempts (a stopping container has seconds, not minutes)."""
        for attempt in range(4):
            try:
                if attempt:
                    time.sleep(0.5 * attempt)
                reconnect(self.connection)  # the signal may have cut a query in half: a clean session
                outcome = joblib.release(jobs, key)
                log.info("%s: handed back (%s)", name, outcome)
                return outcome
            except Exception as err:  # noqa: BLE001
                last = err
        log.warning("%s: could not hand the key back (%s); it is reclaimed once seen stale", name, describe(last))
        return "stranded"


def work(names=(), *, tables=None, once: bool = False, sleep: float = 60.0, max_calls: int | None = None,
         stale_after: float = joblib.DEFAULT_STALE_AFTER, heartbeat: float = joblib.DEFAULT_HEARTBEAT,
         max_backoff: float = 30.0, raise_errors: bool = False, connection=None) -> WorkResult:
    """Populate the chosen tables with job reservation until stopped (or for one pass, ``once``).

    Each pass goes through the tables in dependency order: refreshes the job table (new keys become pending),
    reclaims stale reservations, then reserves and computes the pending keys one at a time. When a pass computes
    nothing the worker sleeps ``sleep`` s. SIGTERM / SIGINT hand the key in progress back to pending and end the
    work (``result.stopped``); a lost database connection is waited out with back-off (at most ``max_backoff``
    s between attempts). ``tables`` replaces the pipeline's tables; ``names`` select among them.
    ``raise_errors`` re-raises a key's error after recording it (else the worker goes on with the next key).
    """
    if heartbeat <= 0 or stale_after < 2 * heartbeat:
        raise WorkflowError(f"stale_after={stale_after:g} s with heartbeat={heartbeat:g} s: a live worker would look "
                            "stale. Fix: give stale_after at least twice the heartbeat interval (defaults "
                            f"{joblib.DEFAULT_STALE_AFTER:g} s and {joblib.DEFAULT_HEARTBEAT:g} s)")
    chosen = select_tables(names, tables)
    if connection is None:
        if not chosen:
            return WorkResult()
        connection = chosen[0].connection
    with StopSignals() as stop, joblib.Heartbeat(connection, heartbeat) as beats:
        worker = _Worker(connection, stop, beats, stale_after=stale_after, max_backoff=max_backoff,
                         raise_errors=raise_errors)
        try:
            while True:
                try:
                    done = worker.one_pass(chosen, max_calls=max_calls)
                except Exception as err:  # noqa: BLE001
                    if not is_connection_error(err):
                        raise
                    worker.wait_for_database("worker", err)
                    continue
                if once:
                    break
                if not done:
                    stop.sleep(sleep)
        except WorkerStopped as stopped:
            worker.result.stopped = stopped.signame
            log.info("worker stopped by %s", stopped.signame)
        return worker.result


def populate(names=(), reserve_jobs=False, max_calls=None, progress=None, suppress_errors=None, tables=None,
             max_backoff: float = 30.0, stale_after: float = joblib.DEFAULT_STALE_AFTER,
             heartbeat: float = joblib.DEFAULT_HEARTBEAT) -> dict:
    """Populate the chosen tables (all by default) in dependency order; return {table: (done now, errors)}.

    With reserve_jobs, one pass of :func:`work`: any number of workers can run at once without computing a key
    twice, a failed key is recorded (see `status`) instead of stopping the pass (unless suppress_errors is
    False), and a stop signal hands the key in progress back and raises WorkerStopped.
    Without it, DataJoint's plain populate (errors raised unless suppress_errors); a lost connection is waited
    out and the table populated again, and job rows of keys it computed are removed.
    Each key computed or failed is logged, one line (:mod:`neural_reg.logs`); ``progress`` None: DataJoint's
    progress bar as :func:`neural_reg.logs.progress_enabled` says (on a terminal only).
    """
    if reserve_jobs:
        result = work(names, tables=tables, once=True, max_calls=max_calls, raise_errors=suppress_errors is False,
                      max_backoff=max_backoff, stale_after=stale_after, heartbeat=heartbeat)
        if result.stopped:
            raise WorkerStopped(getattr(signal, result.stopped, None))
        return {joblib.table_name(t).split(".")[-1]: result.summary().get(joblib.table_name(t), (0, []))
                for t in select_tables(names, tables)}
    suppress = bool(suppress_errors)
    progress = logs.progress_enabled() if progress is None else progress
    summary = {}
    for table in select_tables(names, tables):
        summary[table.__name__] = _populate_plain(table, max_calls, progress, suppress, max_backoff=max_backoff)
    return summary


@contextlib.contextmanager
def _logging_keys(table):
    """Inside the block, every key DataJoint's plain populate of ``table`` computes or fails is logged, one line
    with its duration (its per-key step, ``_populate1`` in DataJoint 2.3.5, wrapped on the class for the block)."""
    own = "_populate1" in vars(table)
    inner = vars(table)["_populate1"] if own else None
    step = getattr(table, "_populate1")
    name = joblib.table_name(table)

    def populate1(self, key, *args, **kwargs):
        started = time.time()
        try:
            status = step(self, key, *args, **kwargs)
        except Exception as err:
            logs.log_failed(log, name, key, time.time() - started, err)
            raise
        if status is True:
            logs.log_populated(log, name, key, time.time() - started)
        elif isinstance(status, tuple):
            logs.log_failed(log, name, key, time.time() - started, status[1])
        return status

    table._populate1 = populate1
    try:
        yield
    finally:
        if own:
            table._populate1 = inner
        else:
            del table._populate1


def _populate_plain(table, max_calls, progress, suppress, max_backoff: float = 30.0) -> tuple[int, list]:
    stop = StopSignals()  # not installed: a plain populate keeps Python's own signal behaviour
    worker = _Worker(table.connection, stop, None, stale_after=joblib.DEFAULT_STALE_AFTER, max_backoff=max_backoff,
                     raise_errors=not suppress)
    name = joblib.table_name(table)
    done, errors = 0, []
    try:
        while True:
            try:
                with _logging_keys(table):
                        result = table.populate(max_calls=max_calls, display_progress=progress,
                                            suppress_errors=suppress, return_exception_objects=True)
            except Exception as err:  # noqa: BLE001
                if not is_connection_error(err):
                    raise
                worker.wait_for_database(f"{name}: populate", err)  # then again: a kept result is only inserted
                continue
            done += result["success_count"]
            lost = [(k, e) for k, e in result["error_list"] if is_connection_error(e)]
            errors += [(k, _message(e)) for k, e in result["error_list"] if not is_connection_error(e)]
            if not lost:
                break
            worker.wait_for_database(f"{name}: populate ({len(lost)} key(s) interrupted)", lost[0][1])
    finally:
        forget(table)
    jobs = worker.call(f"{name}: tidying its job table", lambda: joblib.job_table(table))
    if jobs is not None:
        worker.call(f"{name}: tidying its job table", lambda: joblib.forget_done(jobs))
    return done, errors


def status(names=(), tables=None) -> list[dict]:
    """Per table: rows done, keys to do, jobs reserved / failed / retrying, the last error, the reservations.

    Read-only: a job table that is not declared is reported as no jobs (nothing is created).
    """
    rows = []
    for table in select_tables(names, tables):
        remaining, _total = table.progress()
        row = {"table": joblib.table_name(table), "done": len(table()), "to_do": remaining, "reserved": 0,
               "failed": 0, "retrying": 0, "last_error": None, "failed_key": None, "reservations": []}
        try:
            jobs = joblib.job_table(table)
        except Exception:  # noqa: BLE001 - e.g. an account that cannot read it: no jobs to report
            jobs = None
        if jobs is not None:
            counts = joblib.counts(jobs)
            row["reserved"], row["failed"] = counts["reserved"], counts["error"]
            if counts["retrying"]:  # of keys still to compute (a key whose upstream row was deleted is not)
                row["retrying"] = len((jobs.pending & "error_message <> ''").restrict(
                    table.key_source.proj(), semantic_check=False))
            row["reservations"] = joblib.rows(jobs, "status = 'reserved'")
            if row["failed"]:
                last = jobs.errors.to_dicts(order_by="completed_time DESC", limit=1)
                if last:
                    row["last_error"] = last[0].get("error_message")
                    row["failed_key"] = {k: last[0][k] for k in table.primary_key if k in last[0]}
        rows.append(row)
    return rows


def retry_failed(names=(), tables=None) -> int:
    """Failed keys of the chosen tables back to pending, their last error kept; return how many.

    They count as 'retrying' in `status` until they succeed (their job row is then deleted) or fail again
    (they count as failed again, with the new error). Workers pick them up; so does populate --retry-failed.
    """
    return sum(joblib.retry(jobs) for _, jobs in _job_tables(names, tables))


def jobs_list(names=(), tables=None, statuses=None) -> list[dict]:
    """Every job row of the chosen tables: table, key, status, age (s), host, pid, alive, error message."""
    return [{"table": joblib.table_name(table), **row} for table, jobs in _job_tables(names, tables)
            for row in joblib.rows(jobs) if statuses is None or row["status"] in statuses]


def jobs_refresh(names=(), tables=None, stale_after: float = joblib.DEFAULT_STALE_AFTER) -> list[dict]:
    """Reclaim stale reservations of the chosen tables (see neural_reg.jobs); return those reclaimed."""
    return [{"table": joblib.table_name(table), **r} for table, jobs in _job_tables(names, tables)
            for r in joblib.reclaim(jobs, stale_after=stale_after)]


def jobs_clear(names=(), tables=None) -> int:
    """Delete the error rows of the chosen tables; return how many."""
    return sum(joblib.clear(jobs) for _, jobs in _job_tables(names, tables))


def _job_tables(names=(), tables=None):
    """(table, its job table) for the chosen tables whose job table is declared (none is created here)."""
    for table in select_tables(names, tables):
        jobs = joblib.job_table(table)
        if jobs is not None:
            yield table, jobs
