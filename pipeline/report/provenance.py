"""Where a report's numbers come from: code version, package versions, torch threads and device, database, time.

:func:`collect` needs no database: the caller passes the connection's host and the schema prefix. Only the
host, port and user of a connection are ever read (:data:`SAFE_CONNECTION_KEYS`), so a password in the
connection info never reaches the page.
"""

from __future__ import annotations

import platform
from datetime import datetime, timezone
from importlib import metadata

import pandas as pd

from pipeline.version import code_version as version_info
from pipeline.version import describe

__all__ = ["PACKAGES", "SAFE_CONNECTION_KEYS", "PROVENANCE_KEYS", "code_version", "collect", "provenance_frame"]

PACKAGES = ("torch", "numpy", "datajoint", "foolbox", "scipy", "pandas", "matplotlib")
SAFE_CONNECTION_KEYS = ("host", "port", "user")
PROVENANCE_KEYS = ("code version", "python", *(f"{p} version" for p in PACKAGES), "torch threads", "device",
                   "database", "schema prefix", "generated at")
PACKAGE_NAME = "neural-reg"


def code_version(root=None) -> str:
    """'git <commit>' (+ ' (uncommitted changes)') in a git checkout, else 'neural-reg <version>', else 'unknown'."""
    return describe(version_info(root))


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _torch() -> tuple[str, str]:
    try:
        import torch
    except ImportError:
        return "-", "torch not installed"
    if torch.cuda.is_available():
        device = f"cuda ({torch.cuda.device_count()} device(s): {torch.cuda.get_device_name(0)})"
    else:
        device = "cpu (CUDA not available)"
    return str(torch.get_num_threads()), device


def collect(connection_info: dict | None = None, prefix: str = "", root=None, now: datetime | None = None) -> dict:
    """{PROVENANCE_KEYS: text}. connection_info: e.g. ``dj.conn().conn_info`` (only host, port, user are read);
    prefix: the schema prefix; root: the repository (for the git commit); now: the time (default: now, UTC)."""
    info = connection_info or {}
    database = ", ".join(f"{k} {info[k]}" for k in SAFE_CONNECTION_KEYS if info.get(k) not in (None, ""))
    threads, device = _torch()
    out = {"code version": code_version(root), "python": platform.python_version()}
    out.update({f"{p} version": _version(p) for p in PACKAGES})
    out.update({"torch threads": threads, "device": device, "database": database or "-",
                "schema prefix": prefix or "-",
                "generated at": (now or datetime.now(timezone.utc)).isoformat(timespec="seconds")})
    return out


def provenance_frame(provenance: dict) -> pd.DataFrame:
    """The provenance as a two-column table (what, value) for the page."""
    return pd.DataFrame({"what": list(provenance), "value": [str(v) for v in provenance.values()]})
