"""The project's own settings: where its files live, the schema prefix, and how to reach the database.

DataJoint's ``dj.config`` rejects unknown keys, so neural-reg keeps its settings here, read from (first wins):

1. environment variables: ``NEURALREG_PREFIX``, ``NEURALREG_HOME``, ``NEURALREG_DATA``,
   ``NEURALREG_CHECKPOINTS``, and DataJoint's own
   ``DJ_HOST`` / ``DJ_USER`` / ``DJ_PASS`` / ``DJ_PORT`` for a shared server;
2. a JSON config file: ``$NEURALREG_CONFIG`` or ``./neural-reg.json``, e.g.
   ``{"prefix": "alice", "data_dir": "/data/neural-reg", "database": {"host": "db.lab", "user": "alice"}}``
   (a password never goes in this file: use ``DJ_PASS`` or ``"password_file": "~/.neural-reg-pass"``);
3. defaults: prefix ``neuralreg``, home ``./.neural-reg`` (the private server, checkpoints, reports).
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

    @property
    def checkpoint_dir(self) -> Path:
        """Where training runs keep their per-epoch checkpoints: $NEURALREG_CHECKPOINTS or <home>/checkpoints."""
        return Path(os.environ.get("NEURALREG_CHECKPOINTS") or self.home / "checkpoints").expanduser()


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
        raise SettingsError(f"{candidate}: not valid JSON ({err}). Fix: correct the file.") from err
    if not isinstance(data, dict):
        raise SettingsError(f"{candidate}: expected a JSON object at the top level.")
    if "password" in data.get("database", {}):
        raise SettingsError(f"{candidate}: field 'database.password': passwords do not belong in the config "
                            "file. Fix: remove it; set DJ_PASS or 'database.password_file' instead.")
    return data, candidate


def check_prefix(prefix: str, source: str) -> str:
    if not PREFIX_PATTERN.match(prefix):
        raise SettingsError(f"{source}: schema prefix {prefix!r} is not valid. Fix: use lowercase letters, digits "
                            "and '_', starting with a letter, at most 40 characters (e.g. 'alice').")
    return prefix


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
    port = os.environ.get("DJ_PORT") or db.get("port")
    password_file = db.get("password_file")
    return Settings(
        prefix=prefix,
        home=home.resolve(),
        data_dir=data_dir.resolve(),
        config_file=config_file,
        host=os.environ.get("DJ_HOST") or db.get("host"),
        port=int(port) if port else None,
        user=os.environ.get("DJ_USER") or db.get("user"),
        password_file=Path(password_file).expanduser() if password_file else None,
    )
