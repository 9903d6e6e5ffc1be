"""Workers that survive faults: a lost database connection, a stop signal, a result computed but not yet inserted.

- :func:`is_connection_error` tells a lost or refused connection (retry once the server is back) from an error
  of the computation (record it as the key's error).
- :class:`Backoff` and :func:`reconnect`: the waiting between attempts, and a clean new connection.
- :class:`StopSignals`: SIGTERM / SIGINT raise :class:`WorkerStopped` inside a make (or a wait), and only there.
  ``WorkerStopped`` derives from ``BaseException`` but not from ``Exception``, ``KeyboardInterrupt`` or
  ``SystemExit``, so DataJoint 2.3.5's ``_populate1`` (``except (KeyboardInterrupt, SystemExit, Exception)``)
  does not record it as the key's error: the worker hands the key back to pending instead.
- :class:`KeepComputedResult`: a mixin for tables with a three-part make (make_fetch / make_compute /
  make_insert). The result of make_compute is kept, in this process, until the worker has inserted it; if the
  insert fails because the database went away, the retry (same key, same fetched data) inserts the kept result
  instead of computing it again. Use it as the first base: ``class TrainedClassifier(KeepComputedResult,
  dj.Computed)``.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time

from pipeline.errors import NeuralRegError

log = logging.getLogger("neural_reg.worker")

# MySQL / MariaDB client and server error codes that mean "the server is not there (now)", not "your query is
# wrong": 2002/2003 cannot connect (socket/TCP), 2005 unknown host, 2006 gone away, 2013 lost during a query,
# 2055 lost (system error), 1040 too many connections, 1053 shutdown in progress, 1927 connection killed
# (MariaDB), 4031 disconnected by the server for inactivity (MySQL 8), 0 an interface error on a dead socket.
CONNECTION_ERROR_CODES = frozenset({0, 1040, 1053, 1927, 2002, 2003, 2005, 2006, 2013, 2055, 4031})


class WorkerStopped(BaseException):
    """A worker was told to stop (SIGTERM, SIGINT); raised inside the make so the key can be handed back.

    Deliberately not an ``Exception``: ``except Exception`` in a make, and DataJoint's error recording, let it
    through.
    """

    def __init__(self, signum: int | None = None):
        self.signum = signum
        self.signame = signal.Signals(signum).name if signum else "stop"
        super().__init__(f"{self.signame} received")


def _codes(err: BaseException):
    args = getattr(err, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def is_connection_error(err: BaseException | None) -> bool:
    """Whether an error (or the error it was raised from) means the database connection was lost or refused."""
    import pymysql
    from datajoint.errors import LostConnectionError

    seen = 0
    while err is not None and seen < 8:
        if isinstance(err, LostConnectionError):
            return True
        if isinstance(err, pymysql.err.InterfaceError):
            return True
        if isinstance(err, pymysql.err.OperationalError) and _codes(err) in CONNECTION_ERROR_CODES:
            return True
        if isinstance(err, (ConnectionError, TimeoutError)):  # refused, reset, broken pipe, socket timeout
            return True
        err, seen = err.__cause__, seen + 1  # an error raised *from* a lost connection (raise X from err)
    return False


def describe(err: BaseException) -> str:
    """One line: the error's type and message (never a password: the drivers do not put it in messages)."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


class Backoff:
    """Delays between attempts: first, first*factor, ... up to cap (seconds)."""

    def __init__(self, first: float = 1.0, factor: float = 2.0, cap: float = 30.0):
        if first <= 0 or factor < 1 or cap < first:
            raise NeuralRegError(f"back-off {first=}, {factor=}, {cap=}: need first > 0, factor >= 1, cap >= first")
        self.first, self.factor, self.cap = first, factor, cap
        self._next = first

    def next(self) -> float:
        delay = self._next
        self._next = min(self.cap, self._next * self.factor)
        return delay

    def reset(self) -> None:
        self._next = self.first


def reconnect(connection) -> None:
    """Replace the DataJoint connection's session with a fresh one (raises if the server is still away).

    A transaction the lost session had open is gone with it (the server rolled it back); the connection's
    transaction flag is reset so the next make can start one.
    """
    with contextlib.suppress(Exception):
        connection.close()
    connection.connect()
    connection.ping()
    connection.cancel_transaction()  # ROLLBACK: a no-op on the new session; clears a flag the lost one left set
    with contextlib.suppress(Exception):  # job rows record the session that reserved them
        connection.connection_id = connection.adapter.get_connection_id(connection._conn)


class StopSignals:
    """SIGTERM and SIGINT ask the worker to stop; inside :meth:`interruptible` they raise :class:`WorkerStopped`.

    Outside it (a job-table query, the bookkeeping after a make) the request is only recorded, and the worker
    stops at its next check, so no query is cut in half where that would leave a key half-recorded.
    Installed only in the main thread (elsewhere Python cannot install signal handlers; then nothing changes).
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.received: int | None = None
        self._interruptible = False
        self._previous = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    def _handler(self, signum, frame) -> None:
        first = self.received is None
        self.received = signum
        if first:
            log.info("%s received: stopping (the key in progress goes back to pending)", signal.Signals(signum).name)
        if self._interruptible:
            self._interruptible = False
            raise WorkerStopped(signum)

    @property
    def requested(self) -> bool:
        return self.received is not None

    def check(self) -> None:
        """Raise WorkerStopped if a stop was requested."""
        if self.received is not None:
            raise WorkerStopped(self.received)

    @contextlib.contextmanager
    def interruptible(self):
        """A stretch (a make, a wait) that a stop signal may cut short by raising WorkerStopped."""
        self.check()
        self._interruptible = True
        try:
            yield
        finally:
            self._interruptible = False

    def sleep(self, seconds: float) -> None:
        """Sleep; a stop signal ends it early by raising WorkerStopped."""
        with self.interruptible():
            deadline = time.monotonic() + max(0.0, seconds)
            while (left := deadline - time.monotonic()) > 0:
                time.sleep(min(left, 1.0))


# -- a computed result kept until it is inserted ----------------------------------------------------------------
_KEPT: dict[str, tuple] = {}  # table -> (key, digest of the fetched data, computed result): one per table


def _key_id(key: dict) -> str:
    return repr(sorted((k, str(v)) for k, v in key.items()))


def _digest(fetched) -> str:
    import deepdiff

    return deepdiff.DeepHash(fetched, ignore_iterable_order=False)[fetched]


def forget(table=None) -> None:
    """Drop the kept result of a table (a class or instance), or of every table."""
    if table is None:
        _KEPT.clear()
    else:
        _KEPT.pop(table.full_table_name, None)


def kept(table) -> tuple | None:
    """(key id, digest, result) kept for a table, or None (for tests and the log)."""
    return _KEPT.get(table.full_table_name)


class KeepComputedResult:
    """Mixin for three-part-make tables: make_compute's result outlives a failed insert.

    DataJoint runs a three-part make as fetch, compute, then (in a transaction) fetch again, compare, insert.
    If the connection is lost at the insert, DataJoint discards the computed result; with this mixin the result
    of the last make_compute of each table is kept in this process, and a retry of the same key whose
    make_fetch returns the same data inserts it without computing again. The workflow drops it once the key is
    settled (inserted, failed for another reason, or handed back). One result per table is kept at a time.
    """

    def make(self, key, **kwargs):
        fetched = self.make_fetch(key, **kwargs)
        computed = yield fetched
        if computed is None:  # DataJoint's first pass: compute (or recall) the result
            ident, digest = _key_id(key), _digest(fetched)
            previous = _KEPT.get(self.full_table_name)
            if previous is not None and previous[0] == ident and previous[1] == digest:
                log.info("%s %s: inserting the result computed before the database went away",
                         type(self).__name__, dict(key))
                computed = previous[2]
            else:
                _KEPT.pop(self.full_table_name, None)
                computed = self.make_compute(key, *fetched)
                _KEPT[self.full_table_name] = (ident, digest, computed)
            yield computed
        self.make_insert(key, *computed)
        yield
