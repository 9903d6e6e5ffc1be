"""The private server: starts itself, is reused, survives a stale pid file, stops; never shows its password."""

import json
import os
import secrets
import stat

import pytest

from neural_reg.database import APP_USER, PrivateServer, find_server_binary

pytestmark = pytest.mark.skipif(find_server_binary() is None, reason="no MySQL/MariaDB server binary here")


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
