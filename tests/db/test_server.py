"""The private server: starts itself, is reused, survives a stale pid file, stops; never shows its password."""

import json
import os
import stat

import pytest

from neural_reg.database import PrivateServer, find_server_binary

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
