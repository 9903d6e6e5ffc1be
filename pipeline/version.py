"""Which code is this: the installed package version and, in a git checkout, its commit and whether it is edited.

One answer for `neural-reg --version`, the report's provenance, the exports' metadata and `make readme`.
"""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

PACKAGE_NAME = "neural-reg"
REPO_ROOT = Path(__file__).resolve().parents[1]


def code_version(root=None) -> dict:
    """{'package', 'version' (None if not installed), 'git_commit' (None outside a checkout), 'git_dirty'}.

    Read-only: git rev-parse and git status only; tracked files count for 'dirty', untracked ones do not.
    """
    root = Path(root) if root is not None else REPO_ROOT
    try:
        version = metadata.version(PACKAGE_NAME)
    except metadata.PackageNotFoundError:
        version = None
    commit, dirty = None, None
    try:
        run = dict(capture_output=True, text=True, timeout=20)
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], **run)
        if out.returncode == 0 and out.stdout.strip():
            commit = out.stdout.strip()
            status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], **run)
            dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"package": PACKAGE_NAME, "version": version, "git_commit": commit, "git_dirty": dirty}


def describe(info: dict | None = None, short: bool = False) -> str:
    """'git <commit> (uncommitted changes)', else 'neural-reg <version>', else 'unknown'."""
    info = info or code_version()
    if info["git_commit"]:
        commit = info["git_commit"][:7] if short else info["git_commit"]
        return f"git {commit}" + (" (uncommitted changes)" if info["git_dirty"] else "")
    return f"{PACKAGE_NAME} {info['version']}" if info["version"] else "unknown"


def runtime_versions() -> str:
    """'torch=X, numpy=Y, code=<git commit or package version>': what a trained row records beside its device and
    torch thread count (CPU training is bit-reproducible only at the same versions, device and thread count)."""
    import numpy as np
    import torch

    return f"torch={torch.__version__}, numpy={np.__version__}, code={describe(short=True)}"
