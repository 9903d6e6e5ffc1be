"""A database that starts itself: a shared server when one is configured, else a private one.

- If a shared server is configured (``DJ_HOST``, ``database.host`` in neural-reg.json, or DataJoint's own
  ``datajoint.json``), that server is used and nothing is started.
- Otherwise a private server of the configured backend (``DJ_BACKEND`` / ``database.backend``, or
  ``neural-reg db up --backend``) starts: for ``postgresql`` a private PostgreSQL (:class:`PrivatePostgres`, the
  machine's Debian ``postgresql`` binaries) under ``<home>/postgres``; for ``mysql`` (the default) a private
  MySQL-family server (MariaDB or MySQL binaries found on the machine) runs under
  ``<home>/mysql``: bound to 127.0.0.1 on a free port, ``max_allowed_packet`` 1G, utf8mb4, with generated
  credentials stored in ``<home>/mysql/credentials.json`` (mode 0600). ``up`` is idempotent: a running server is
  reused, a stale pid file (a server that died) is cleaned up and the server restarted on the same data.
- The private server is locked down on every start (also one initialised by an older version): anonymous
  accounts and every ``root`` account but ``root@localhost`` are dropped, ``root@localhost`` has a generated
  password, any other account without a password is locked, ``secure_file_priv`` confines ``INTO OUTFILE`` /
  ``LOAD DATA`` to ``<home>/mysql/files``, ``local_infile`` is off and the app account has no FILE privilege.
- With neither, the error says how to get one (the apt package, or ``docker compose up -d db``).

Passwords are never printed or put in error messages.
"""

from __future__ import annotations

from pipeline.errors import NeuralRegError

import contextlib
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

from .settings import Settings, datajoint_password, load_settings

APP_USER = "neuralreg"
SERVER_OPTIONS = {
    "bind-address": "127.0.0.1",
    "max_allowed_packet": "1G",
    "character-set-server": "utf8mb4",
    "collation-server": "utf8mb4_bin",
    "innodb_buffer_pool_size": "256M",
    "innodb_log_file_size": "512M",  # a paper-size scan's responses are one 200 MB row
    "skip-name-resolve": "1",
    "local-infile": "0",  # no LOAD DATA LOCAL
}
# Bumped when the lock-down of the private server changes: a server locked down by an older version (or by none)
# is locked down again on its next start (and its accounts at once, by the next `up`, when it is running).
LOCKDOWN_VERSION = 1
# plugins that authenticate by password: an account of one with an empty password is locked
PASSWORD_PLUGINS = {"", "mysql_native_password", "caching_sha2_password", "sha256_password", "mysql_old_password",
                    "ed25519", "parsec"}
ACCESS_DENIED = {1044, 1045, 1698, 1130, 3118, 4151}  # denied, host not allowed, account locked (MySQL, MariaDB)
HOW_TO_GET_A_SERVER = (
    "No database server is configured and no MySQL/MariaDB server binary was found on this machine.\n"
    "Fix, one of:\n"
    "  - Debian/Ubuntu: sudo apt-get install mariadb-server   (neural-reg then starts a private server itself)\n"
    "  - Docker:        docker compose up -d db   then  export DJ_HOST=127.0.0.1 DJ_USER=root DJ_PASS=...\n"
    "  - a lab server:  export DJ_HOST=db.your.lab DJ_USER=you DJ_PASS=...  (or neural-reg.json, see README)"
)
HOW_TO_GET_POSTGRES = (
    "No database server is configured and no PostgreSQL server binary (postgres, initdb, pg_ctl) was found on this "
    "machine.\nFix, one of:\n"
    "  - Debian/Ubuntu: sudo apt-get install postgresql   (neural-reg then starts a private server itself)\n"
    "  - the MySQL-family backend instead: unset DJ_BACKEND (or `neural-reg db up --backend mysql`)\n"
    "  - a lab server:  export DJ_BACKEND=postgresql DJ_HOST=db.your.lab DJ_USER=you DJ_PASS=..."
)


class DatabaseError(NeuralRegError):
    """The database cannot be reached or started; the message says why and how to fix it."""


@dataclass(frozen=True)
class Credentials:
    host: str
    port: int
    user: str
    password: str
    backend: str = "mysql"  # DataJoint's database.backend: "mysql" (MySQL, MariaDB) or "postgresql"
    database: str | None = None  # PostgreSQL: the database holding the schemas (DataJoint's database.name)

    def __repr__(self) -> str:  # never show the password
        return (f"Credentials(host={self.host!r}, port={self.port}, user={self.user!r}, password=***, "
                f"backend={self.backend!r})")


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


def pid_alive(pid: int) -> bool:
    """Whether a process of this machine is alive (a zombie, e.g. a child of ours not yet reaped, counts as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only (mode 0600 from the start, never world-readable), atomically: a
    concurrent reader sees the old content or the new, never a half-written file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _quote_account(user: str, host: str) -> str:
    """'user'@'host' for an account statement (names from mysql.user or checked patterns; quotes escaped)."""
    def q(text: str) -> str:
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return f"{q(user)}@{q(host)}"


def scrub(text: str, *secrets_: str | None) -> str:
    """``text`` with every given secret replaced by ***: for error messages that might echo one."""
    for secret in secrets_:
        if secret:
            text = text.replace(secret, "***")
    return text


class _ServerFiles:
    """What both private servers share: a pid file, a JSON credentials file, and the checks on them."""

    pidfile: Path
    credentials_file: Path
    root: Path
    UP_COMMAND = "neural-reg db up"

    def _pid_text(self, text: str) -> int:  # the pid file's first line is the pid (PostgreSQL adds more lines)
        return int(text.splitlines()[0].strip())

    def pid(self) -> int | None:
        try:
            return self._pid_text(self.pidfile.read_text())
        except (OSError, ValueError, IndexError):
            return None

    def is_running(self) -> bool:
        pid = self.pid()
        return pid is not None and pid_alive(pid)

    def _stored(self) -> dict:
        try:
            return json.loads(self.credentials_file.read_text())
        except (OSError, ValueError):
            return {}

    def _checked_credentials(self) -> dict:
        """The stored credentials, checked: an error naming the file and the fix when missing or damaged."""
        if not self.credentials_file.exists():
            raise DatabaseError(f"{self.credentials_file} is missing: the private server was never set up. "
                                f"Fix: run `{self.UP_COMMAND}`.")
        data = self._stored()
        if not {"user", "password", "port"} <= data.keys():
            raise DatabaseError(f"{self.credentials_file} is damaged (not the JSON neural-reg wrote). Fix: "
                                f"`neural-reg db down`, then move {self.root} away and run `{self.UP_COMMAND}` (a "
                                "new, empty server).")
        return data


class PrivateServer(_ServerFiles):
    """A MySQL-family server of this project's own, its data under ``<home>/mysql``."""

    def __init__(self, home: Path):
        self.root = Path(home) / "mysql"
        self.datadir = self.root / "data"
        self.files = self.root / "files"  # secure_file_priv: the only directory the server reads or writes files in
        self.socket = self.root / "mysqld.sock"
        self.pidfile = self.root / "mysqld.pid"
        self.cnf = self.root / "my.cnf"
        self.credentials_file = self.root / "credentials.json"
        self.log = self.root / "mysqld.log"

    # -- state -------------------------------------------------------------------------------------------------
    def credentials(self) -> Credentials:
        data = self._checked_credentials()
        return Credentials("127.0.0.1", int(data["port"]), data["user"], data["password"])

    def status(self) -> dict:
        info = {"kind": "private", "data": str(self.datadir), "running": self.is_running()}
        if self.credentials_file.exists():
            info["port"] = self._stored().get("port")
        info["locked_down"] = self._stored().get("lockdown", 0) >= LOCKDOWN_VERSION
        return info

    def outdated(self) -> bool:
        """Whether the server was set up or last started by an older version: not locked down as this one locks
        down, or its my.cnf differs from what this version writes."""
        if self._stored().get("lockdown", 0) < LOCKDOWN_VERSION:
            return True
        try:
            return self.cnf.read_text() != self._cnf_text(self._cnf_port())
        except (OSError, DatabaseError):
            return True

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def up(self, timeout: float = 60.0, restart_outdated: bool = False) -> Credentials:
        """Start the server if it is not running (initialising it on first use); return its credentials.

        A running server that an older version set up has its accounts locked down at once; its new settings
        (``secure_file_priv``) need a restart, which ``restart_outdated=True`` (``neural-reg db up``) does.
        """
        if self.is_running():
            if not self.outdated():
                return self.credentials()
            if not restart_outdated:
                if self._stored().get("lockdown", 0) < LOCKDOWN_VERSION:
                    self._lock_down()  # the accounts now; the server's settings on its next start
                return self.credentials()
            self.down(timeout)
        binary = find_server_binary()
        if binary is None:
            raise DatabaseError(HOW_TO_GET_A_SERVER)
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        self.files.mkdir(mode=0o700, exist_ok=True)
        for stale in (self.pidfile, self.socket):  # left by a server that died
            stale.unlink(missing_ok=True)
        first_start = not (self.datadir / "mysql").exists()
        port = _free_port() if first_start else self._cnf_port()
        self._write_cnf(port)  # every start: a server set up by an older version gets this version's settings
        if first_start:
            self._initialise(binary)
        with open(self.log, "ab") as log:
            subprocess.Popen([str(binary), f"--defaults-file={self.cnf}"], stdout=log, stderr=log,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        self._wait_ready(timeout)
        if first_start:
            self._create_app_user(port)
        self._lock_down()
        return self.credentials()

    def down(self, timeout: float = 60.0) -> bool:
        """Stop the server; return whether one was running."""
        pid = self.pid()
        if pid is None or not pid_alive(pid):
            self.pidfile.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_alive(pid):
            if time.monotonic() > deadline:
                raise DatabaseError(f"the private server (pid {pid}) did not stop within {timeout:.0f} s; "
                                    f"see {self.log}")
            time.sleep(0.2)
        self.pidfile.unlink(missing_ok=True)
        return True

    # -- helpers -----------------------------------------------------------------------------------------------
    def _cnf_text(self, port: int) -> str:
        lines = ["[mysqld]", f"datadir={self.datadir}", f"socket={self.socket}", f"pid-file={self.pidfile}",
                 f"port={port}", f"log-error={self.log}", f"secure-file-priv={self.files}"]
        lines += [f"{k}={v}" for k, v in SERVER_OPTIONS.items()]
        if os.geteuid() == 0:
            lines.append("user=root")  # mysqld refuses to run as root unless told to
        return "\n".join(lines) + "\n"

    def _write_cnf(self, port: int) -> None:
        self.cnf.write_text(self._cnf_text(port))

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
                    if err.args and err.args[0] in ACCESS_DENIED:  # up, and root has a password
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

    def _admin_connection(self, stored: dict):
        """root (or, failing that, the app account) over the server's socket."""
        import pymysql

        attempts = [("root", stored.get("root_password")), ("root", ""), (stored.get("user"), stored.get("password"))]
        for user, password in attempts:
            if user is None or password is None:
                continue
            try:
                return pymysql.connect(unix_socket=str(self.socket), user=user, password=password,
                                       connect_timeout=10, autocommit=True)
            except pymysql.err.OperationalError as err:
                if not (err.args and err.args[0] in ACCESS_DENIED):
                    raise DatabaseError(f"the private server does not answer on {self.socket} ({err.args[0]}). "
                                        f"Fix: `neural-reg db down`, then `neural-reg db up`; see {self.log}") from None
        raise DatabaseError(f"cannot log in to the private server as root or {APP_USER} with the passwords in "
                            f"{self.credentials_file}. Fix: restore that file, or move {self.root} away and run "
                            "`neural-reg db up` (a new, empty server).")

    def _lock_down(self) -> None:
        """Leave no way in without a password and no way to write files outside ``<home>/mysql/files``.

        Idempotent, and safe while others use the server: drops anonymous accounts and every root account but
        root@localhost (mariadb-install-db also creates root@127.0.0.1, root@::1 and root@<hostname>, without
        passwords), gives root@localhost its generated password, locks any other account that has no password,
        and takes the FILE privilege from the app account.
        """
        import pymysql

        stored = self._stored()
        root_password = stored.get("root_password") or secrets.token_urlsafe(24)
        conn = self._admin_connection(stored)
        try:
            with conn.cursor(pymysql.cursors.DictCursor) as cur:
                cur.execute("SELECT * FROM mysql.user")
                accounts = cur.fetchall()
                for row in accounts:
                    user, host = _text(row["User"]), _text(row["Host"])
                    if _text(row.get("is_role", "N")) == "Y":
                        continue  # a MariaDB role: nobody logs in as it
                    account = _quote_account(user, host)
                    if user == "" or (user == "root" and host != "localhost"):
                        cur.execute(f"DROP USER IF EXISTS {account}")
                    elif user == "root":
                        cur.execute(f"ALTER USER {account} IDENTIFIED BY %s", (root_password,))
                    elif (_text(row.get("authentication_string") or "") == "" and not _text(row.get("Password") or "")
                          and _text(row.get("plugin") or "") in PASSWORD_PLUGINS):
                        cur.execute(f"ALTER USER {account} ACCOUNT LOCK")  # e.g. mariadb.sys: locked already
                for host in ("127.0.0.1", "localhost"):
                    if any(_text(r["User"]) == APP_USER and _text(r["Host"]) == host for r in accounts):
                        try:
                            cur.execute(f"REVOKE FILE ON *.* FROM {_quote_account(APP_USER, host)}")
                        except pymysql.err.MySQLError as err:
                            if not (err.args and err.args[0] in (1141, 1147)):  # not granted: nothing to revoke
                                raise
                cur.execute("FLUSH PRIVILEGES")
        except pymysql.err.MySQLError as err:
            raise DatabaseError(f"locking down the private server failed: "
                                f"{scrub(str(err), root_password, stored.get('password'))}. See {self.log}") from None
        finally:
            conn.close()
        stored = self._stored()  # re-read: written by this process or an older version, keep what it holds
        stored.update(root_password=root_password, lockdown=LOCKDOWN_VERSION)
        _write_private(self.credentials_file, json.dumps(stored))


POSTGRES_APP_DATABASE = "neuralreg"  # the private PostgreSQL's database: DataJoint's schemas are schemas in it
POSTGRES_SUPERUSER = "postgres"
POSTGRES_OPTIONS = {
    "listen_addresses": "'127.0.0.1'",
    "max_connections": "200",  # workers, their heartbeat connections, notebooks
    "shared_buffers": "128MB",
    "password_encryption": "'scram-sha-256'",
    "log_statement": "'none'",  # a CREATE ROLE ... PASSWORD never reaches the log
    "log_min_error_statement": "'panic'",  # nor does a failed statement's text (it could carry a password)
}


def find_postgres_bindir() -> Path | None:
    """The directory of the machine's PostgreSQL server binaries (postgres, initdb, pg_ctl), newest first:
    ``$PATH``, then Debian's ``/usr/lib/postgresql/<version>/bin``; None if there is none."""
    found = shutil.which("initdb")
    if found and (Path(found).parent / "postgres").exists():
        return Path(found).parent
    def version(path: Path):
        try:
            return int(path.parent.name)
        except ValueError:
            return 0
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True):
        if (candidate / "initdb").exists() and (candidate / "postgres").exists():
            return candidate
    return None


class PrivatePostgres(_ServerFiles):
    """A PostgreSQL server of this project's own, its data under ``<home>/postgres``.

    Like :class:`PrivateServer`: bound to 127.0.0.1 on a free port (and a socket in ``<home>/postgres``), every
    login by password (scram-sha-256, for the local socket too), the superuser ``postgres`` with a generated
    password, the app account ``neuralreg`` (LOGIN, CREATEROLE, owner of the database ``neuralreg`` that holds the
    schemas, no superuser: no COPY ... PROGRAM, no server files), credentials in
    ``<home>/postgres/credentials.json`` (0600). PostgreSQL refuses to run as root: run as root, the server runs
    as the ``postgres`` system account (created by the Debian package), which then owns ``<home>/postgres``.
    """

    backend = "postgresql"

    def __init__(self, home: Path):
        self.root = Path(home) / "postgres"
        self.datadir = self.root / "data"
        self.socket_dir = self.root
        self.pidfile = self.datadir / "postmaster.pid"
        self.conf = self.datadir / "neural-reg.conf"
        self.credentials_file = self.root / "credentials.json"
        self.log = self.root / "postgres.log"

    UP_COMMAND = "neural-reg db up --backend postgresql"

    # -- state -------------------------------------------------------------------------------------------------
    def credentials(self) -> Credentials:
        data = self._checked_credentials()
        return Credentials("127.0.0.1", int(data["port"]), data["user"], data["password"], backend="postgresql",
                           database=data.get("database", POSTGRES_APP_DATABASE))

    def status(self) -> dict:
        info = {"kind": "private", "backend": "postgresql", "data": str(self.datadir), "running": self.is_running(),
                "locked_down": True}
        if self.credentials_file.exists():
            info["port"] = self._stored().get("port")
        return info

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def up(self, timeout: float = 60.0, restart_outdated: bool = False) -> Credentials:
        """Start the server if it is not running (initialising it on first use); return its credentials."""
        if self.is_running():
            return self.credentials()
        bindir = find_postgres_bindir()
        if bindir is None:
            raise DatabaseError(HOW_TO_GET_POSTGRES)
        run_as = self._run_as()
        first_start = not (self.datadir / "PG_VERSION").exists()
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        if run_as is not None:
            self._check_reachable(run_as)
            os.chown(self.root, run_as.pw_uid, run_as.pw_gid)
        if not first_start:
            self.pidfile.unlink(missing_ok=True)  # left by a server that died (it is not running: checked above)
        if first_start:
            port = _free_port()
            superuser_password = secrets.token_urlsafe(24)
            self._initialise(bindir, run_as, superuser_password)
        else:
            stored = self._stored()
            port, superuser_password = int(stored["port"]), stored.get("superuser_password")
        self._write_conf(port, run_as)
        with open(self.log, "ab") as log:
            if run_as is not None:
                os.chown(self.log, run_as.pw_uid, run_as.pw_gid)
            subprocess.Popen([str(bindir / "postgres"), "-D", str(self.datadir)], stdout=log, stderr=log,
                             stdin=subprocess.DEVNULL, start_new_session=True, **self._as_user(run_as))
        self._wait_ready(timeout, port, superuser_password)
        if first_start:
            self._create_app_user(port, superuser_password)
        return self.credentials()

    def down(self, timeout: float = 60.0) -> bool:
        """Stop the server (a fast shutdown: sessions ended, nothing lost); return whether one was running."""
        pid = self.pid()
        if pid is None or not pid_alive(pid):
            return False
        os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + timeout
        while pid_alive(pid):
            if time.monotonic() > deadline:
                raise DatabaseError(f"the private PostgreSQL (pid {pid}) did not stop within {timeout:.0f} s; "
                                    f"see {self.log}")
            time.sleep(0.2)
        return True

    # -- helpers -----------------------------------------------------------------------------------------------
    @staticmethod
    def _run_as():
        """The account the server runs as: None (this one), or, for root, the ``postgres`` system account."""
        if os.geteuid() != 0:
            return None
        import pwd

        try:
            return pwd.getpwnam(POSTGRES_SUPERUSER)
        except KeyError:
            raise DatabaseError("PostgreSQL refuses to run as root, and there is no 'postgres' system account to run "
                                "it as. Fix: install Debian's postgresql package (it creates the account), or run "
                                "neural-reg as an ordinary user.") from None

    @staticmethod
    def _as_user(run_as) -> dict:
        if run_as is None:
            return {}
        return {"user": run_as.pw_uid, "group": run_as.pw_gid, "extra_groups": [],
                "env": dict(os.environ, HOME=run_as.pw_dir, USER=run_as.pw_name, LOGNAME=run_as.pw_name)}

    def _check_reachable(self, run_as) -> None:
        """Every directory above <home>/postgres must let the server's account through (x for 'others')."""
        for parent in self.root.resolve().parents:
            st = parent.stat()
            if st.st_uid == run_as.pw_uid or st.st_mode & 0o001:
                continue
            if st.st_gid == run_as.pw_gid and st.st_mode & 0o010:
                continue
            raise DatabaseError(f"the private PostgreSQL runs as the system account '{run_as.pw_name}' (PostgreSQL "
                                f"refuses to run as root), which cannot enter {parent} (mode "
                                f"{stat_mode(st.st_mode)}). Fix: chmod o+x {parent}, or set NEURALREG_HOME to a "
                                "directory it can reach.")

    def _initialise(self, bindir: Path, run_as, superuser_password: str) -> None:
        pwfile = self.root / f".pwfile.{os.getpid()}"
        _write_private(pwfile, superuser_password + "\n")
        if run_as is not None:
            os.chown(pwfile, run_as.pw_uid, run_as.pw_gid)
        cmd = [str(bindir / "initdb"), "-D", str(self.datadir), "-U", POSTGRES_SUPERUSER, f"--pwfile={pwfile}",
               "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8"]
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, **self._as_user(run_as))
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            shutil.rmtree(self.datadir, ignore_errors=True)  # nothing half-initialised stays behind
            raise DatabaseError(f"initialising the private PostgreSQL failed (initdb):\n{result.stderr[-2000:]}")
        with open(self.datadir / "postgresql.conf", "a") as conf:
            conf.write("\ninclude_if_exists = 'neural-reg.conf'  # written by neural-reg at every start\n")
        _write_private(self.credentials_file, json.dumps({"port": None, "superuser_password": superuser_password}))

    def _conf_text(self, port: int) -> str:
        lines = [f"port = {port}", f"unix_socket_directories = '{self.socket_dir}'"]
        lines += [f"{k} = {v}" for k, v in POSTGRES_OPTIONS.items()]
        return "\n".join(lines) + "\n"

    def _write_conf(self, port: int, run_as) -> None:
        self.conf.write_text(self._conf_text(port))
        if run_as is not None:
            os.chown(self.conf, run_as.pw_uid, run_as.pw_gid)
        stored = self._stored()
        stored["port"] = port
        _write_private(self.credentials_file, json.dumps(stored))

    def _connect(self, port: int, user: str, password: str, dbname: str = "postgres", timeout: float = 10):
        import psycopg2

        conn = psycopg2.connect(host=str(self.socket_dir), port=port, user=user, password=password, dbname=dbname,
                                connect_timeout=int(timeout))
        conn.autocommit = True
        return conn

    def _wait_ready(self, timeout: float, port: int, password: str | None) -> None:
        import psycopg2

        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                self._connect(port, POSTGRES_SUPERUSER, password or "", timeout=2).close()
                return
            except psycopg2.OperationalError as err:
                text = str(err)
                if "authentication failed" in text:  # up, and the password is not the one stored
                    return
                last = scrub(text.strip().splitlines()[0] if text.strip() else type(err).__name__, password)
            time.sleep(0.25)
        tail = self.log.read_text(errors="replace")[-1500:] if self.log.exists() else ""
        raise DatabaseError(f"the private PostgreSQL did not start within {timeout:.0f} s ({last}). Log {self.log}:"
                            f"\n{tail}")

    def _create_app_user(self, port: int, superuser_password: str) -> None:
        from psycopg2 import sql

        password = secrets.token_urlsafe(24)
        conn = self._connect(port, POSTGRES_SUPERUSER, superuser_password)
        try:
            with conn.cursor() as cur:
                cur.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEROLE PASSWORD %s").format(sql.Identifier(APP_USER)),
                            (password,))
                cur.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(POSTGRES_APP_DATABASE), sql.Identifier(APP_USER)))
                # nobody but its owner creates anything in it; PUBLIC keeps CONNECT (accounts log in)
                cur.execute(sql.SQL("REVOKE CREATE, TEMPORARY ON DATABASE {} FROM PUBLIC").format(
                    sql.Identifier(POSTGRES_APP_DATABASE)))
        finally:
            conn.close()
        stored = self._stored()
        stored.update(user=APP_USER, password=password, database=POSTGRES_APP_DATABASE, lockdown=LOCKDOWN_VERSION)
        _write_private(self.credentials_file, json.dumps(stored))


def stat_mode(mode: int) -> str:
    import stat

    return stat.filemode(mode)


def private_server(settings: Settings):
    """The private server of the configured backend: :class:`PrivatePostgres` or :class:`PrivateServer`."""
    return PrivatePostgres(settings.home) if settings.backend == "postgresql" else PrivateServer(settings.home)


def _text(value) -> str:
    return value.decode() if isinstance(value, (bytes, bytearray)) else str(value)


def _is_mariadb(binary: Path) -> bool:
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True).stdout
    return "mariadb" in out.lower()


def shared_credentials(settings: Settings) -> Credentials | None:
    """Credentials of a configured shared server, or None when none is configured."""
    if not settings.host:
        return None
    password = os.environ.get("DJ_PASS")
    if password is None and settings.password_file:
        try:
            password = settings.password_file.read_text().strip()
        except OSError as err:
            raise DatabaseError(f"database.password_file {settings.password_file} cannot be read "
                                f"({err.strerror or type(err).__name__}). Fix: create it (one line, the password; "
                                "chmod 600) or correct the path in neural-reg.json.") from None
    if password is None:
        password = datajoint_password(settings)  # datajoint.json's database.password, or .secrets/
    if not settings.user or password is None:
        raise DatabaseError(f"a shared server is configured (host {settings.host}) but the user or password is "
                            "not. Fix: export DJ_USER and DJ_PASS (or set database.user and "
                            "database.password_file in neural-reg.json, or DataJoint's .secrets/database.user "
                            "and .secrets/database.password beside datajoint.json).")
    host, _, port = settings.host.partition(":")
    default_port = 5432 if settings.backend == "postgresql" else 3306
    return Credentials(host, int(port or settings.port or default_port), settings.user, password,
                       backend=settings.backend,
                       database=settings.database_name or ("postgres" if settings.backend == "postgresql" else None))


def server_up(settings: Settings | None = None, restart_outdated: bool = False) -> Credentials:
    """Credentials of the server to use, starting the private one if needed."""
    settings = settings or load_settings()
    return shared_credentials(settings) or private_server(settings).up(restart_outdated=restart_outdated)


def login_failure(creds: Credentials, err: Exception) -> str:
    """What went wrong logging in with ``creds`` and the fix, as a message without the password."""
    code = err.args[0] if getattr(err, "args", None) and isinstance(err.args[0], int) else None
    where = f"{creds.user}@{creds.host}:{creds.port}"
    if creds.backend == "postgresql":
        return _postgres_login_failure(creds, err, where)
    if code in (1045, 1698):
        return (f"cannot log in as {where}: the server refused the password (error {code}). Fix: check DJ_PASS or "
                "database.password_file for this user; an admin can set a new one (`neural-reg db remove-user` "
                "and `neural-reg db add-user`, or ALTER USER ... IDENTIFIED BY).")
    if code in (3118, 4151):
        return f"cannot log in as {where}: the account is locked (error {code}). Fix: ask the database's admin."
    if code in (1044, 1130):
        return (f"cannot log in as {where}: this account may not connect from here (error {code}). Fix: ask the "
                "database's admin for an account for this host (`neural-reg db add-user NAME --host ...`).")
    if code in (2002, 2003, 2005, 2006, 2013):
        return (f"cannot reach the database server at {creds.host}:{creds.port} (error {code}). Fix: check "
                "DJ_HOST / database.host and that the server is up (`docker compose ps`, `neural-reg db up`).")
    detail = scrub(" ".join(str(a) for a in getattr(err, "args", ())) or type(err).__name__, creds.password)
    return f"cannot connect as {where}: {detail}. Fix: check the server and the settings (`neural-reg db status`)."


def _postgres_login_failure(creds: Credentials, err: Exception, where: str) -> str:
    """login_failure for PostgreSQL, whose driver (psycopg2) says what went wrong in words, not codes."""
    text = scrub(str(err).strip() or type(err).__name__, creds.password)
    first = text.splitlines()[0] if text else type(err).__name__
    if "password authentication failed" in text or "no password supplied" in text:
        return (f"cannot log in as {where}: the server refused the password. Fix: check DJ_PASS, "
                "database.password_file or .secrets/database.password for this user; an admin can set a new one "
                "(`neural-reg db remove-user` and `neural-reg db add-user`, or ALTER ROLE ... PASSWORD).")
    if "no pg_hba.conf entry" in text:
        return (f"cannot log in as {where}: the server's pg_hba.conf admits no such login from here. Fix: ask the "
                "database's admin for a pg_hba.conf line for this host and user.")
    if "database" in text and "does not exist" in text:
        return (f"cannot log in as {where}: database {creds.database!r} does not exist. Fix: set DJ_DATABASE_NAME "
                "(or database.name in neural-reg.json or datajoint.json) to the lab's database.")
    if any(w in text for w in ("could not connect", "Connection refused", "timeout expired", "could not translate")):
        return (f"cannot reach the PostgreSQL server at {creds.host}:{creds.port} ({first}). Fix: check DJ_HOST / "
                "database.host and that the server is up (`neural-reg db up`, `docker compose ps`).")
    return f"cannot connect as {where}: {first}. Fix: check the server and the settings (`neural-reg db status`)."


def _verify_postgres_login(creds: Credentials, timeout: float) -> str:
    import psycopg2

    try:
        conn = psycopg2.connect(host=creds.host, port=creds.port, user=creds.user, password=creds.password,
                                dbname=creds.database or "postgres", connect_timeout=max(1, int(timeout)),
                                sslmode="prefer")
    except psycopg2.Error as err:
        raise DatabaseError(login_failure(creds, err)) from None
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT version()")
            return cur.fetchone()[0].split(" on ")[0]
    finally:
        conn.close()


def verify_login(creds: Credentials, timeout: float = 10.0) -> str:
    """Log in with ``creds`` and run a query; return the server's version, or raise :class:`DatabaseError`.

    As DataJoint connects: with TLS where the server offers it (MySQL 8's caching_sha2_password needs it, or the
    cryptography package), else without."""
    if creds.backend == "postgresql":
        return _verify_postgres_login(creds, timeout)
    import pymysql

    failure = None
    for tls in ({"ssl": {}, "ssl_disabled": False}, {"ssl_disabled": True}):
        try:
            conn = pymysql.connect(host=creds.host, port=creds.port, user=creds.user, password=creds.password,
                                   connect_timeout=timeout, **tls)
            break
        except pymysql.err.OperationalError as err:
            if err.args and err.args[0] in ACCESS_DENIED | {2002, 2003, 2005}:
                raise DatabaseError(login_failure(creds, err)) from None
            failure = err
        except (pymysql.err.MySQLError, RuntimeError, OSError) as err:
            failure = err
    else:
        raise DatabaseError(login_failure(creds, failure)) from None
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT VERSION()")
            return cur.fetchone()[0]
    finally:
        conn.close()


# PyMySQL (1.2.4, converters.escape_bytes) sends a bytes value as the literal _binary X'<hex>': two characters per
# byte, so one INSERT of n bytes of blobs is a packet of 2n plus the statement around them (measured on MariaDB
# 10.11: the largest blob that fits max_allowed_packet P is (P - 34) / 2 for a two-column INSERT). Allowed for:
# the statement's text, and per row the other values and DataJoint's / numpy's headers (128 bytes of .npy header).
PACKET_OVERHEAD = 64 << 10
PACKET_OVERHEAD_PER_ROW = 1 << 10
PACKET_CAP = 1 << 30  # MySQL and MariaDB refuse a larger max_allowed_packet


def packet_size_needed(nbytes: int, rows: int = 1) -> int:
    """The ``max_allowed_packet`` one INSERT of ``rows`` rows carrying ``nbytes`` of binary data in all needs."""
    return 2 * int(nbytes) + PACKET_OVERHEAD + PACKET_OVERHEAD_PER_ROW * max(1, int(rows))


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n} bytes"


def check_packet_size(connection, nbytes: int, what: str, rows: int = 1) -> int:
    """Refuse, before a transaction starts, an insert the server would refuse for its size.

    ``nbytes``: the raw size of the binary values (arrays' ``.nbytes``) that go into ONE statement: an
    ``insert1``, or all ``rows`` rows of one ``insert`` (DataJoint sends a multi-row insert as one statement
    unless given ``chunk_size``); ``what`` names them in the message (e.g. "scan 17-3-1: responses block 0").
    ``connection``: a DataJoint connection (or a PyMySQL one). Returns the server's ``max_allowed_packet``;
    raises :class:`DatabaseError` naming it, the server's value, the value needed and the fix. A server that
    refuses a packet otherwise only says "MySQL server has gone away", after the transaction has begun.
    """
    from datajoint.connection import Connection as DataJointConnection

    if _is_postgres(connection):
        return _check_postgres_size(nbytes, what, rows)
    query = "SELECT @@max_allowed_packet"
    if isinstance(connection, DataJointConnection):
        allowed = int(connection.query(query).fetchone()[0])
    else:
        with connection.cursor() as cur:
            cur.execute(query)
            allowed = int(cur.fetchone()[0])
    needed = packet_size_needed(nbytes, rows)
    if needed <= allowed:
        return allowed
    head = (f"{what}: {_mib(int(nbytes))} of binary data go to the server in one statement of about {_mib(needed)} "
            f"(PyMySQL sends bytes hex-encoded, 2 characters per byte), but the server's max_allowed_packet is "
            f"{_mib(allowed)} ({allowed} bytes); it needs at least {needed} bytes.")
    if needed > PACKET_CAP:
        fix = (" Fix: no server takes more than 1G (1073741824 bytes) in one packet: store it in smaller pieces "
               "(fewer rows per insert, or smaller blocks).")
        raise DatabaseError(head + fix)
    suggest = min(PACKET_CAP, -(-needed // (64 << 20)) * (64 << 20))  # rounded up to 64 MiB
    raise DatabaseError(
        head + f" Fix (a database admin): SET GLOBAL max_allowed_packet={suggest}; (new connections get it: "
        f"restart the workers), and keep it across restarts: in docker-compose.yml the db service's command "
        f"--max-allowed-packet={suggest >> 20}M (this repository's has 1G), or max_allowed_packet={suggest >> 20}M "
        "under [mysqld] in the server's my.cnf. The private server (`neural-reg db up`) has 1G.")


def _is_postgres(connection) -> bool:
    adapter = getattr(connection, "adapter", None)
    if adapter is not None:
        return getattr(adapter, "backend", "mysql") == "postgresql"
    return type(connection).__module__.startswith("psycopg2")


# PostgreSQL has no max_allowed_packet: one statement's text and one bytea value are at most 1 GB each (its
# MaxAllocSize), and psycopg2 also sends bytes hex-encoded ('\x...', 2 characters per byte).
POSTGRES_STATEMENT_CAP = (1 << 30) - 1


def _check_postgres_size(nbytes: int, what: str, rows: int) -> int:
    needed = packet_size_needed(nbytes, rows)
    if needed <= POSTGRES_STATEMENT_CAP:
        return POSTGRES_STATEMENT_CAP
    raise DatabaseError(
        f"{what}: {_mib(int(nbytes))} of binary data go to the server in one statement of about {_mib(needed)} "
        f"(psycopg2 sends bytes hex-encoded, 2 characters per byte), but PostgreSQL takes at most 1 GB in one "
        f"statement ({POSTGRES_STATEMENT_CAP} bytes; no server setting raises it). Fix: store it in smaller pieces "
        "(fewer rows per insert, or smaller blocks).")


_MARIADB_WARNED = False  # DataJoint's "MariaDB is not officially supported": shown once per process


def connect(settings: Settings | None = None, start: bool = True):
    """A DataJoint connection to the configured (or private) server; sets dj.config accordingly."""
    global _MARIADB_WARNED
    settings = settings or load_settings()
    creds = shared_credentials(settings)
    if creds is None:
        server = private_server(settings)
        creds = server.up() if start else server.credentials()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # recorded, not shown: only the MariaDB one is shown, below
        import datajoint as dj
        import pymysql

        dj.config["database.backend"] = creds.backend
        if creds.backend == "postgresql":
            dj.config["database.name"] = creds.database or "postgres"
        dj.config["database.host"] = creds.host
        dj.config["database.port"] = creds.port
        dj.config["database.user"] = creds.user
        dj.config["database.password"] = creds.password
        dj.config["display.limit"] = 12
        # job tables declare with native integer types and DataJoint warns about each; nothing to act on
        dj.logger.setLevel("ERROR")
        try:
            connection = dj.conn(reset=True)
        except (pymysql.err.MySQLError, dj.errors.DataJointError, ImportError) as err:
            if isinstance(err, ImportError):
                raise DatabaseError(f"the PostgreSQL backend needs psycopg2 ({err}). Fix: pip install "
                                    "'datajoint[postgres]' (`make install` does).") from None
            raise DatabaseError(login_failure(creds, err)) from None
        except Exception as err:  # psycopg2's errors: the driver need not be installed for MySQL
            if type(err).__module__.startswith("psycopg2"):
                raise DatabaseError(login_failure(creds, err)) from None
            raise
    for warning in caught:
        if "MariaDB is not officially supported" in str(warning.message):
            if _MARIADB_WARNED:
                continue
            _MARIADB_WARNED = True  # once per process, with what it means here (README, "Database backends")
            warnings.warn(f"{warning.message} neural-reg's test suite passes on MariaDB 10.11; see README, "
                          "'Database backends', for what this means and how to use MySQL 8.4 or PostgreSQL "
                          "instead.", UserWarning, stacklevel=2)
            # and not again in this process (the heartbeat's and a reconnect's connections)
            warnings.filterwarnings("ignore", message="MariaDB is not officially supported")
    return connection  # DataJoint's other warnings while connecting (a missing datajoint.json ...): nothing to act on


# -- server-wide advisory locks, on either backend ---------------------------------------------------------------
# MySQL/MariaDB: user-level locks (GET_LOCK). PostgreSQL: session-level advisory locks (pg_try_advisory_lock) on a
# 64-bit key derived from the name. Both need no privilege, are held per connection (released when the block ends
# or the connection drops) and stack (a session may take one it holds again, and releases it as often).
LOCK_POLL_S = 0.1


def lock_key(name: str) -> int:
    """The signed 64-bit PostgreSQL advisory-lock key of a lock name."""
    import hashlib

    return int.from_bytes(hashlib.md5(name.encode()).digest()[:8], "big", signed=True)


def acquire_lock(connection, name: str, timeout: float) -> bool:
    """Take the server-wide lock ``name`` on this DataJoint connection, waiting up to ``timeout`` s."""
    if not _is_postgres(connection):
        timeout = int(timeout) if float(timeout).is_integer() else timeout
        return connection.query("SELECT GET_LOCK(%s, %s)", args=(name, timeout)).fetchone()[0] == 1
    deadline = time.monotonic() + max(0.0, float(timeout))
    key = lock_key(name)
    while True:
        if connection.query("SELECT pg_try_advisory_lock(%s)", args=(key,)).fetchone()[0]:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(LOCK_POLL_S)


def release_lock(connection, name: str) -> None:
    if _is_postgres(connection):
        connection.query("SELECT pg_advisory_unlock(%s)", args=(lock_key(name),))
    else:
        connection.query("SELECT RELEASE_LOCK(%s)", args=(name,))


def _pg_lock_rows(connection, name: str):
    key = lock_key(name) & 0xFFFFFFFFFFFFFFFF
    return connection.query("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = %s "
                            "AND objid = %s AND objsubid = 1", args=(key >> 32, key & 0xFFFFFFFF)).fetchall()


def lock_holder(connection, name: str):
    """The server connection (MySQL) or backend pid (PostgreSQL) holding the lock, or None."""
    if _is_postgres(connection):
        rows = _pg_lock_rows(connection, name)
        return rows[0][0] if rows else None
    return connection.query("SELECT IS_USED_LOCK(%s)", args=(name,)).fetchone()[0]


def lock_free(connection, name: str) -> bool:
    if _is_postgres(connection):
        return not _pg_lock_rows(connection, name)
    return connection.query("SELECT IS_FREE_LOCK(%s)", args=(name,)).fetchone()[0] == 1


def end_connection_sql(connection, holder) -> str:
    """The statement an admin runs to end the connection holding a lock (for an error message's fix)."""
    return f"SELECT pg_terminate_backend({holder})" if _is_postgres(connection) else f"KILL {holder}"


@contextlib.contextmanager
def held_lock(connection, name: str, timeout: float, waiting_for: str):
    """Hold the server-wide lock ``name`` inside the block; after ``timeout`` s of waiting, a DatabaseError that
    says what it waited for ("another process declaring ..."), who holds the lock and how to end that."""
    if not acquire_lock(connection, name, timeout):
        holder = lock_holder(connection, name)
        raise DatabaseError(f"waited {timeout:.0f} s for {waiting_for} (server connection {holder}, lock '{name}'). "
                            f"Fix: wait for it and try again; if it hangs, end that connection "
                            f"({end_connection_sql(connection, holder)}).")
    try:
        yield
    finally:
        release_lock(connection, name)
