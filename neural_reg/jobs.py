"""DataJoint's job tables, read and kept tidy: who holds which key, since when, and whether it is still alive.

Each auto-populated table has a job table (``~~name``) with one row per key in flight: ``pending``,
``reserved`` (a worker computes it: host, pid, reserved_time), ``error`` (message and traceback) or
``ignore``. A finished key's row is deleted. On top of DataJoint's rows neural-reg keeps a **heartbeat**: a
worker writes, every ``heartbeat`` seconds, how long it has held its key into the row's ``duration`` column
(which DataJoint leaves empty until a key completes), so a reservation's *silence* is
``now - reserved_time - duration``. A reservation is **stale**, and goes back to pending, when

- its host is this machine and its pid is not alive (a killed worker): at once;
- its worker has been silent for more than ``stale_after`` seconds (a dead machine, a lost network);
- it never had a heartbeat (a plain DataJoint ``populate(reserve_jobs=True)``, e.g. from a notebook) and is
  older than ``NO_HEARTBEAT_STALE_AFTER`` (a day), since its make may legitimately run for hours.

Caveat: "this host" is ``platform.node()``; containers sharing one hostname but not one pid namespace (e.g.
``docker run --network host``) would see each other's pids as dead. Give them distinct hostnames.

A failed key that is retried (:func:`retry`) goes back to pending *with its last error kept*, so
``neural-reg status`` counts it as "retrying" until it succeeds (its row is then deleted) or fails again.

Nothing here declares a job table unless asked (``job_table(..., declare=True)``): ``status`` and ``jobs list``
are read-only.
"""

from __future__ import annotations

import logging
import os
import platform
import threading

from .database import pid_alive

log = logging.getLogger("neural_reg.worker")

HOST = platform.node()  # what DataJoint writes into a reservation's host column
DEFAULT_STALE_AFTER = 600.0  # s of silence after which another worker takes the key over
DEFAULT_HEARTBEAT = 30.0  # s between a worker's heartbeats
NO_HEARTBEAT_STALE_AFTER = 86400.0  # s; reservations of workers without a heartbeat


def table_name(table) -> str:
    """'module.Class' of a table class or instance, as status and the command line name it."""
    cls = table if isinstance(table, type) else type(table)
    return f"{cls.__module__.split('.')[-1]}.{cls.__name__}"


def job_table(table, declare: bool = False):
    """The DataJoint job table of an auto-populated table, or None if it is not declared (and declare is False)."""
    from datajoint.jobs import Job

    jobs = Job(table() if isinstance(table, type) else table)
    if not jobs.is_declared:
        if not declare:
            return None
        _declare_once(jobs)
    return jobs


DECLARE_LOCK_TIMEOUT_S = 60.0


def _declare_once(jobs) -> None:
    """Declare a job table while holding a server-wide lock named for it: workers that start together on a
    table whose job table is new would otherwise race (on PostgreSQL two ``CREATE TABLE IF NOT EXISTS`` both go
    ahead and the second one's ``CREATE INDEX`` fails, "relation ... already exists")."""
    import hashlib

    from .database import held_lock

    # a lock name has at most 64 characters on MySQL: a digest of the job table's full name
    name = "neural-reg-jobs-" + hashlib.sha1(jobs.full_table_name.encode()).hexdigest()[:32]
    with held_lock(jobs.connection, name, DECLARE_LOCK_TIMEOUT_S,
                   f"another worker declaring the job table {jobs.full_table_name}"):
        if not jobs.is_declared:  # another worker may have declared it while this one waited
            jobs.declare()


def _q(jobs, name: str) -> str:
    return jobs.adapter.quote_identifier(name)


def _where_key(jobs, key: dict) -> str:
    from datajoint.condition import make_condition

    return make_condition(jobs, {k: key[k] for k in jobs.primary_key}, set())


def _age(jobs, column: str) -> str:
    """SQL for the seconds (server clock) since a datetime(3) column, on either backend."""
    if jobs.adapter.backend == "postgresql":
        # DataJoint writes CURRENT_TIMESTAMP(3) into a timestamp(3) (no time zone) column: LOCALTIMESTAMP matches it
        return f"CAST(EXTRACT(EPOCH FROM (LOCALTIMESTAMP(3) - {_q(jobs, column)})) AS DOUBLE PRECISION)"
    return f"TIMESTAMPDIFF(MICROSECOND, {_q(jobs, column)}, CURRENT_TIMESTAMP(3)) / 1e6"


def rows(jobs, where: str = "TRUE") -> list[dict]:
    """The job rows (without the traceback), each with its key, ages in s (server clock) and liveness."""
    q = lambda c: _q(jobs, c)  # noqa: E731
    pk = ", ".join(q(k) for k in jobs.primary_key)
    sql = (f"SELECT {pk}, {q('status')}, {q('host')}, {q('pid')}, {q('user')}, {q('error_message')}, "
           f"{q('duration')}, {_age(jobs, 'scheduled_time')} AS since_scheduled, "
           f"{_age(jobs, 'reserved_time')} AS since_reserved, {_age(jobs, 'completed_time')} AS since_completed "
           f"FROM {jobs.full_table_name} WHERE {where} ORDER BY {q('status')}, {q('created_time')}")
    out = []
    for r in jobs.connection.query(sql, as_dict=True).fetchall():
        key = {k: r[k] for k in jobs.primary_key}
        status = r["status"]
        row = {"key": key, "status": status, "host": r["host"] or None, "pid": int(r["pid"] or 0) or None,
               "user": r["user"] or None, "error_message": r["error_message"] or None, "alive": None,
               "silent_s": None, "heartbeat": False}
        if status == "reserved":
            row["age_s"] = float(r["since_reserved"] or 0.0)
            row["heartbeat"] = r["duration"] is not None
            row["silent_s"] = row["age_s"] - float(r["duration"] or 0.0)
            if row["host"] == HOST and row["pid"]:
                row["alive"] = pid_alive(row["pid"])
        elif status == "error":
            row["age_s"] = float(r["since_completed"] or 0.0)
        else:
            row["age_s"] = float(r["since_scheduled"] or 0.0)
        out.append(row)
    return out


def counts(jobs) -> dict:
    """{'pending', 'reserved', 'error', 'ignore', 'retrying'}: retrying = pending keys that failed before."""
    q = lambda c: _q(jobs, c)  # noqa: E731
    sql = (f"SELECT {q('status')}, {q('error_message')} <> '' AS failed_before, COUNT(*) FROM "
           f"{jobs.full_table_name} GROUP BY {q('status')}, failed_before")
    result = {"pending": 0, "reserved": 0, "success": 0, "error": 0, "ignore": 0, "retrying": 0}
    for status, failed_before, n in jobs.connection.query(sql).fetchall():
        result[status] = result.get(status, 0) + int(n)
        if status == "pending" and failed_before:
            result["retrying"] += int(n)
    return result


# -- a worker's own reservation ---------------------------------------------------------------------------------
def _mine(jobs) -> tuple[str, tuple]:
    q = lambda c: _q(jobs, c)  # noqa: E731
    return f"{q('status')} = 'reserved' AND {q('host')} = %s AND {q('pid')} = %s", (HOST, os.getpid())


_IDENTITY: dict = {}  # connection id(...) -> (user, version): asked once per connection, not per key


def reserve(jobs, key: dict) -> bool:
    """Reserve a pending key for this process, as DataJoint's ``Job.reserve`` does, with a first heartbeat.

    One UPDATE (DataJoint's also asks the server for the user each time): status, host, pid, connection, user,
    version and reserved_time as DataJoint writes them, and ``duration = 0``, which marks a reservation whose
    worker sends heartbeats. False if the key was not pending (another worker has it, or it is done).
    """
    from datajoint.jobs import _get_job_version

    connection = jobs.connection
    if id(connection) not in _IDENTITY:
        _IDENTITY[id(connection)] = (connection.get_user(), _get_job_version(connection._config))
    user, version = _IDENTITY[id(connection)]
    q = lambda c: _q(jobs, c)  # noqa: E731
    sql = (f"UPDATE {jobs.full_table_name} SET {q('status')} = 'reserved', {q('host')} = %s, {q('pid')} = %s, "
           f"{q('connection_id')} = %s, {q('user')} = %s, {q('version')} = %s, "
           f"{q('reserved_time')} = CURRENT_TIMESTAMP(3), {q('duration')} = 0 "
           f"WHERE {_where_key(jobs, key)} AND {q('status')} = 'pending' "
           f"AND {q('scheduled_time')} <= CURRENT_TIMESTAMP(3)")
    args = (HOST, os.getpid(), getattr(connection, "connection_id", 0) or 0, user, version)
    return connection.query(sql, args=args).rowcount == 1


def complete(jobs, key: dict, duration: float | None = None) -> bool:
    """Settle this worker's reservation of a computed key (deleted, or 'success' with keep_completed)."""
    if jobs.connection._config.jobs.keep_completed:
        if owned(jobs, key):
            jobs.complete(key, duration=duration)
            return True
        return False
    mine, args = _mine(jobs)
    sql = f"DELETE FROM {jobs.full_table_name} WHERE {_where_key(jobs, key)} AND {mine}"
    return jobs.connection.query(sql, args=args).rowcount == 1


def owned(jobs, key: dict) -> bool:
    """Whether this process holds the key's reservation."""
    mine, args = _mine(jobs)
    sql = f"SELECT COUNT(*) FROM {jobs.full_table_name} WHERE {_where_key(jobs, key)} AND {mine}"
    return bool(jobs.connection.query(sql, args=args).fetchone()[0])


def _beat_sql(jobs, key: dict) -> tuple[str, tuple]:
    mine, args = _mine(jobs)
    return (f"UPDATE {jobs.full_table_name} SET {_q(jobs, 'duration')} = {_age(jobs, 'reserved_time')} "
            f"WHERE {_where_key(jobs, key)} AND {mine}"), args


def beat(jobs, key: dict) -> bool:
    """Write this worker's heartbeat into its reservation of key; False if it no longer holds it."""
    sql, args = _beat_sql(jobs, key)
    return jobs.connection.query(sql, args=args).rowcount == 1


def _back_to_pending(jobs) -> str:
    q = lambda c: _q(jobs, c)  # noqa: E731
    return (f"{q('status')} = 'pending', {q('scheduled_time')} = CURRENT_TIMESTAMP(3), {q('reserved_time')} = NULL, "
            f"{q('duration')} = NULL, {q('host')} = '', {q('pid')} = 0, {q('connection_id')} = 0")


def release(jobs, key: dict) -> str:
    """Hand this worker's reservation of key back: 'pending', or 'done' if the key is computed after all.

    Returns 'not held' when this process does not hold it (nothing changed). The row's last error, if it was
    a retried key, is kept.
    """
    mine, args = _mine(jobs)
    where = f"{_where_key(jobs, key)} AND {mine}"
    if key in jobs.target:
        n = jobs.connection.query(f"DELETE FROM {jobs.full_table_name} WHERE {where}", args=args).rowcount
        return "done" if n else "not held"
    n = jobs.connection.query(f"UPDATE {jobs.full_table_name} SET {_back_to_pending(jobs)} WHERE {where}",
                              args=args).rowcount
    return "pending" if n else "not held"


# -- tidying: stale reservations, rows of finished keys ---------------------------------------------------------
def reclaim(jobs, stale_after: float = DEFAULT_STALE_AFTER,
            no_heartbeat_after: float = NO_HEARTBEAT_STALE_AFTER, holding_none: bool = False) -> list[dict]:
    """Put stale reservations back to pending (see the module's doc); return the rows reclaimed (as before).

    holding_none: the caller (a worker between two keys) holds no reservation, so one in its own host and pid is
    a leftover of an earlier process that had the same pid (a restarted container) and is stale too.
    """
    q = lambda c: _q(jobs, c)  # noqa: E731
    reclaimed = []
    for row in rows(jobs, f"{q('status')} = 'reserved'"):
        if row["alive"] is False or (holding_none and row["host"] == HOST and row["pid"] == os.getpid()):
            why = (f"its worker (pid {row['pid']} on this host) is gone" if row["pid"] != os.getpid() else
                   "left by an earlier process with this worker's pid")
            # the same worker, still there when we act: status, host and pid unchanged
            condition, args = f"{q('host')} = %s AND {q('pid')} = %s", (row["host"] or "", row["pid"] or 0)
        elif row["heartbeat"] and row["silent_s"] > stale_after:
            why = f"no heartbeat for {row['silent_s']:.0f} s (> {stale_after:g} s)"
            condition = (f"{q('duration')} IS NOT NULL AND "
                         f"{_age(jobs, 'reserved_time')} - {q('duration')} > %s")
            args = (stale_after,)
        elif not row["heartbeat"] and row["age_s"] > no_heartbeat_after:
            why = f"reserved {row['age_s']:.0f} s ago without a heartbeat (> {no_heartbeat_after:g} s)"
            condition, args = f"{q('duration')} IS NULL AND {_age(jobs, 'reserved_time')} > %s", (no_heartbeat_after,)
        else:
            continue
        sql = (f"UPDATE {jobs.full_table_name} SET {_back_to_pending(jobs)} WHERE {_where_key(jobs, row['key'])} "
               f"AND {q('status')} = 'reserved' AND {condition}")
        if jobs.connection.query(sql, args=args).rowcount == 1:
            log.warning("%s %s: reservation by %s pid %s reclaimed, back to pending: %s", table_name(jobs.target),
                        row["key"], row["host"], row["pid"], why)
            reclaimed.append({**row, "reason": why})
    return reclaimed


def forget_done(jobs) -> int:
    """Delete the job rows (any status but 'ignore') of keys that are computed: a plain populate did them."""
    done = (jobs & "status != 'ignore'").restrict(jobs.target.proj(), semantic_check=False)
    return done.delete_quick(get_count=True)


# -- what the `jobs` command does -------------------------------------------------------------------------------
def retry(jobs) -> int:
    """Failed keys back to pending, keeping their last error (shown as 'retrying' until they succeed)."""
    q = lambda c: _q(jobs, c)  # noqa: E731
    sql = (f"UPDATE {jobs.full_table_name} SET {_back_to_pending(jobs)}, {q('completed_time')} = NULL "
           f"WHERE {q('status')} = 'error'")
    return jobs.connection.query(sql).rowcount


def clear(jobs) -> int:
    """Delete the error rows (the keys become ordinary to-do keys again, their errors forgotten)."""
    return (jobs & "status = 'error'").delete_quick(get_count=True)


# -- the heartbeat ----------------------------------------------------------------------------------------------
class Heartbeat:
    """A thread that keeps this worker's current reservation fresh, over a connection of its own.

    The main thread says which key it holds (:meth:`hold`) and when it lets go (:meth:`drop`). Failures (the
    server away) are logged at debug level and retried at the next beat; the thread never stops the worker.
    """

    def __init__(self, connection, interval: float = DEFAULT_HEARTBEAT):
        self.interval = float(interval)
        self._info = dict(connection.conn_info)
        self._lock = threading.Lock()
        self._current = None  # (what, sql, args) of the reservation held
        self._generation = 0  # changes at each hold / drop
        self._stop = threading.Event()
        self._conn = None
        self.lost: set[str] = set()  # keys this worker found it no longer held
        self._thread = threading.Thread(target=self._run, name="neural-reg-heartbeat", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=2)  # a stopping container has seconds
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001 - closing a dead session
                pass

    def hold(self, jobs, key: dict) -> None:
        sql, args = _beat_sql(jobs, key)  # built here: the thread must not touch the main thread's connection
        with self._lock:
            self._current = (f"{table_name(jobs.target)} {dict(key)}", sql, args)
            self._generation += 1

    def drop(self) -> None:
        with self._lock:
            self._current = None
            self._generation += 1

    def _connection(self):
        import datajoint as dj

        if self._conn is None:
            info = self._info
            self._conn = dj.Connection(info["host"], info["user"], info["passwd"], info["port"],
                                       use_tls=info.get("ssl_input"))
        return self._conn

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                current, generation = self._current, self._generation
            if current is None:
                continue
            what, sql, args = current
            try:
                held = self._connection().query(sql, args=args).rowcount == 1
                with self._lock:
                    let_go = generation != self._generation  # the worker settled the key meanwhile: no news
                if not held and not let_go and what not in self.lost:
                    self.lost.add(what)
                    log.warning("%s: this worker no longer holds the key's reservation (taken over?)", what)
            except Exception as err:  # noqa: BLE001 - the server away: try again at the next beat
                log.debug("heartbeat failed: %s", err)
                try:
                    self._conn.close()
                except Exception:  # noqa: BLE001
                    pass
                self._conn = None


# -- presentation (status, `neural-reg jobs list`) ----------------------------------------------------------------
def format_age(seconds: float | None) -> str:
    """12s, 3m05s, 2h03m, 1d02h."""
    if seconds is None:
        return "-"
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def format_key(key: dict) -> str:
    """k=v pairs; 32-digit hashes shortened to their first 8 digits."""
    def short(v):
        v = str(v)
        return v[:8] if len(v) == 32 and all(c in "0123456789abcdef" for c in v) else v

    return " ".join(f"{k}={short(v)}" for k, v in key.items())


def format_holder(row: dict) -> str:
    """'host pid N (alive|dead|?), heartbeat Ns ago' for a reserved row."""
    alive = {True: "alive", False: "dead", None: "?"}[row.get("alive")]
    beat = (f", heartbeat {format_age(row['silent_s'])} ago" if row.get("heartbeat")
            else ", no heartbeat")
    return f"{row.get('host') or '?'} pid {row.get('pid') or '?'} ({alive}){beat}"
