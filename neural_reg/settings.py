"""The project's own settings: where its files live, the schema prefix, and how to reach the database.

DataJoint's ``dj.config`` rejects unknown keys, so neural-reg keeps its settings here, read from (first wins):

1. environment variables: ``NEURALREG_PREFIX``, ``NEURALREG_HOME``, ``NEURALREG_DATA``,
   ``NEURALREG_CHECKPOINTS``, and DataJoint's own
   ``DJ_HOST`` / ``DJ_USER`` / ``DJ_PASS`` / ``DJ_PORT`` for a shared server;
2. a JSON config file: ``$NEURALREG_CONFIG`` or ``./neural-reg.json``, e.g.
   ``{"prefix": "alice", "data_dir": "/data/neural-reg", "database": {"host": "db.lab", "user": "alice"}}``
   (a password never goes in this file: use ``DJ_PASS`` or ``"password_file": "~/.neural-reg-pass"``; a key
   that looks like a password at any depth, ``password``, ``passwd``, ``pass``, ``pwd`` in any case, is refused,
   and so is an unknown key or a value of the wrong type, with the key named and the fix);
3. defaults: prefix ``neuralreg``, home ``./.neural-reg`` (the private server, checkpoints, reports).

The database a DataJoint user already configured is honoured too. Each connection field is taken from the first
source that has it (README, "Configuration: which setting wins"):

- host, port, user, backend (``mysql`` for MySQL/MariaDB, or ``postgresql``), database name (PostgreSQL):
  ``DJ_HOST`` / ``DJ_PORT`` / ``DJ_USER`` / ``DJ_BACKEND`` / ``DJ_DATABASE_NAME``, then ``neural-reg.json``'s
  ``database`` section, then DataJoint's ``datajoint.json`` (found as DataJoint finds it: the working directory
  or a parent, up to the repository's root), then (the user only) its ``.secrets/database.user``;
- the password: ``DJ_PASS``, then ``database.password_file`` of ``neural-reg.json``, then ``datajoint.json``'s
  ``database.password``, then ``.secrets/database.password`` (beside datajoint.json, else
  ``/run/secrets/datajoint/``);
- ``DJ_IGNORE_CONFIG_FILE=true`` skips datajoint.json and its secrets, as it does for DataJoint.

A host from any of these means that server is used; with none, the private server of the backend starts.
"""

from __future__ import annotations

from pipeline.errors import NeuralRegError

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

PREFIX_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


class SettingsError(NeuralRegError):
    """A setting is missing or malformed; the message names where it came from and the fix."""


@dataclass(frozen=True)
class Settings:
    prefix: str
    home: Path
    data_dir: Path
    config_file: Path | None
    host: str | None = None  # a shared server; None means the private server under home
    port: int | None = None
    user: str | None = None
    password_file: Path | None = None
    # "mysql" (MySQL or MariaDB) or "postgresql", DataJoint's names: the shared server's kind, or which private one
    backend: str = "mysql"
    database_name: str | None = None  # PostgreSQL: the database holding the schemas (DataJoint's database.name)
    datajoint_file: Path | None = None  # the datajoint.json honoured (DataJoint's own configuration), if any
    secrets_dir: Path | None = None  # its .secrets/ (or /run/secrets/datajoint), if any

    @property
    def checkpoint_dir(self) -> Path:
        """Where training runs keep their per-epoch checkpoints: $NEURALREG_CHECKPOINTS or <home>/checkpoints."""
        return Path(os.environ.get("NEURALREG_CHECKPOINTS") or self.home / "checkpoints").expanduser()


# The config file's fields and their types; anything else is refused (a misspelt key must not fall back to a
# default silently). Paths are strings; ``database.port`` an integer.
CONFIG_FIELDS: dict = {
    "prefix": str,
    "home": str,
    "data_dir": str,
    "database": {"host": str, "port": int, "user": str, "password_file": str, "backend": str, "name": str},
    # where <npfile@bulk> columns keep their objects: a folder or an S3 / MinIO bucket (neural_reg.stores)
    "store": {"protocol": str, "location": str, "endpoint": str, "bucket": str, "access_key": str,
              "secret_key_file": str},
}
# DataJoint's backend names, and the other names people use for them
BACKENDS = {"mysql": "mysql", "mariadb": "mysql", "postgresql": "postgresql", "postgres": "postgresql"}
CONFIG_EXAMPLE = ('{"prefix": "alice", "data_dir": "/data/neural-reg", '
                  '"database": {"host": "db.lab:3306", "user": "alice", "password_file": "~/.neural-reg-pass"}}')
_TYPE_NAMES = {str: "a string", int: "an integer", dict: "an object", bool: "true or false", float: "a number",
               list: "a list", type(None): "null"}
# a key that looks like it holds a secret: password, passwd, pass, pwd, DJ_PASS, rootPassword, passphrase ...
_SECRET_KEY = re.compile(r"pass|pwd|secret|token", re.IGNORECASE)
_NOT_SECRET_KEYS = {"password_file", "secret_key_file"}


def _type_name(value) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _secret_keys(data, path: str = "") -> list[str]:
    """Dotted paths of every key (at any depth, in objects or lists) that looks like it holds a password."""
    found = []
    if isinstance(data, dict):
        for key, value in data.items():
            here = f"{path}.{key}" if path else str(key)
            if _SECRET_KEY.search(str(key)) and str(key) not in _NOT_SECRET_KEYS:
                found.append(here)
            found += _secret_keys(value, here)
    elif isinstance(data, list):
        for i, value in enumerate(data):
            found += _secret_keys(value, f"{path}[{i}]")
    return found


def _check_fields(data: dict, fields: dict, path: str, where: Path) -> None:
    """Refuse unknown keys and values of the wrong type, naming the key and the fix (never showing a value)."""
    import difflib

    for key, value in data.items():
        here = f"{path}.{key}" if path else key
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
            hint = f"did you mean {(f'{path}.' if path else '') + close[0]!r}? " if close else ""
            of = f" of {path!r}" if path else ""
            raise SettingsError(f"{where}: unknown field {here!r}. Fix: {hint}The fields{of} are "
                                f"{', '.join(repr(f) for f in fields)} (e.g. {CONFIG_EXAMPLE}).")
        expected = fields[key]
        if isinstance(expected, dict):
            if not isinstance(value, dict):
                raise SettingsError(f"{where}: field {here!r} must be an object, got {_type_name(value)}. "
                                    f"Fix: e.g. {CONFIG_EXAMPLE}.")
            _check_fields(value, expected, here, where)
        elif not isinstance(value, expected) or isinstance(value, bool):
            example = {"port": "3306", "host": '"db.lab:3306"'}.get(key, '"..."' if expected is str else "1")
            raise SettingsError(f"{where}: field {here!r} must be {_TYPE_NAMES[expected]}, got {_type_name(value)}. "
                                f"Fix: e.g. \"{key}\": {example}.")
        elif expected is str and not value.strip():
            raise SettingsError(f"{where}: field {here!r} is empty. Fix: give a value or remove the field.")


def _read_config_file() -> tuple[dict, Path | None]:
    path = os.environ.get("NEURALREG_CONFIG")
    candidate = Path(path).expanduser() if path else Path.cwd() / "neural-reg.json"
    if not candidate.exists():
        if path:
            raise SettingsError(f"NEURALREG_CONFIG points to {candidate}, which does not exist. "
                                "Fix: create it or unset NEURALREG_CONFIG.")
        return {}, None
    try:
        data = json.loads(candidate.read_text())
    except json.JSONDecodeError as err:
        # the message names the position only: the offending text could be a password
        raise SettingsError(f"{candidate}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}). "
                            "Fix: correct the file.") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SettingsError(f"{candidate}: cannot be read ({type(err).__name__}). Fix: check the file.") from None
    if not isinstance(data, dict):
        raise SettingsError(f"{candidate}: expected a JSON object at the top level, got {_type_name(data)}. "
                            f"Fix: e.g. {CONFIG_EXAMPLE}.")
    secrets = _secret_keys(data)
    if secrets:
        fields = ", ".join(repr(s) for s in secrets)
        raise SettingsError(f"{candidate}: field {fields}: passwords do not belong in the config file. Fix: remove "
                            "it; set DJ_PASS or 'database.password_file' (a file of your own, mode 0600) instead.")
    _check_fields(data, CONFIG_FIELDS, "", candidate)
    return data, candidate


def check_prefix(prefix: str, source: str) -> str:
    if not PREFIX_PATTERN.match(prefix):
        raise SettingsError(f"{source}: schema prefix {prefix!r} is not valid. Fix: use lowercase letters, digits "
                            "and '_', starting with a letter, at most 40 characters (e.g. 'alice').")
    return prefix


def check_port(port, source: str) -> int:
    try:
        value = int(str(port).strip())
    except ValueError:
        value = 0
    if not 0 < value < 65536:
        raise SettingsError(f"{source}: the port must be an integer from 1 to 65535 (e.g. 3306). Fix: correct it "
                            "(a host may carry it as 'db.lab:3306').")
    return value


def load_settings() -> Settings:
    data, config_file = _read_config_file()
    db = data.get("database", {})
    where = str(config_file) if config_file else "defaults"
    if os.environ.get("NEURALREG_PREFIX"):
        prefix = check_prefix(os.environ["NEURALREG_PREFIX"], "NEURALREG_PREFIX")
    else:
        prefix = check_prefix(data.get("prefix", "neuralreg"), f"{where} field 'prefix'")
    home = Path(os.environ.get("NEURALREG_HOME") or data.get("home") or Path.cwd() / ".neural-reg").expanduser()
    data_dir = Path(os.environ.get("NEURALREG_DATA") or data.get("data_dir") or Path.cwd() / "data").expanduser()
    if os.environ.get("DJ_PORT"):
        port = check_port(os.environ["DJ_PORT"], "DJ_PORT")
    else:
        port = check_port(db["port"], f"{where}: field 'database.port'") if "port" in db else None
    dj_data, dj_file, secrets_dir = read_datajoint_config()
    dj_where = f"{dj_file}: field 'database.port'"
    if port is None and dj_data.get("port") is not None:
        port = check_port(dj_data["port"], dj_where)
    host = os.environ.get("DJ_HOST") or db.get("host") or dj_data.get("host")
    if host and ":" in host:
        check_port(host.rpartition(":")[2], "DJ_HOST" if os.environ.get("DJ_HOST") else f"{where}: field "
                   "'database.host'" if db.get("host") else f"{dj_file}: field 'database.host'")
    backend = check_backend(*next(((v, w) for v, w in (
        (os.environ.get("DJ_BACKEND"), "DJ_BACKEND"), (db.get("backend"), f"{where}: field 'database.backend'"),
        (dj_data.get("backend"), f"{dj_file}: field 'database.backend'")) if v), ("mysql", "default")))
    user = (os.environ.get("DJ_USER") or db.get("user") or dj_data.get("user")
            or _read_secret(secrets_dir, "database.user"))
    password_file = db.get("password_file")
    return Settings(
        prefix=prefix,
        home=home.resolve(),
        data_dir=data_dir.resolve(),
        config_file=config_file,
        host=host,
        port=port,
        user=user,
        password_file=Path(password_file).expanduser() if password_file else None,
        backend=backend,
        database_name=os.environ.get("DJ_DATABASE_NAME") or db.get("name") or dj_data.get("name"),
        datajoint_file=dj_file,
        secrets_dir=secrets_dir,
    )


def check_backend(value: str, source: str) -> str:
    backend = BACKENDS.get(str(value).strip().lower())
    if backend is None:
        raise SettingsError(f"{source}: backend {value!r} is not known. Fix: 'mysql' (MySQL or MariaDB) or "
                            "'postgresql'.")
    return backend


# -- DataJoint's own configuration: datajoint.json, its .secrets/, as DataJoint 2.3.5 finds them -----------------
DATAJOINT_FILE = "datajoint.json"
SYSTEM_SECRETS_DIR = Path("/run/secrets/datajoint")
_DATAJOINT_FIELDS = ("host", "port", "user", "password", "backend", "name")


def _find_datajoint_file(start: Path | None = None) -> Path | None:
    """datajoint.json in the working directory or a parent, stopping at a repository's root (.git / .hg), as
    ``datajoint.settings.find_config_file`` searches."""
    current = (start or Path.cwd()).resolve()
    while True:
        if (current / DATAJOINT_FILE).is_file():
            return current / DATAJOINT_FILE
        if (current / ".git").exists() or (current / ".hg").exists() or current == current.parent:
            return None
        current = current.parent


def _read_secret(secrets_dir: Path | None, name: str) -> str | None:
    if secrets_dir is None or not (secrets_dir / name).is_file():
        return None
    try:
        return (secrets_dir / name).read_text().strip() or None
    except (OSError, UnicodeDecodeError) as err:
        raise SettingsError(f"{secrets_dir / name}: cannot be read ({type(err).__name__}). Fix: check the file "
                            "(one line; chmod 600).") from None


def read_datajoint_config() -> tuple[dict, Path | None, Path | None]:
    """The ``database`` fields of DataJoint's own configuration: (fields, datajoint.json, secrets directory).

    As DataJoint reads them: ``datajoint.json`` (nested ``{"database": {"host": ...}}`` or flat
    ``{"database.host": ...}``) found from the working directory upwards; ``.secrets/`` beside it, else
    ``/run/secrets/datajoint/``; none of them when ``DJ_IGNORE_CONFIG_FILE`` is true. A password is not returned
    (see :func:`datajoint_password`).
    """
    if os.environ.get("DJ_IGNORE_CONFIG_FILE", "").strip().lower() in ("1", "true", "yes", "on"):
        return {}, None, None
    path = _find_datajoint_file()
    fields: dict = {}
    if path is not None:
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise SettingsError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}). "
                                "Fix: correct the file (DataJoint's configuration), or set "
                                "DJ_IGNORE_CONFIG_FILE=true.") from None
        except (OSError, UnicodeDecodeError) as err:
            raise SettingsError(f"{path}: cannot be read ({type(err).__name__}). Fix: check the file.") from None
        if not isinstance(data, dict):
            raise SettingsError(f"{path}: expected a JSON object at the top level, got {_type_name(data)}. Fix: "
                                'e.g. {"database": {"host": "db.lab", "user": "alice"}}.')
        nested = data.get("database") if isinstance(data.get("database"), dict) else {}
        for key in _DATAJOINT_FIELDS:
            value = data.get(f"database.{key}", nested.get(key))
            if value is None or key == "password":
                continue
            if key == "port" and (isinstance(value, bool) or not isinstance(value, (int, str))):
                raise SettingsError(f"{path}: field 'database.port' must be an integer. Fix: e.g. \"port\": 3306.")
            if key != "port" and not isinstance(value, str):
                raise SettingsError(f"{path}: field 'database.{key}' must be a string, got {_type_name(value)}. "
                                    f"Fix: e.g. \"{key}\": \"...\".")
            fields[key] = value
    secrets_dir = None
    if path is not None and (path.parent / ".secrets").is_dir():
        secrets_dir = path.parent / ".secrets"
    elif SYSTEM_SECRETS_DIR.is_dir():
        secrets_dir = SYSTEM_SECRETS_DIR
    return fields, path, secrets_dir


def datajoint_password(settings: Settings) -> str | None:
    """The password DataJoint's own configuration gives: ``database.password`` in datajoint.json, else the file
    ``database.password`` of its secrets directory; None if neither."""
    if settings.datajoint_file is not None:
        try:
            data = json.loads(settings.datajoint_file.read_text())
        except (OSError, ValueError):
            data = {}
        nested = data.get("database") if isinstance(data, dict) and isinstance(data.get("database"), dict) else {}
        value = data.get("database.password", nested.get("password")) if isinstance(data, dict) else None
        if isinstance(value, str) and value:
            return value
    return _read_secret(settings.secrets_dir, "database.password")
