"""Accounts with least privilege on one prefix's schemas, against the real server: an analyst reads, a worker
writes only what workers compute, an admin owns the prefix; a password is shown once and nowhere else. On either
backend: MySQL-family (databases, GRANT per account@host) and PostgreSQL (schemas of one database, roles)."""

import os
import secrets
import subprocess
import sys

import datajoint as dj
import pymysql
import pytest

import schemas
from neural_reg import accounts
from neural_reg.accounts import AccountError
from schemas import recording

DENIED = {1044, 1045, 1142, 1143, 1227}  # no access to the database / the table command / the column / the right
PG_DENIED = {"42501"}  # PostgreSQL: insufficient_privilege (also "must be owner of table")

def postgres() -> bool:
    return dj.config["database.backend"] == "postgresql"


def t(database, table=None):
    """A schema (and table) name quoted for the backend: `db`.`t` or "db"."t"."""
    q = (lambda n: f'"{n}"') if postgres() else (lambda n: f"`{n}`")
    return q(database) if table is None else f"{q(database)}.{q(table)}"


def driver_error():
    if postgres():
        import psycopg2

        return psycopg2.Error
    return pymysql.err.MySQLError


def error_code(err):
    return getattr(err, "pgcode", None) if postgres() else err.args[0]


@pytest.fixture(scope="module")
def admin(db):
    """The session's connection (the private server's own account, or DJ_USER), after `neural-reg db setup`."""
    connection = recording.schema.connection
    summary = schemas.setup(db, connection)
    assert summary["missing"] == [] and summary["prefix"] == db
    return connection


def login(name, password):
    if postgres():
        import psycopg2

        conn = psycopg2.connect(host=dj.config["database.host"], port=int(dj.config["database.port"]), user=name,
                                password=password, dbname=dj.config["database.name"], connect_timeout=10)
        conn.autocommit = True
        return conn
    return pymysql.connect(host=dj.config["database.host"], port=int(dj.config["database.port"]), user=name,
                           password=password, autocommit=True, connect_timeout=10)


@pytest.fixture(scope="module")
def users(db, admin):
    tag = secrets.token_hex(3)
    made = {}
    try:
        for role in accounts.ROLES:
            name = f"t{tag}_{role}"
            try:
                made[role] = (name, accounts.add_user(admin, db, name, role))
            except AccountError as err:
                if getattr(err, "code", None) in DENIED | PG_DENIED:
                    pytest.skip(f"this test's account may not create accounts: {err}")
                raise
        yield {role: login(name, password) for role, (name, password) in made.items()}
    finally:
        for name, _ in made.values():
            accounts.remove_user(admin, name)


@pytest.fixture(scope="module")
def scan(db, admin):
    key = {"animal_id": f"acct{secrets.token_hex(2)}", "session": 1, "scan_idx": 1}
    recording.Animal.insert1({"animal_id": key["animal_id"]})
    recording.ImageSet.insert1({"image_set": key["animal_id"], "height": 4, "width": 4})
    recording.Scan.insert1(dict(key, image_set=key["animal_id"], source="test_accounts", source_format="simulator",
                                n_neurons=1, n_trials=1, checksum="0" * 40))
    yield key
    # the session's other tests populate every table: leave no half-made scan behind for them
    (recording.Animal & {"animal_id": key["animal_id"]}).delete(prompt=False)
    (recording.ImageSet & {"image_set": key["animal_id"]}).delete(prompt=False)


def run(conn, sql, args=None):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return tuple(tuple(row) for row in cur.fetchall()) if cur.description else ()


def denied(conn, sql, args=None):
    with pytest.raises(driver_error()) as info:
        run(conn, sql, args)
    assert error_code(info.value) in (PG_DENIED if postgres() else DENIED), (sql, str(info.value))


def oracle_stats_row(db, key):
    return (f"INSERT INTO {t(db + '_oracle', '__oracle_stats')} VALUES (%s, %s, %s, 3, 6, 0, 0.5, 1.5)",
            (key["animal_id"], key["session"], key["scan_idx"]))


def drop_schema(name):
    return f"DROP SCHEMA {t(name)} CASCADE" if postgres() else f"DROP DATABASE {t(name)}"


def test_analyst_reads_and_writes_nothing(db, users, scan):
    analyst = users["analyst"]
    assert run(analyst, f"SELECT animal_id FROM {t(db + '_recording', 'animal')} WHERE animal_id=%s",
               (scan["animal_id"],)) == ((scan["animal_id"],),)
    assert run(analyst, f"SELECT COUNT(*) FROM {t(db + '_oracle', '~~oracle_stats')}")[0][0] >= 0
    denied(analyst, f"INSERT INTO {t(db + '_recording', 'animal')} (animal_id) VALUES ('analyst-was-here')")
    denied(analyst, f"DELETE FROM {t(db + '_recording', 'animal')} WHERE animal_id=%s", (scan["animal_id"],))
    denied(analyst, *oracle_stats_row(db, scan))
    denied(analyst, f"DROP TABLE {t(db + '_oracle', '__oracle_stats')}")
    denied(analyst, drop_schema(f"{db}_robustness"))
    denied(analyst, "CREATE DATABASE analyst_was_here")
    if postgres():
        denied(analyst, "CREATE SCHEMA analyst_was_here")


def test_worker_writes_what_it_computes_and_nothing_else(db, users, scan):
    worker = users["worker"]
    # a computed table, its part, its job table: yes
    run(worker, *oracle_stats_row(db, scan))
    stats, jobs = t(db + "_oracle", "__oracle_stats"), t(db + "_oracle", "~~oracle_stats")
    run(worker, f"UPDATE {stats} SET n_degenerate=1 WHERE animal_id=%s", (scan["animal_id"],))
    run(worker, f"INSERT INTO {jobs} (animal_id, session, scan_idx, status, priority) "
                "VALUES (%s, %s, %s, 'reserved', 5)", (scan["animal_id"], scan["session"], scan["scan_idx"]))
    run(worker, f"UPDATE {jobs} SET duration=1.5 WHERE animal_id=%s", (scan["animal_id"],))
    run(worker, f"DELETE FROM {jobs} WHERE animal_id=%s", (scan["animal_id"],))
    run(worker, f"DELETE FROM {stats} WHERE animal_id=%s", (scan["animal_id"],))
    # recordings, configurations (manual and lookup), their parts: no
    denied(worker, f"INSERT INTO {t(db + '_recording', 'animal')} (animal_id) VALUES ('worker-was-here')")
    denied(worker, f"UPDATE {t(db + '_recording', 'scan')} SET n_trials=2 WHERE animal_id=%s", (scan["animal_id"],))
    denied(worker, f"DELETE FROM {t(db + '_recording', 'scan')} WHERE animal_id=%s", (scan["animal_id"],))
    denied(worker, f"INSERT INTO {t(db + '_classifier', '#seed')} (classifier_seed) VALUES (4711)")
    denied(worker, f"DELETE FROM {t(db + '_classifier', 'train_config')}")
    denied(worker, f"DELETE FROM {t(db + '_oracle', 'scan_group__member')}")
    # no DDL
    denied(worker, drop_schema(f"{db}_oracle"))
    denied(worker, f"DROP TABLE {stats}")
    denied(worker, f"ALTER TABLE {stats} ADD COLUMN x INT")
    denied(worker, f"CREATE TABLE {t(db + '_oracle', 'worker_was_here')} (i INT)")
    assert run(worker, f"SELECT COUNT(*) FROM {t(db + '_recording', 'scan')} WHERE animal_id=%s",
               (scan["animal_id"],))[0][0] == 1


def test_admin_owns_the_prefix(db, users, scan):
    admin_user = users["admin"]
    animal = t(db + "_recording", "animal")
    run(admin_user, f"INSERT INTO {animal} (animal_id) VALUES (%s)", (scan["animal_id"] + "b",))
    run(admin_user, f"DELETE FROM {animal} WHERE animal_id=%s", (scan["animal_id"] + "b",))
    run(admin_user, f"CREATE TABLE {t(db + '_recording', 'admin_was_here')} (i INT)")
    run(admin_user, f"DROP TABLE {t(db + '_recording', 'admin_was_here')}")
    if postgres():
        # PostgreSQL grants no CREATE on schemas not made yet: an admin may create schemas in the lab's database
        # (accounts.py says so), but no database, and no role
        denied(admin_user, "CREATE DATABASE admin_was_here")
        denied(admin_user, "CREATE ROLE admin_made_this LOGIN PASSWORD 'Xy-123456789abc'")
        return
    # ... and only that prefix: '_' in its grants is no wildcard, other databases are out of reach
    lookalike = db.replace("_", "x", 1)
    denied(admin_user, f"CREATE DATABASE `{lookalike}_recording`")
    denied(admin_user, "CREATE USER 'admin_made_this'@'%' IDENTIFIED BY 'Xy-123456789abc'")


def test_roles_are_checked(admin, db):
    with pytest.raises(AccountError, match="role 'root' is not one of analyst, worker, admin"):
        accounts.add_user(admin, db, "tsomeone", "root")
    with pytest.raises(AccountError, match="account name"):
        accounts.add_user(admin, db, "x'; DROP DATABASE mysql; --", "analyst")
    with pytest.raises(AccountError, match=r"prefix 'tnotsetup\w*' is not set up .*neural-reg db setup"):
        accounts.add_user(admin, f"tnotsetup{secrets.token_hex(2)}", "tsomeone", "worker")
    assert accounts.remove_user(admin, f"tnobody{secrets.token_hex(2)}") is False


def test_error_messages_never_show_a_password(admin):
    secret = f"Sec-{secrets.token_hex(8)}"
    with pytest.raises(AccountError) as info:  # a syntax error: the server echoes the statement around the secret
        accounts._execute(admin, f"CREATE USERR 'tnobody'@'%' IDENTIFIED BY '{secret}'", secret=secret)
    assert secret not in str(info.value) and ("42601" if postgres() else "1064") in str(info.value)


def test_cli_prints_the_password_once_to_stdout_and_nowhere_else(db, admin, monkeypatch, capsys):
    from neural_reg.cli import main
    from neural_reg.settings import load_settings

    monkeypatch.setenv("NEURALREG_PREFIX", db)
    name = f"t{secrets.token_hex(3)}_cli"
    try:
        assert main(["db", "add-user", name, "--role", "worker"]) == 0
        captured = capsys.readouterr()
        password = captured.out.strip()
        assert captured.out == password + "\n" and len(password) >= 20  # stdout: the password, once, alone
        assert password not in captured.err and f"{name}@%" in captured.err and "worker" in captured.err
        login(name, password).close()
        processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        assert password not in processes
        from neural_reg.database import private_server

        log = private_server(load_settings()).log
        assert not log.exists() or password not in log.read_text(errors="replace")
        assert main(["db", "add-user", name, "--role", "worker"]) == 2  # exists: an error, and no new password
        captured = capsys.readouterr()
        assert "exists already" in captured.err and captured.out == ""
    finally:
        assert main(["db", "remove-user", name]) == 0
    assert "removed" in capsys.readouterr().out
    with pytest.raises(driver_error()) as info:
        login(name, password)
    assert "password authentication failed" in str(info.value) if postgres() else info.value.args[0] == 1045


WORKER_SCRIPT = """
import json, sys
import schemas
from neural_reg.database import DatabaseError
from schemas import classifier, oracle, robustness
try:
    schemas.activate(sys.argv[1])  # a prefix nobody set up: a worker may not declare it
    refused = None
except DatabaseError as err:
    refused = str(err)
schemas.activate()
print(json.dumps([refused, len(oracle.OracleStats.jobs), len(robustness.BrainLikeness.Layer * classifier.Training)]))
"""


def test_a_worker_activates_a_set_up_prefix_without_ddl(db, users):
    """A real worker process: DataJoint activates every schema and finds the job tables, with no DDL; a prefix
    nobody set up is refused with the fix."""
    import json

    from schemas import classifier, oracle, robustness

    name = f"t{secrets.token_hex(3)}_wk"
    password = accounts.add_user(recording.schema.connection, db, name, "worker")
    try:
        env = dict(os.environ, DJ_HOST=f"{dj.config['database.host']}:{dj.config['database.port']}", DJ_USER=name,
                   DJ_PASS=password, NEURALREG_PREFIX=db, DJ_BACKEND=dj.config["database.backend"])
        if postgres():
            env["DJ_DATABASE_NAME"] = dj.config["database.name"]
        unset = f"tunset{secrets.token_hex(3)}"
        result = subprocess.run([sys.executable, "-c", WORKER_SCRIPT, unset], env=env, capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        refused, n_jobs, n_join = json.loads(result.stdout.strip().splitlines()[-1])
        assert f"prefix '{unset}' is not set up" in refused and "neural-reg db setup" in refused
        assert [n_jobs, n_join] == [len(oracle.OracleStats.jobs),
                                    len(robustness.BrainLikeness.Layer * classifier.Training)]
        assert password not in result.stdout + result.stderr
    finally:
        accounts.remove_user(recording.schema.connection, name)
