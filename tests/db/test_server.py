"""The private servers: start themselves, are reused, survive a stale pid file, stop; never show their password.

The MySQL-family one (MariaDB here) is tested in the mysql pass of `make test`, the PostgreSQL one in the
postgresql pass (DJ_BACKEND=postgresql): each pass tests the server it runs on."""

import contextlib
import json
import os
import secrets
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from neural_reg.database import APP_USER, PrivatePostgres, PrivateServer, find_postgres_bindir, find_server_binary
from neural_reg.settings import load_settings

BACKEND = load_settings().backend
mysql_only = pytest.mark.skipif(BACKEND != "mysql" or find_server_binary() is None,
                                reason="the MySQL-family private server: tested in the mysql pass, with its binary")
postgres_only = pytest.mark.skipif(BACKEND != "postgresql" or find_postgres_bindir() is None,
                                   reason="the private PostgreSQL: tested in the postgresql pass, with its binaries")


@mysql_only
def test_up_reuse_stale_pid_and_down(tmp_path):
    server = PrivateServer(tmp_path)
    try:
        creds = server.up()
        pid = server.pid()
        assert server.is_running()
        # credentials are private to their owner
        mode = stat.S_IMODE(os.stat(server.credentials_file).st_mode)
        assert mode == 0o600
        assert "password=***" in repr(creds) and creds.password not in repr(creds)
        cnf = server.cnf.read_text()
        assert "bind-address=127.0.0.1" in cnf and "max_allowed_packet=1G" in cnf
        # a second up reuses the running server
        assert server.up() == creds and server.pid() == pid
        # it serves the app user over TCP on 127.0.0.1 with the settings the pipeline needs
        import pymysql

        conn = pymysql.connect(host=creds.host, port=creds.port, user=creds.user, password=creds.password)
        with conn.cursor() as cur:
            cur.execute("SELECT @@max_allowed_packet, @@character_set_server")
            assert cur.fetchone() == (1 << 30, "utf8mb4")
        conn.close()
        assert server.down() is True and not server.is_running()
        assert server.down() is False
        # a stale pid file (a server that died) does not stop the next start, and the data are kept
        server.pidfile.write_text("999999\n")
        assert not server.is_running()
        again = server.up()
        assert again.port == creds.port and server.is_running() and server.pid() != 999999
    finally:
        server.down()


@mysql_only
def test_status_never_shows_the_password(tmp_path, monkeypatch, capsys):
    from neural_reg.cli import main

    monkeypatch.setenv("NEURALREG_HOME", str(tmp_path))
    monkeypatch.delenv("DJ_HOST", raising=False)
    try:
        assert main(["db", "up"]) == 0
        assert main(["db", "status"]) == 0
        password = json.loads((tmp_path / "mysql" / "credentials.json").read_text())["password"]
        out = capsys.readouterr().out
        assert "running" in out and password not in out
        assert main(["db", "down"]) == 0
        assert "stopped" in capsys.readouterr().out
    finally:
        PrivateServer(tmp_path).down()


# ---- locked down: no account without a password, no files outside the server's folder --------------------------
DENIED = {1044, 1045, 1130, 1698, 3118, 4151}  # access denied, host not allowed, account locked


def _stored(server):
    return json.loads(server.credentials_file.read_text())


def _root(server):
    import pymysql

    return pymysql.connect(unix_socket=str(server.socket), user="root", password=_stored(server)["root_password"],
                           autocommit=True)


def _app(creds):
    import pymysql

    return pymysql.connect(host=creds.host, port=creds.port, user=creds.user, password=creds.password,
                           autocommit=True)


def _accounts(server):
    conn = _root(server)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT User, Host FROM mysql.user")
        return [(str(u), str(h)) for u, h in cur.fetchall()]


def assert_locked_down(server, creds):
    import pymysql

    accounts = _accounts(server)
    assert ("root", "localhost") in accounts and not [a for a in accounts if a[0] == ""]
    assert [host for user, host in accounts if user == "root"] == ["localhost"]
    for user, host in accounts:  # every user@host row, with an empty password, over TCP and over the socket
        for how in ({"host": "127.0.0.1", "port": creds.port}, {"unix_socket": str(server.socket)}):
            with pytest.raises(pymysql.err.OperationalError) as info:
                pymysql.connect(user=user, password="", connect_timeout=5, **how).close()
            assert info.value.args[0] in DENIED, (user, host, how, info.value.args)
    for conn in (_app(creds), _root(server)):  # not the app account, not even root, writes a file in /tmp
        with conn, conn.cursor() as cur:
            cur.execute("SELECT @@secure_file_priv, @@bind_address, @@local_infile")
            file_dir, bind, local_infile = cur.fetchone()
            assert os.path.realpath(file_dir) == os.path.realpath(server.files) and bind == "127.0.0.1"
            assert int(local_infile) == 0
            target = f"/tmp/neural-reg-outfile-{secrets.token_hex(4)}"
            with pytest.raises(pymysql.err.MySQLError) as info:
                cur.execute(f"SELECT 'x' INTO OUTFILE '{target}'")
            assert info.value.args[0] in (1045, 1227, 1290), info.value.args  # no FILE privilege, secure_file_priv
            assert not os.path.exists(target)


@pytest.fixture(scope="module")
def fresh_server(tmp_path_factory):
    server = PrivateServer(tmp_path_factory.mktemp("fresh"))
    creds = server.up()
    yield server, creds
    server.down()


@mysql_only
def test_a_new_server_is_locked_down(fresh_server):
    server, creds = fresh_server
    assert_locked_down(server, creds)
    assert server.status()["locked_down"] and not server.outdated()


def _make_it_look_old(server):
    """What the previous version left: mariadb-install-db's root accounts without a password, an anonymous
    account, FILE for the app account, a my.cnf without secure-file-priv, no lock-down mark."""
    import socket

    conn = _root(server)
    with conn, conn.cursor() as cur:
        for host in ("127.0.0.1", "::1", socket.gethostname()):
            cur.execute(f"CREATE USER IF NOT EXISTS 'root'@'{host}'")
            cur.execute(f"GRANT ALL PRIVILEGES ON *.* TO 'root'@'{host}' WITH GRANT OPTION")
        cur.execute("CREATE USER IF NOT EXISTS ''@'localhost'")
        cur.execute(f"GRANT FILE ON *.* TO '{APP_USER}'@'127.0.0.1'")
    stored = _stored(server)
    stored.pop("lockdown")
    server.credentials_file.write_text(json.dumps(stored))
    server.cnf.write_text("".join(line + "\n" for line in server.cnf.read_text().splitlines()
                                  if not line.startswith(("secure-file-priv", "local-infile"))))


def _start_as_is(server):
    """Start the server on its my.cnf as it is (as the previous version's `db up` did)."""
    import subprocess

    with open(server.log, "ab") as log:
        subprocess.Popen([str(find_server_binary()), f"--defaults-file={server.cnf}"], stdout=log, stderr=log,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    server._wait_ready(60)


@mysql_only
def test_a_server_from_an_older_version_is_locked_down_on_its_next_up(fresh_server, monkeypatch, capsys):
    import pymysql

    from neural_reg.cli import main

    server, creds = fresh_server
    # the previous version's server, running: its root accounts without a password let anyone in
    _make_it_look_old(server)
    server.down()
    _start_as_is(server)
    pid = server.pid()
    assert server.outdated()
    pymysql.connect(host="127.0.0.1", port=creds.port, user="root", password="").close()  # the audit's way in
    # a connection's up() locks the accounts down at once, without a restart ...
    assert server.up() == creds
    assert server.pid() == pid and ("root", "127.0.0.1") not in _accounts(server)
    with pytest.raises(pymysql.err.OperationalError) as info:
        pymysql.connect(host="127.0.0.1", port=creds.port, user="root", password="").close()
    assert info.value.args[0] in DENIED
    # ... and `neural-reg db up` restarts it (as a stopped one starts) with this version's settings
    monkeypatch.setenv("NEURALREG_HOME", str(server.root.parent))
    for name in ("DJ_HOST", "DJ_USER", "DJ_PASS", "DJ_PORT", "NEURALREG_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    assert main(["db", "up"]) == 0
    assert "database ready" in capsys.readouterr().out
    assert server.pid() != pid and not server.outdated()
    assert_locked_down(server, creds)


@mysql_only
def test_db_up_checks_that_it_can_log_in(fresh_server, monkeypatch, capsys):
    from neural_reg.cli import main
    from neural_reg.database import DatabaseError, connect
    from neural_reg.settings import load_settings

    server, creds = fresh_server
    monkeypatch.setenv("DJ_HOST", f"127.0.0.1:{creds.port}")
    monkeypatch.setenv("DJ_USER", creds.user)
    monkeypatch.setenv("DJ_PASS", "not-the-password-4711")
    assert main(["db", "up"]) == 2
    captured = capsys.readouterr()
    assert "database ready" not in captured.out
    assert "refused the password" in captured.err and "not-the-password-4711" not in captured.err
    with pytest.raises(DatabaseError) as info:  # a connection says the same, not a raw driver error
        connect(load_settings())
    assert "refused the password" in str(info.value) and "not-the-password-4711" not in str(info.value)
    monkeypatch.setenv("DJ_PASS", creds.password)
    assert main(["db", "up"]) == 0
    assert "database ready" in capsys.readouterr().out
    monkeypatch.setenv("DJ_HOST", "127.0.0.1:1")  # nothing listens there
    assert main(["db", "up"]) == 2
    assert "cannot reach" in capsys.readouterr().err


@mysql_only
def test_check_packet_size_agrees_with_the_server(fresh_server):
    import pymysql

    from neural_reg.database import DatabaseError, check_packet_size, packet_size_needed

    server, creds = fresh_server
    limit = 1 << 20
    root = _root(server)
    with root, root.cursor() as cur:
        cur.execute("CREATE DATABASE IF NOT EXISTS packet_check")
        cur.execute("CREATE TABLE IF NOT EXISTS packet_check.t (id INT, data LONGBLOB)")
        cur.execute(f"SET GLOBAL max_allowed_packet={limit}")
        try:
            conn = _app(creds)  # a new connection takes the new value
            fits = (limit - packet_size_needed(0)) // 2
            assert check_packet_size(conn, fits, "fits") == limit
            conn.cursor().execute("INSERT INTO packet_check.t VALUES (1, %s)", (bytes(fits),))  # the server takes it
            too_big = limit // 2
            with pytest.raises(DatabaseError) as info:
                check_packet_size(conn, too_big, "too big")
            assert "max_allowed_packet" in str(info.value) and f"({limit} bytes)" in str(info.value)
            with pytest.raises(pymysql.err.MySQLError):  # and so does the server
                conn.cursor().execute("INSERT INTO packet_check.t VALUES (2, %s)", (bytes(too_big),))
        finally:
            cur.execute(f"SET GLOBAL max_allowed_packet={1 << 30}")
            cur.execute("DROP DATABASE packet_check")


# ---- the private PostgreSQL ------------------------------------------------------------------------------------
@contextlib.contextmanager
def _reachable_home():
    """A fresh home the postgres system account can enter (pytest's tmp_path sits in a mode-0700 folder of root's,
    which PostgreSQL, never running as root, cannot reach); removed afterwards."""
    home = Path(tempfile.mkdtemp(prefix="neuralreg-pg-test-"))
    home.chmod(0o711)
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def pg_home():
    with _reachable_home() as home:
        yield home


@pytest.fixture(scope="module")
def fresh_postgres():
    with _reachable_home() as home:
        server = PrivatePostgres(home)
        creds = server.up()
        yield server, creds
        server.down()


def _pg(server_or_host, port, user, password, **kw):
    import psycopg2

    host = str(server_or_host.socket_dir) if isinstance(server_or_host, PrivatePostgres) else server_or_host
    conn = psycopg2.connect(host=host, port=port, user=user, password=password, connect_timeout=5, **kw)
    conn.autocommit = True
    return conn


@postgres_only
def test_postgres_up_reuse_stale_pid_and_down(pg_home):
    server = PrivatePostgres(pg_home)
    try:
        creds = server.up()
        pid = server.pid()
        assert server.is_running() and creds.backend == "postgresql" and creds.database == "neuralreg"
        assert stat.S_IMODE(os.stat(server.credentials_file).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(server.root).st_mode) == 0o700
        assert "password=***" in repr(creds) and creds.password not in repr(creds)
        assert "listen_addresses = '127.0.0.1'" in server.conf.read_text()
        assert server.up() == creds and server.pid() == pid  # a second up reuses the running server
        conn = _pg(creds.host, creds.port, creds.user, creds.password, dbname=creds.database)
        with conn, conn.cursor() as cur:
            cur.execute("SELECT current_user, current_database(), rolsuper, rolcreaterole FROM pg_roles "
                        "WHERE rolname = current_user")
            assert cur.fetchone() == (APP_USER, "neuralreg", False, True)
        conn.close()
        assert server.down() is True and not server.is_running()
        assert server.down() is False
        server.pidfile.write_text("999999\n")  # a stale pid file: the next start is not stopped by it
        assert not server.is_running()
        again = server.up()
        assert again == creds and server.is_running() and server.pid() != 999999
    finally:
        server.down()


@postgres_only
def test_postgres_is_locked_down(fresh_postgres):
    import psycopg2

    server, creds = fresh_postgres
    stored = _stored(server)
    conn = _pg(server, creds.port, "postgres", stored["superuser_password"], dbname="postgres")
    with conn, conn.cursor() as cur:
        cur.execute("SELECT rolname FROM pg_roles WHERE rolcanlogin")
        logins = sorted(r[0] for r in cur.fetchall())
        cur.execute("SHOW listen_addresses")
        assert cur.fetchone()[0] == "127.0.0.1"
        cur.execute("SELECT pg_backend_pid()")
        backend_pid = cur.fetchone()[0]
        if os.geteuid() == 0:  # PostgreSQL never runs as root: here as the postgres system account (the backend
            # serving this connection exits when it closes, so look at it now)
            assert os.stat(f"/proc/{backend_pid}").st_uid != 0 and os.stat(server.datadir).st_uid != 0
    conn.close()
    assert logins == sorted([APP_USER, "postgres"])
    for user in logins:  # no way in without the password, over TCP or the socket
        for host in ("127.0.0.1", server):
            with pytest.raises(psycopg2.OperationalError, match="password authentication failed|no password"):
                _pg(host, creds.port, user, "", dbname="postgres").close()
    app = _pg(creds.host, creds.port, creds.user, creds.password, dbname=creds.database)
    with app, app.cursor() as cur:  # the app account runs no program and reads no server file
        for sql in ("COPY (SELECT 1) TO PROGRAM 'true'", "SELECT pg_read_file('/etc/passwd')"):
            with pytest.raises(psycopg2.Error) as info:
                cur.execute(sql)
            assert info.value.pgcode == "42501", (sql, info.value.pgcode)
            app.rollback()  # `with app` opened a transaction, which the refused statement aborted
    app.close()
    log = server.log.read_text(errors="replace")
    assert creds.password not in log and stored["superuser_password"] not in log


@postgres_only
def test_postgres_db_up_status_down_by_the_command_line(pg_home, monkeypatch, capsys):
    from neural_reg.cli import main

    monkeypatch.setenv("NEURALREG_HOME", str(pg_home))
    for name in ("DJ_HOST", "DJ_USER", "DJ_PASS", "DJ_PORT", "DJ_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    try:
        assert main(["db", "up", "--backend", "postgresql"]) == 0
        captured = capsys.readouterr()
        assert "database ready" in captured.out and "PostgreSQL 1" in captured.out and "private postgresql" in \
            captured.out
        assert "DJ_BACKEND=postgresql" in captured.err  # the other commands follow the settings: says how
        assert main(["db", "status", "--backend", "postgresql"]) == 0
        password = _stored(PrivatePostgres(pg_home))["password"]
        out = capsys.readouterr().out
        assert "private postgresql server: running" in out and password not in out
        assert main(["db", "down", "--backend", "postgresql"]) == 0
        assert "stopped" in capsys.readouterr().out
    finally:
        PrivatePostgres(pg_home).down()


@postgres_only
def test_postgres_db_up_checks_that_it_can_log_in(fresh_postgres, monkeypatch, capsys):
    from neural_reg.cli import main
    from neural_reg.database import DatabaseError, connect

    server, creds = fresh_postgres
    monkeypatch.setenv("DJ_BACKEND", "postgresql")
    monkeypatch.setenv("DJ_HOST", f"127.0.0.1:{creds.port}")
    monkeypatch.setenv("DJ_USER", creds.user)
    monkeypatch.setenv("DJ_DATABASE_NAME", creds.database)
    monkeypatch.setenv("DJ_PASS", "not-the-password-4711")
    assert main(["db", "up"]) == 2
    captured = capsys.readouterr()
    assert "refused the password" in captured.err and "not-the-password-4711" not in captured.err
    with pytest.raises(DatabaseError) as info:
        connect(load_settings())
    assert "refused the password" in str(info.value) and "not-the-password-4711" not in str(info.value)
    monkeypatch.setenv("DJ_PASS", creds.password)
    assert main(["db", "up"]) == 0
    assert "database ready" in capsys.readouterr().out
    monkeypatch.setenv("DJ_DATABASE_NAME", "no_such_database")
    assert main(["db", "up"]) == 2
    assert "does not exist" in capsys.readouterr().err
    monkeypatch.setenv("DJ_HOST", "127.0.0.1:1")
    assert main(["db", "up"]) == 2
    assert "cannot reach" in capsys.readouterr().err


@postgres_only
def test_check_packet_size_on_postgres(fresh_postgres):
    from neural_reg.database import POSTGRES_STATEMENT_CAP, DatabaseError, check_packet_size

    server, creds = fresh_postgres
    conn = _pg(creds.host, creds.port, creds.user, creds.password, dbname=creds.database)
    try:
        assert check_packet_size(conn, 200 << 20, "a paper-size block") == POSTGRES_STATEMENT_CAP
        with pytest.raises(DatabaseError, match="at most 1 GB in one statement.*smaller pieces"):
            check_packet_size(conn, 600 << 20, "too big")
    finally:
        conn.close()
