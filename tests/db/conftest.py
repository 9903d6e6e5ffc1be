"""Pipeline tests against a real, throw-away server: MySQL-family, or PostgreSQL with DJ_BACKEND=postgresql
(`make test` runs them on both).

The server is the configured shared one (DJ_HOST, datajoint.json) or the project's private server of the backend,
started here if needed and stopped again if this session started it. Every test session works under its own schema prefix
(test_<random>_...), dropped at the end, so test runs never touch anyone's data.
"""

import copy
import secrets
from types import SimpleNamespace

import pytest

from neural_reg import workflow
from neural_reg.experiment import enter_experiment, load_spec

import schemas
from neural_reg.database import connect, private_server
from neural_reg.settings import load_settings


@pytest.fixture(scope="session")
def db():
    settings = load_settings()
    server = private_server(settings)
    started_here = not settings.host and not server.is_running()
    connection = connect(settings)
    prefix = f"test_{secrets.token_hex(3)}"
    schemas.activate(prefix, connection=connection)
    yield prefix
    schemas.drop_all(prefix, connection)
    connection.close()
    if started_here:
        server.down()


@pytest.fixture
def row_counts(db):
    """A function returning the row count of every table of every schema: to show nothing changed."""
    import datajoint as dj

    def counts():
        result = {}
        for module in schemas.modules():
            for name in dir(module):
                table = getattr(module, name)
                if isinstance(table, type) and issubclass(table, dj.Table) and table.__module__ == module.__name__:
                    result[table.__name__] = len(table())
                    for part in getattr(table, "parts", lambda **kw: [])(as_objects=True) if hasattr(
                            table, "parts") else []:
                        result[part.full_table_name] = len(part)
        return result

    return counts


def tiny_spec() -> dict:
    """The demo's specification, shrunk to seconds: the same file, the same code path."""
    spec = load_spec("demo")
    spec.update(name="tiny", scan_group="tiny",
                scans={"simulate": dict(n_scans=2, n_neurons=80, n_images=240, n_oracle_images=12, n_repeats=4,
                                        seed=21)},
                predictor={"name": "tiny-cpu", "preset": "cpu-fast", "max_epochs": 4})
    spec["classifiers"].update(train={"name": "tiny-cpu", "preset": "cpu-test"}, seeds=[0],
                               adversarial_control={"name": "tiny-cpu-pgd",
                                                    "adversarial": {"norm": "Linf", "eps": 0.1, "steps": 2,
                                                                    "rel_stepsize": 0.5}})
    spec["targets"]["Robust net"]["train"] = {"preset": "cpu-test", "adversarial": {"steps": 2, "rel_stepsize": 0.5}}
    spec["robustness"] = {
        "noise": {"name": "tiny", "stds": [0.0, 0.3, 0.6], "n_samples": 120, "seed": 0},
        "corruption": {"name": "tiny", "corruptions": ["gaussian_noise", "contrast"], "severities": [1, 5],
                       "n_samples": 40, "seed": 0},
        "attacks": {"configs": copy.deepcopy(ATTACKS)},
        "attack_set": "tiny",
    }
    return spec


ATTACKS = {
    "tiny-L2-ddn": {"attack": "ddn", "norm": "L2", "sweep": {"steps": [10, 30]}, "n_samples": 8, "batch_size": 8,
                    "seed": 0},
    "tiny-L2-fmn": {"attack": "fmn", "norm": "L2", "sweep": {"steps": [20]}, "n_samples": 8, "batch_size": 8,
                    "seed": 0},
    "tiny-Linf-pgd": {"attack": "pgd", "norm": "Linf", "sweep": {"steps": [10], "rel_stepsize": [0.3]},
                      "n_samples": 8, "batch_size": 8, "seed": 0, "search": {"eps_min": 1e-3, "steps": 6}},
}


@pytest.fixture
def tiny():
    """The tiny specification (a fresh dict each call) and its attack configurations."""
    return SimpleNamespace(spec=tiny_spec, attacks=ATTACKS)


@pytest.fixture(scope="session")
def populated(db, tmp_path_factory, monkeypatch_module):
    """The tiny experiment, entered once and populated in one pass over every table."""
    monkeypatch_module.setenv("NEURALREG_CHECKPOINTS", str(tmp_path_factory.mktemp("checkpoints")))
    summary = enter_experiment(tiny_spec())
    workflow.populate(progress=False, suppress_errors=False)
    return {**summary, "regulariser": {r["label"]: r["regulariser_hash"] for r in summary["regularisers"]}}


@pytest.fixture(scope="session")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()
