"""The data model: one DataJoint schema per module, activated in dependency order with a prefix.

    from schemas import activate
    activate()                     # prefix from NEURALREG_PREFIX / neural-reg.json, e.g. alice_recording
    from schemas import recording
    recording.Scan()
"""

from __future__ import annotations

import importlib

import neural_reg  # noqa: F401  (its warning filters, before DataJoint is imported)

# in dependency order: data flows one way, recordings -> ... -> robustness
SCHEMA_NAMES = ("recording", "oracle", "predictor", "target", "classifier", "robustness")


def modules():
    return [importlib.import_module(f"schemas.{name}") for name in SCHEMA_NAMES]


def activate(prefix: str | None = None, connection=None, create_tables: bool = True):
    """Connect (starting the private server if needed) and activate every schema under the prefix."""
    from neural_reg.database import connect
    from neural_reg.settings import check_prefix, load_settings

    settings = load_settings()
    prefix = check_prefix(prefix, "prefix argument") if prefix else settings.prefix
    connection = connection or connect(settings)
    for module in modules():
        name = module.__name__.split(".")[-1]
        if not module.schema.is_activated() or module.schema.database != f"{prefix}_{name}":
            module.schema.activate(f"{prefix}_{name}", connection=connection, create_tables=create_tables)
    return connection


def drop_all(prefix: str, connection) -> None:
    """Drop every schema of a prefix, downstream first (test teardown, `neural-reg db drop`)."""
    import datajoint as dj

    for name in reversed(SCHEMA_NAMES):
        database = f"{prefix}_{name}"
        if database in dj.list_schemas(connection=connection):
            dj.Schema(database, connection=connection, create_tables=False).drop(prompt=False)
