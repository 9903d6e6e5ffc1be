"""A database that starts itself: a shared server when one is configured, else a private one.

- If a shared server is configured (``DJ_HOST``, or ``database.host`` in the config file), that server is used and
  nothing is started.
- Otherwise a private MySQL-family server (MariaDB or MySQL binaries found on the machine) runs under
  ``<home>/mysql``: bound to 127.0.0.1 on a free port, ``max_allowed_packet`` 1G, utf8mb4, with generated
  credentials stored in ``<home>/mysql/credentials.json`` (mode 0600). ``up`` is idempotent: a running server is
  reused, a stale pid file (a server that died) is cleaned up and the server restarted on the same data.
- With neither, the error says how to get one (the apt package, or ``docker compose up -d db``).

Passwords are never printed or put in error messages.
"""

from __future__ import annotations

from pipeline.errors import NeuralRegError

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from .settings import Settings, load_settings

APP_USER = "neuralreg"
SERVER_OPTIONS = {
    "bind-address": "127.0.0.1",
    "max_allowed_packet": "1G",
    "character-set-server": "utf8mb4",
    "collation-server": "utf8mb4_bin",
    "innodb_buffer_pool_size": "256M",
    "innodb_log_file_size": "512M",  # a paper-size scan's responses are one 200 MB row
    "skip-name-resolve": "1",
}
HOW_TO_GET_A_SERVER = (
    "No database server is configured and no MySQL/MariaDB server binary was found on this machine.\n"
    "Fix, one of:\n"
    "  - Debian/Ubuntu: sudo apt-get install mariadb-server   (neural-reg then starts a private server itself)\n"
    "  - Docker:        docker compose up -d db   then  export DJ_HOST=127.0.0.1 DJ_USER=root DJ_PASS=...\n"
    "  - a lab server:  export DJ_HOST=db.your.lab DJ_USER=you DJ_PASS=...  (or neural-reg.json, see README)"
)


class DatabaseError(NeuralRegError):
    """The database cannot be reached or started; the message says why and how to fix it."""


@dataclass(frozen=True)
class Credentials:
    host: str
    port: int
    user: str
    password: str

    def __repr__(self) -> str:  # never show the password
        return f"Credentials(host={self.host!r}, port={self.port}, user={self.user!r}, password=***)"


def find_server_binary() -> Path | None:
    """The mysqld / mariadbd binary on this machine, or None."""
    for name in ("mariadbd", "mysqld"):
        found = shutil.which(name) or next(
            (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/local/sbin") / name) if p.exists()), None)
        if found:
            return Path(found)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as dead
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only (mode 0600 from the start, never world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


class PrivateServer:
    """A MySQL-family server of this project's own, its data under ``<home>/mysql``."""

    def __init__(self, home: Path):
        self.root = Path(home) / "mysql"
        self.datadir = self.root / "data"
        self.socket = self.root / "mysqld.sock"
        self.pidfile = self.root / "mysqld.pid"
        self.cnf = self.root / "my.cnf"
        self.credentials_file = self.root / "credentials.json"
        self.log = self.root / "mysqld.log"

    # -- state -------------------------------------------------------------------------------------------------
    def pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def is_running(self) -> bool:
        pid = self.pid()
        return pid is not None and _pid_alive(pid)

    def credentials(self) -> Credentials:
        if not self.credentials_file.exists():
            raise DatabaseError(f"{self.credentials_file} is missing: the private server was never set up. "
                                "Fix: run `neural-reg db up`.")
        data = json.loads(self.credentials_file.read_text())
        return Credentials("127.0.0.1", int(data["port"]), data["user"], data["password"])

    def status(self) -> dict:
        info = {"kind": "private", "data": str(self.datadir), "running": self.is_running()}
        if self.credentials_file.exists():
            info["port"] = json.loads(self.credentials_file.read_text())["port"]
        return info

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def up(self, timeout: float = 60.0) -> Credentials:
        """Start the server if it is not running (initialising it on first use); return its credentials."""
        if self.is_running():
            return self.credentials()
        binary = find_server_binary()
        if binary is None:
            raise DatabaseError(HOW_TO_GET_A_SERVER)
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        for stale in (self.pidfile, self.socket):  # left by a server that died
            stale.unlink(missing_ok=True)
        first_start = not (self.datadir / "mysql").exists()
        if first_start:
            port = _free_port()
            self._write_cnf(port)
            self._initialise(binary)
        else:
            port = self._cnf_port()
        with open(self.log, "ab") as log:
            subprocess.Popen([str(binary), f"--defaults-file={self.cnf}"], stdout=log, stderr=log,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        self._wait_ready(timeout)
        if first_start:
            self._create_app_user(port)
        return self.credentials()

    def down(self, timeout: float = 60.0) -> bool:
        """Stop the server; return whether one was running."""
        pid = self.pid()
        if pid is None or not _pid_alive(pid):
            self.pidfile.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _pid_alive(pid):
            if time.monotonic() > deadline:
                raise DatabaseError(f"the private server (pid {pid}) did not stop within {timeout:.0f} s; "
                                    f"see {self.log}")
            time.sleep(0.2)
        self.pidfile.unlink(missing_ok=True)
        return True

    # -- helpers -----------------------------------------------------------------------------------------------
    def _write_cnf(self, port: int) -> None:
        lines = ["[mysqld]", f"datadir={self.datadir}", f"socket={self.socket}", f"pid-file={self.pidfile}",
                 f"port={port}", f"log-error={self.log}"]
        lines += [f"{k}={v}" for k, v in SERVER_OPTIONS.items()]
        if os.geteuid() == 0:
            lines.append("user=root")  # mysqld refuses to run as root unless told to
        self.cnf.write_text("\n".join(lines) + "\n")

    def _cnf_port(self) -> int:
        for line in self.cnf.read_text().splitlines():
            if line.startswith("port="):
                return int(line.split("=", 1)[1])
        raise DatabaseError(f"{self.cnf}: no 'port=' line. Fix: `neural-reg db down` and remove {self.root}.")

    def _initialise(self, binary: Path) -> None:
        self.datadir.mkdir(parents=True, exist_ok=True)
        installer = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
        if installer and ("mariadb" in binary.name or _is_mariadb(binary)):
            cmd = [installer, f"--defaults-file={self.cnf}", "--auth-root-authentication-method=normal",
                   "--skip-test-db"]
        else:  # MySQL 5.7+ / 8
            cmd = [str(binary), f"--defaults-file={self.cnf}", "--initialize-insecure"]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            shutil.rmtree(self.datadir, ignore_errors=True)  # nothing half-initialised stays behind
            raise DatabaseError(f"initialising the private server failed ({' '.join(cmd[:1])}):\n"
                                f"{result.stderr[-2000:]}")

    def _wait_ready(self, timeout: float) -> None:
        import pymysql

        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.socket.exists():
                try:
                    pymysql.connect(unix_socket=str(self.socket), user="root", password="",
                                    connect_timeout=2).close()
                    return
                except pymysql.err.OperationalError as err:
                    if err.args and err.args[0] == 1045:  # access denied: up, with root's password set
                        return
                    last = err
            time.sleep(0.25)
        tail = self.log.read_text()[-1500:] if self.log.exists() else ""
        raise DatabaseError(f"the private server did not start within {timeout:.0f} s ({last}). Log {self.log}:\n"
                            f"{tail}")

    def _create_app_user(self, port: int) -> None:
        import pymysql

        password = secrets.token_urlsafe(24)
        root_password = secrets.token_urlsafe(24)
        conn = pymysql.connect(unix_socket=str(self.socket), user="root", password="")
        try:
            with conn.cursor() as cur:
                for host in ("127.0.0.1", "localhost"):
                    cur.execute(f"CREATE USER IF NOT EXISTS '{APP_USER}'@'{host}' IDENTIFIED BY %s", (password,))
                    cur.execute(f"GRANT ALL PRIVILEGES ON *.* TO '{APP_USER}'@'{host}' WITH GRANT OPTION")
                cur.execute("ALTER USER 'root'@'localhost' IDENTIFIED BY %s", (root_password,))
                cur.execute("FLUSH PRIVILEGES")
        finally:
            conn.close()
        _write_private(self.credentials_file, json.dumps(
            {"user": APP_USER, "password": password, "port": port, "root_password": root_password}))


def _is_mariadb(binary: Path) -> bool:
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True).stdout
    return "mariadb" in out.lower()


def shared_credentials(settings: Settings) -> Credentials | None:
    """Credentials of a configured shared server, or None when none is configured."""
    if not settings.host:
        return None
    password = os.environ.get("DJ_PASS")
    if password is None and settings.password_file:
        password = settings.password_file.read_text().strip()
    if not settings.user or password is None:
        raise DatabaseError(f"a shared server is configured (host {settings.host}) but the user or password is "
                            "not. Fix: export DJ_USER and DJ_PASS (or set database.user and "
                            "database.password_file in neural-reg.json).")
    host, _, port = settings.host.partition(":")
    return Credentials(host, int(port or settings.port or 3306), settings.user, password)


def server_up(settings: Settings | None = None) -> Credentials:
    """Credentials of the server to use, starting the private one if needed."""
    settings = settings or load_settings()
    return shared_credentials(settings) or PrivateServer(settings.home).up()


def connect(settings: Settings | None = None, start: bool = True):
    """A DataJoint connection to the configured (or private) server; sets dj.config accordingly."""
    settings = settings or load_settings()
    creds = shared_credentials(settings)
    if creds is None:
        server = PrivateServer(settings.home)
        creds = server.up() if start else server.credentials()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # datajoint warns about a missing datajoint.json and about MariaDB
        import datajoint as dj

        dj.config["database.host"] = creds.host
        dj.config["database.port"] = creds.port
        dj.config["database.user"] = creds.user
        dj.config["database.password"] = creds.password
        dj.config["display.limit"] = 12
        # job tables declare with native integer types and DataJoint warns about each; nothing to act on
        dj.logger.setLevel("ERROR")
        return dj.conn(reset=True)
