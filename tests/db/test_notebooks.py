"""The notebooks in notebooks/ run top to bottom against a populated database, in a fresh Jupyter kernel.

Each notebook executes with nbclient in the repository root, under this session's schema prefix; a test fails
if any cell raises. The stored notebooks carry no outputs, and the executed ones must show their figures and
read the test prefix's schemas (not some other prefix's).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
# a notebook must show at least this many figures (PNG outputs) when every table is populated
MIN_FIGURES = {"01_recordings_and_oracle.ipynb": 1, "02_similarity_and_targets.ipynb": 3,
               "03_classifiers_and_robustness.ipynb": 2}
CELL_TIMEOUT_S = 300


def _runs_this_python(argv: list[str]) -> bool:
    """Whether a kernelspec's command starts this interpreter (jupyter_client maps 'python' to sys.executable)."""
    names = {"python", f"python{sys.version_info[0]}", f"python{sys.version_info[0]}.{sys.version_info[1]}"}
    return bool(argv) and (argv[0] in names or Path(argv[0]).resolve() == Path(sys.executable).resolve())


@pytest.fixture(scope="module")
def kernel_name(tmp_path_factory):
    """'python3' when it runs this virtualenv's Python; else a kernelspec for it, written to a tmp JUPYTER_PATH."""
    try:
        if _runs_this_python(KernelSpecManager().get_kernel_spec("python3").argv):
            yield "python3"
            return
    except NoSuchKernel:
        pass
    root = tmp_path_factory.mktemp("jupyter")
    spec_dir = root / "kernels" / "neuralreg-test"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "neural-reg test (this virtualenv)", "language": "python"}))
    mp = pytest.MonkeyPatch()
    mp.setenv("JUPYTER_PATH", os.pathsep.join(filter(None, [str(root), os.environ.get("JUPYTER_PATH")])))
    yield "neuralreg-test"
    mp.undo()


def kernel_env(prefix: str) -> dict:
    """The kernel's environment: this process's, the test prefix, and the server this session is connected to,
    handed over as a shared server (DJ_*), so the kernel reads exactly the database the fixtures filled whether
    that is the private server or one named by DJ_HOST."""
    import datajoint as dj

    env = dict(os.environ, NEURALREG_PREFIX=prefix, MPLBACKEND="Agg")
    env.update(DJ_HOST=str(dj.config["database.host"]), DJ_PORT=str(dj.config["database.port"]),
               DJ_USER=str(dj.config["database.user"]), DJ_PASS=str(dj.config["database.password"]),
               DJ_BACKEND=str(dj.config["database.backend"]))
    if dj.config["database.backend"] == "postgresql":
        env["DJ_DATABASE_NAME"] = str(dj.config["database.name"])
    return env


def outputs(nb, output_type: str | None = None) -> list:
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
            if output_type is None or out["output_type"] == output_type]


def text_of(nb) -> str:
    parts = []
    for out in outputs(nb):
        if out["output_type"] == "stream":
            parts.append(out["text"])
        elif "data" in out:
            parts.append(out["data"].get("text/plain", "") + out["data"].get("text/html", ""))
    return "\n".join(parts)


def test_every_notebook_is_here():
    assert [p.name for p in NOTEBOOKS] == sorted(MIN_FIGURES)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code, f"{path.name} has no code cells"
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, f"{path.name} cell {cell.id} has outputs"
    assert nb.metadata.kernelspec.name == "python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_the_populated_database(path, populated, db, kernel_name):
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, kernel_name=kernel_name, timeout=CELL_TIMEOUT_S, allow_errors=False,
                            resources={"metadata": {"path": str(REPO)}})
    client.execute(env=kernel_env(db))  # raises CellExecutionError, naming the cell, if any cell fails

    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(cell.execution_count is not None for cell in code)
    assert not outputs(nb, "error")
    figures = [out for out in outputs(nb) if "image/png" in out.get("data", {})]
    assert len(figures) >= MIN_FIGURES[path.name], f"{path.name}: {len(figures)} figures shown"
    assert f"{db}_" in text_of(nb), f"{path.name} did not report the test prefix {db!r}"
