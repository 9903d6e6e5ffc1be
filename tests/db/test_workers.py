"""Workers under faults, against a real server: many at once, SIGKILL, SIGTERM / SIGINT, the server going away.

The workers are real processes running the command line's own worker (``neural_reg.cli._worker``, which calls
``neural_reg.workflow.work``) on a tiny test-only schema: ``Square``, a three-part make with the
``KeepComputedResult`` mixin, whose make_compute logs each computation and whose make_compute / make_insert can
be held mid-way by a file, so a test can kill or stop a worker exactly there. The outage tests stop and restart
a private server of their own (a temp home), never the shared test server.

Run as a script, this module is such a worker: ``python test_workers.py SCHEMA [worker options]``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from neural_reg.resilience import KeepComputedResult  # neural_reg first: its warning filters, before DataJoint

import datajoint as dj  # noqa: E402

HERE = Path(__file__).resolve()
ROOT = HERE.parents[2]


def declare_tables(schema):
    """The test tables, declared in schema (a fresh set of classes per schema)."""

    @schema
    class Item(dj.Manual):
        definition = """
        item : int32
        ---
        seconds = 0.05 : float64        # make_compute's cost
        """

    @schema
    class Square(KeepComputedResult, dj.Computed):
        definition = """
        -> Item
        ---
        value : int64
        pid : int32                     # the worker that inserted it
        """

        class Note(dj.Part):
            definition = """
            -> master
            ---
            note : varchar(32)
            """

        def make_fetch(self, key):
            return ((Item & key).fetch1("seconds"),)

        def make_compute(self, key, seconds):
            control = Path(os.environ["WORKER_TEST_DIR"])
            with open(control / "computed.log", "a") as f:
                f.write(f"{key['item']} {os.getpid()}\n")
            (control / f"computing-{key['item']}").touch()
            if (control / f"fail-{key['item']}").exists():
                raise ValueError(f"item {key['item']} is told to fail")
            time.sleep(seconds)
            while (control / f"hold-compute-{key['item']}").exists():
                time.sleep(0.05)
            return (key["item"] ** 2,)

        def make_insert(self, key, value):
            control = Path(os.environ["WORKER_TEST_DIR"])
            self.insert1(dict(key, value=value, pid=os.getpid()))
            (control / f"inserting-{key['item']}").touch()
            while (control / f"hold-insert-{key['item']}").exists():  # master inserted, its part not yet
                time.sleep(0.05)
            self.Note.insert1(dict(key, note="done"))

    return Item, Square


# -- the worker process ---------------------------------------------------------------------------------------
def _worker_main(argv: list[str]) -> int:
    from neural_reg import cli
    from neural_reg.database import connect

    database, *options = argv
    connection = connect()
    _, square = declare_tables(dj.Schema(database, connection=connection))
    return cli._worker(cli.build_parser().parse_args(["worker", *options]), tables=[square])


class Worker:
    """A worker process on the test schema; its stderr goes to a file."""

    def __init__(self, database: str, control: Path, *options, env=None, name="w"):
        self.log = control / f"{name}-{time.monotonic_ns()}.log"
        environ = {**os.environ, "WORKER_TEST_DIR": str(control), "PYTHONPATH": str(ROOT), **(env or {})}
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, str(HERE), database, *options], cwd=ROOT, env=environ,
                                         stdout=out, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text()

    def stop(self, signum=signal.SIGTERM, timeout=20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"worker did not stop within {timeout} s:\n{self.output()}")

    def wait(self, timeout=30) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"worker did not finish within {timeout} s:\n{self.output()}")


def wait_for(condition, timeout=30.0, what="condition", workers=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        for w in workers:
            assert w.proc.poll() is None, f"worker exited ({w.proc.returncode}) while waiting for {what}:\n{w.output()}"
        time.sleep(0.05)
    logs = "\n".join(w.output()[-3000:] for w in workers)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{logs}")


def computed(control: Path) -> list[int]:
    path = control / "computed.log"
    return [int(line.split()[0]) for line in path.read_text().splitlines()] if path.exists() else []


def job_rows(square) -> list[dict]:
    from neural_reg import jobs

    table = jobs.job_table(square)
    return jobs.rows(table) if table is not None else []


# -- fixtures -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def schema(db):
    """A test-only schema on the shared test server, beside the session's pipeline schemas."""
    schema = dj.Schema(f"{db}_workers", connection=dj.conn())
    item, square = declare_tables(schema)
    yield schema.database, item, square
    schema.drop(prompt=False)


@pytest.fixture
def fresh(schema):
    """The schema emptied (rows, and no job table) before a test."""
    database, item, square = schema
    from neural_reg import jobs

    table = jobs.job_table(square)
    if table is not None:
        table.drop_quick()
    square.Note.delete_quick()
    square.delete_quick()
    item.delete_quick()
    return database, item, square


# -- many workers ---------------------------------------------------------------------------------------------
def test_many_workers_started_together_compute_every_key_exactly_once(fresh, tmp_path):
    database, item, square = fresh
    item.insert([{"item": i} for i in range(24)])
    workers = [Worker(database, tmp_path, "--sleep", "0.2", name=f"w{n}") for n in range(4)]
    try:
        wait_for(lambda: len(square()) == 24, 60, "24 squares", workers)
    finally:
        codes = [w.stop(signal.SIGTERM) for w in workers]
    assert codes == [0, 0, 0, 0], [w.output() for w in workers]
    assert sorted(computed(tmp_path)) == list(range(24))  # each key computed once, by one worker
    assert len(square.Note()) == 24 and job_rows(square) == []
    assert all(value == i * i for i, value in zip(*square.to_arrays("item", "value")))
    assert len(set(square.to_arrays("pid"))) >= 2  # the work was shared
    for w in workers:
        assert "Traceback" not in w.output() and "worker stopped by SIGTERM" in w.output()


# -- a killed worker ------------------------------------------------------------------------------------------
def test_a_worker_killed_mid_insert_leaves_no_partial_row_and_its_key_is_reclaimed(fresh, tmp_path):
    database, item, square = fresh
    item.insert1({"item": 7})
    (tmp_path / "hold-insert-7").touch()
    victim = Worker(database, tmp_path, "--sleep", "0.2", name="victim")
    wait_for(lambda: (tmp_path / "inserting-7").exists(), 30, "the insert of key 7", [victim])
    victim.proc.kill()  # SIGKILL: the master row is inserted, its part not, the transaction open
    victim.wait()
    assert len(square & {"item": 7}) == 0 and len(square.Note & {"item": 7}) == 0
    [job] = job_rows(square)
    assert (job["status"], job["pid"], job["alive"]) == ("reserved", victim.pid, False)

    (tmp_path / "hold-insert-7").unlink()
    rescuer = Worker(database, tmp_path, "--once", name="rescuer")
    assert rescuer.wait() == 0, rescuer.output()
    assert "reclaimed" in rescuer.output() and "is gone" in rescuer.output()
    assert (square & {"item": 7}).fetch1("pid") == rescuer.pid and len(square.Note & {"item": 7}) == 1
    assert job_rows(square) == []


def test_a_silent_reservation_of_another_host_is_reclaimed_after_stale_after(fresh, tmp_path):
    from neural_reg import jobs

    database, item, square = fresh
    item.insert1({"item": 8})
    table = jobs.job_table(square, declare=True)
    table.refresh(delay=-1)
    table.reserve({"item": 8})
    ten_s_ago = ("LOCALTIMESTAMP(3) - INTERVAL '10 seconds'" if table.connection.adapter.backend == "postgresql"
                 else "CURRENT_TIMESTAMP(3) - INTERVAL 10 SECOND")
    table.connection.query(f"UPDATE {table.full_table_name} SET host='elsewhere', pid=1, duration=0, "
                           f"reserved_time = {ten_s_ago}")
    assert jobs.reclaim(table, stale_after=60) == []  # silent 10 s: still someone's
    [reclaimed] = jobs.reclaim(table, stale_after=5)
    assert reclaimed["key"] == {"item": 8} and "no heartbeat for 10 s" in reclaimed["reason"]
    assert [r["status"] for r in jobs.rows(table)] == ["pending"]


# -- stop signals ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_hands_the_key_back_and_exits_0(fresh, tmp_path, signum):
    database, item, square = fresh
    item.insert1({"item": 3})
    (tmp_path / "hold-compute-3").touch()
    worker = Worker(database, tmp_path, "--sleep", "0.2", "--heartbeat", "0.2", "--stale-after", "2")
    wait_for(lambda: (tmp_path / "computing-3").exists(), 30, "the make of key 3", [worker])
    [job] = job_rows(square)
    assert job["status"] == "reserved" and job["heartbeat"] and job["pid"] == worker.pid
    if signum == signal.SIGTERM:  # a live worker's make outlasting --stale-after is not taken over: it beats
        time.sleep(2.5)
        [job] = job_rows(square)
        assert job["age_s"] > 2.5 and job["silent_s"] < 1.0, job
        other = Worker(database, tmp_path, "--once", "--heartbeat", "0.2", "--stale-after", "2", name="other")
        assert other.wait() == 0 and "0 stale reservation(s) reclaimed" in other.output(), other.output()
        assert job_rows(square)[0]["pid"] == worker.pid
    assert worker.stop(signum) == 0, worker.output()
    name = signal.Signals(signum).name
    assert f"worker stopped by {name}" in worker.output() and "Traceback" not in worker.output()
    [job] = job_rows(square)
    assert job["status"] == "pending" and job["error_message"] is None  # not recorded as an error
    assert len(square()) == 0

    (tmp_path / "hold-compute-3").unlink()
    again = Worker(database, tmp_path, "--once")
    assert again.wait() == 0, again.output()
    assert len(square & {"item": 3}) == 1 and job_rows(square) == []


# -- in this process: populate --reserve-jobs, status, retry, a plain populate ---------------------------------
def test_populate_reserve_jobs_hands_the_key_back_on_sigterm(fresh, tmp_path, monkeypatch):
    import threading

    from neural_reg import workflow
    from neural_reg.resilience import WorkerStopped

    _, item, square = fresh
    monkeypatch.setenv("WORKER_TEST_DIR", str(tmp_path))
    item.insert1({"item": 4})
    (tmp_path / "hold-compute-4").touch()

    def stop_when_computing():
        deadline = time.monotonic() + 30
        while not (tmp_path / "computing-4").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=stop_when_computing, daemon=True).start()
    with pytest.raises(WorkerStopped):
        workflow.populate(tables=[square], reserve_jobs=True)
    [job] = job_rows(square)
    assert job["status"] == "pending" and job["error_message"] is None and len(square()) == 0
    (tmp_path / "hold-compute-4").unlink()
    assert workflow.populate(tables=[square], reserve_jobs=True) == {"Square": (1, [])}
    assert job_rows(square) == []


def test_a_retried_key_stays_visible_until_it_succeeds(fresh, tmp_path, monkeypatch):
    from neural_reg import jobs, workflow

    _, item, square = fresh
    monkeypatch.setenv("WORKER_TEST_DIR", str(tmp_path))
    item.insert([{"item": 5}, {"item": 6}])
    assert jobs.job_table(square) is None
    [row] = workflow.status(tables=[square])
    assert (row["to_do"], row["failed"], row["reserved"]) == (2, 0, 0)
    assert jobs.job_table(square) is None  # status is read-only: no job table declared

    (tmp_path / "fail-5").touch()
    summary = workflow.populate(tables=[square], reserve_jobs=True)
    assert summary["Square"][0] == 1 and "told to fail" in summary["Square"][1][0][1]
    [row] = workflow.status(tables=[square])
    assert (row["failed"], row["retrying"], row["failed_key"]) == (1, 0, {"item": 5})
    assert workflow.retry_failed(tables=[square]) == 1
    [row] = workflow.status(tables=[square])
    assert (row["failed"], row["retrying"]) == (0, 1)  # still shown: retrying
    workflow.populate(tables=[square], reserve_jobs=True)  # fails again: failed again, not vanished
    [row] = workflow.status(tables=[square])
    assert (row["failed"], row["retrying"], row["to_do"]) == (1, 0, 1)
    (tmp_path / "fail-5").unlink()
    workflow.retry_failed(tables=[square])
    assert workflow.populate(tables=[square], reserve_jobs=True) == {"Square": (1, [])}
    [row] = workflow.status(tables=[square])
    assert (row["to_do"], row["failed"], row["retrying"]) == (0, 0, 0)


def test_a_plain_populate_removes_the_job_rows_of_the_keys_it_computed(fresh, tmp_path, monkeypatch):
    from neural_reg import jobs, workflow

    _, item, square = fresh
    monkeypatch.setenv("WORKER_TEST_DIR", str(tmp_path))
    item.insert([{"item": 1}, {"item": 2}])
    table = jobs.job_table(square, declare=True)
    table.refresh(delay=-1)
    table.reserve({"item": 1})
    table.connection.query(f"UPDATE {table.full_table_name} SET pid = 999999999 WHERE item = 1")  # a dead worker
    table.reserve({"item": 2})
    table.error({"item": 2}, error_message="ValueError: once")
    [row] = workflow.status(tables=[square])
    assert (row["reserved"], row["failed"]) == (1, 1)
    [reservation] = row["reservations"]
    assert reservation["key"] == {"item": 1} and reservation["pid"] == 999999999 and reservation["alive"] is False
    assert reservation["host"] == jobs.HOST and reservation["age_s"] >= 0
    assert workflow.populate(tables=[square], progress=False) == {"Square": (2, [])}
    assert job_rows(square) == []


def test_command_line_status_and_jobs_are_read_only_and_show_reservations(db, capsys, monkeypatch):
    from neural_reg.cli import main

    monkeypatch.setenv("NEURALREG_PREFIX", db)
    connection = dj.conn()

    def job_tables():
        return sorted(row for (row,) in connection.query(
            "SELECT CONCAT(table_schema, '.', table_name) FROM information_schema.tables "
            f"WHERE table_schema LIKE '{db}\\_%%' AND table_name LIKE '~~%%'").fetchall())

    before = job_tables()
    assert main(["status"]) == 0 and main(["jobs", "list"]) == 0 and main(["jobs"]) == 0
    assert job_tables() == before  # nothing declared
    out = capsys.readouterr().out
    assert "retrying" in out and "job(s)" in out
    assert main(["jobs", "refresh", "--stale-after", "60"]) == 0 and main(["jobs", "retry"]) == 0
    assert main(["jobs", "clear", "TrainedClassifier"]) == 0
    out = capsys.readouterr().out
    assert "stale reservation(s) reclaimed" in out and "back to pending" in out and "error row(s) deleted" in out


# -- the database going away ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def outage(tmp_path_factory):
    """A private server of these tests' own (a temp home), its test schema, and a way to stop and restart it."""
    from neural_reg.database import PrivateServer, find_server_binary

    if os.environ.get("DJ_HOST") or find_server_binary() is None:
        pytest.skip("needs a MySQL/MariaDB server binary to run a private server of its own")
    if dj.config["database.backend"] == "postgresql":  # neural_reg.resilience knows PyMySQL's errors only
        pytest.skip("the outage tests stop a private MySQL-family server: run in the mysql pass")
    home = tmp_path_factory.mktemp("outage-home")
    server = PrivateServer(home)
    creds = server.up()
    try:
        connection = dj.Connection(creds.host, creds.user, creds.password, creds.port)
        database = "outage_workers"
        item, square = declare_tables(dj.Schema(database, connection=connection))
        yield server, home, database, item, square
    finally:
        server.down()


def _outage_worker(outage, control, *options):
    server, home, database, _, _ = outage
    env = {"NEURALREG_HOME": str(home), "DJ_HOST": "", "DJ_USER": "", "DJ_PASS": ""}
    return Worker(database, control, "--sleep", "0.2", "--max-backoff", "0.5", "--heartbeat", "0.5",
                  "--stale-after", "5", *options, env=env, name="outage")


def test_an_idle_worker_waits_out_a_server_outage_and_carries_on(outage, tmp_path):
    server, _, _, item, square = outage
    item.insert1({"item": 10})
    worker = _outage_worker(outage, tmp_path)
    try:
        wait_for(lambda: len(square & {"item": 10}) == 1, 30, "key 10", [worker])
        server.down()
        wait_for(lambda: "database unreachable" in worker.output(), 20, "the worker to notice", [worker])
        time.sleep(1.0)  # a few back-off rounds
        server.up()
        item.insert1({"item": 11})
        wait_for(lambda: len(square & {"item": 11}) == 1, 30, "key 11 after the outage", [worker])
    finally:
        code = worker.stop()
    out = worker.output()
    assert code == 0, out
    assert "retry in" in out and "database reachable again" in out and "Traceback" not in out
    assert sorted(computed(tmp_path)) == [10, 11] and job_rows(square) == []


def test_a_worker_in_a_make_keeps_its_result_through_an_outage_at_insert(outage, tmp_path):
    server, _, _, item, square = outage
    item.insert1({"item": 12})
    (tmp_path / "hold-compute-12").touch()
    worker = _outage_worker(outage, tmp_path)
    try:
        wait_for(lambda: (tmp_path / "computing-12").exists(), 30, "the make of key 12", [worker])
        server.down()
        (tmp_path / "hold-compute-12").unlink()  # the computation ends while the server is away: insert fails
        wait_for(lambda: "make interrupted: database unreachable" in worker.output(), 20, "the failed insert",
                 [worker])
        time.sleep(1.0)
        server.up()
        wait_for(lambda: len(square & {"item": 12}) == 1, 30, "key 12 after the outage", [worker])
    finally:
        code = worker.stop()
    out = worker.output()
    assert code == 0, out
    assert computed(tmp_path) == [12], out  # computed once: the kept result was inserted
    assert "inserting the result computed before the database went away" in out
    assert len(square.Note & {"item": 12}) == 1 and job_rows(square) == []


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
