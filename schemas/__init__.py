"""The data model: one DataJoint schema per module, activated in dependency order with a prefix.

    from schemas import activate
    activate()                     # prefix from NEURALREG_PREFIX / neural-reg.json, e.g. alice_recording
    from schemas import recording
    recording.Scan()

Declaring takes turns: whatever of a prefix is not declared yet (schemas, tables, job tables) is declared under
the server-wide lock ``neural-reg-setup-<prefix>`` (``GET_LOCK``; ``pg_try_advisory_lock`` on PostgreSQL), so
many workers starting at once on a new prefix all succeed: one declares, the others wait for it and then find
everything declared. ``setup()`` (``neural-reg db setup``) declares all of it once, so that workers and analysts
never need DDL privileges.
"""

from __future__ import annotations

import importlib

import neural_reg  # noqa: F401  (its warning filters, before DataJoint is imported)

# in dependency order: data flows one way, recordings -> ... -> robustness
SCHEMA_NAMES = ("recording", "oracle", "predictor", "target", "classifier", "robustness")
SETUP_LOCK_TIMEOUT_S = 600  # how long a process waits for another one declaring the prefix (a few s normally)


def modules():
    return [importlib.import_module(f"schemas.{name}") for name in SCHEMA_NAMES]


def table_classes(module) -> list[tuple[type, str]]:
    """(class, table name) of the module's tables, each master followed by its parts, in declaration order (the
    names without activating: a part's name comes from its master once activated)."""
    import datajoint as dj
    from datajoint.utils import from_camel_case

    tables = []
    for table in vars(module).values():
        if isinstance(table, type) and issubclass(table, dj.Table) and table.__module__ == module.__name__ \
                and not issubclass(table, dj.Part):
            tables.append((table, table.table_name))
            tables += [(part, f"{table.table_name}__{from_camel_case(part.__name__)}") for part in vars(table).values()
                       if isinstance(part, type) and issubclass(part, dj.Part)]
    return tables


def _job_table_name(table_name: str) -> str:
    return f"~~{table_name.lstrip('_')}"  # DataJoint 2.3.5's name (datajoint/jobs.py)


def expected_tables(prefix: str) -> dict[str, set[str]]:
    """Every table a complete setup of ``prefix`` has, per schema: the modules' tables and part tables, the job
    table of each auto-populated table, and DataJoint's ``~lineage``."""
    import datajoint as dj

    expected = {}
    for module in modules():
        names = {"~lineage"}
        for table, name in table_classes(module):
            names.add(name)
            if issubclass(table, (dj.Computed, dj.Imported)):
                names.add(_job_table_name(name))
        expected[f"{prefix}_{module.__name__.split('.')[-1]}"] = names
    return expected


def missing_tables(connection, prefix: str) -> list[str]:
    """``schema.table`` of every expected table of ``prefix`` that the server does not have (one query)."""
    expected = expected_tables(prefix)
    names = list(expected)
    rows = connection.query("SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA IN "
                            f"({', '.join(['%s'] * len(names))})", args=names).fetchall()
    present = {(str(db), str(table)) for db, table in rows}
    return [f"{db}.{t}" for db, tables in expected.items() for t in sorted(tables) if (db, t) not in present]


def setup_lock_name(prefix: str) -> str:
    return f"neural-reg-setup-{prefix}"  # at most 57 characters (the server allows 64)


def setup_lock(connection, prefix: str, timeout: float = SETUP_LOCK_TIMEOUT_S):
    """Hold the server-wide lock on declaring ``prefix``'s schemas inside the block (released when the block ends
    or the connection closes): GET_LOCK, or pg_try_advisory_lock on PostgreSQL."""
    from neural_reg.database import held_lock

    return held_lock(connection, setup_lock_name(prefix), timeout,
                     f"another process declaring the schemas of prefix '{prefix}'")


def _lock_free(connection, prefix: str) -> bool:
    from neural_reg.database import lock_free

    return lock_free(connection, setup_lock_name(prefix))


def _activate_modules(prefix: str, connection, create_tables: bool) -> None:
    for module in modules():
        name = module.__name__.split(".")[-1]
        if not module.schema.is_activated() or module.schema.database != f"{prefix}_{name}":
            module.schema.activate(f"{prefix}_{name}", connection=connection, create_tables=create_tables)


def _declare_job_tables() -> int:
    """Declare the job table of every auto-populated table that lacks one; return how many were declared."""
    import datajoint as dj

    declared = 0
    for module in modules():
        for table, _ in table_classes(module):
            if issubclass(table, (dj.Computed, dj.Imported)):
                jobs = dj.jobs.Job(table())
                if not jobs.is_declared:
                    jobs.declare()
                    declared += 1
    return declared


def _declare(prefix: str, connection) -> None:
    """Declare what is missing, under the setup lock; explain a missing privilege instead of a raw error."""
    from neural_reg.database import DatabaseError

    with setup_lock(connection, prefix):
        missing = missing_tables(connection, prefix)  # again: a process that held the lock may have declared it
        if not missing:
            by_another = True  # declared by another process: activate outside the lock, alongside the other waiters
        else:
            by_another = False
            try:
                _activate_modules(prefix, connection, create_tables=True)
                _declare_job_tables()
            except Exception as err:  # noqa: BLE001  (re-raised unless it is a missing privilege)
                if not _is_access_denied(err):
                    raise
                shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
                raise DatabaseError(f"prefix '{prefix}' is not set up ({shown} missing) and this account "
                                    f"({connection.get_user()}) may not declare tables. Fix: an admin runs "
                                    f"`neural-reg db setup` with NEURALREG_PREFIX={prefix} once.") from None
    if by_another:
        _activate_declared(prefix, connection, create_tables=True)


def _activate_declared(prefix: str, connection, create_tables: bool) -> None:
    """Activate a declared prefix; a write this account may not do (DataJoint fills a lookup table whose
    contents grew in the code) is explained, not raised raw."""
    from neural_reg.database import DatabaseError

    try:
        _activate_modules(prefix, connection, create_tables)
    except Exception as err:  # noqa: BLE001  (re-raised unless it is a missing privilege)
        if not _is_access_denied(err):
            raise
        raise DatabaseError(f"activating prefix '{prefix}' needs a write that this account ({connection.get_user()}) "
                            f"may not do ({type(err).__name__}: {err}), e.g. new rows of a lookup table. Fix: an "
                            f"admin runs `neural-reg db setup` with NEURALREG_PREFIX={prefix}.") from None


def _is_access_denied(err: Exception) -> bool:
    import datajoint as dj

    if isinstance(err, dj.errors.AccessError) or "Check permissions" in str(err):
        return True
    code = err.args[0] if getattr(err, "args", None) else None
    return code in (1044, 1142, 1143, 1227)


def activate(prefix: str | None = None, connection=None, create_tables: bool = True):
    """Connect (starting the private server if needed) and activate every schema under the prefix.

    Whatever is not declared yet is declared under the prefix's setup lock (see the module's docstring); when
    everything is declared and nobody holds the lock, nothing waits.
    """
    from neural_reg.database import connect
    from neural_reg.settings import check_prefix, load_settings

    settings = load_settings()
    prefix = check_prefix(prefix, "prefix argument") if prefix else settings.prefix
    connection = connection or connect(settings)
    configure_store(settings)  # the store of the <npfile@bulk> columns (neural_reg.stores)
    # tables first, then the lock: a declarer that has created the last table still holds the lock
    if create_tables and (missing_tables(connection, prefix) or not _lock_free(connection, prefix)):
        _declare(prefix, connection)
    else:
        _activate_declared(prefix, connection, create_tables)
    return connection


def setup(prefix: str | None = None, connection=None) -> dict:
    """Declare every schema, table and job table of the prefix, once, under its setup lock (``neural-reg db
    setup``); afterwards workers and analysts need no DDL. Returns what the prefix has and what was declared."""
    from neural_reg.database import connect
    from neural_reg.settings import check_prefix, load_settings

    settings = load_settings()
    prefix = check_prefix(prefix, "prefix argument") if prefix else settings.prefix
    connection = connection or connect(settings)
    configure_store(settings)
    before = set(missing_tables(connection, prefix))
    _declare(prefix, connection)
    left = missing_tables(connection, prefix)
    expected = expected_tables(prefix)
    return {"prefix": prefix, "schemas": list(expected), "tables": sum(len(t) for t in expected.values()),
            "declared": sorted(before - set(left)), "missing": left}


def drop_all(prefix: str, connection) -> None:
    """Drop every schema of a prefix, downstream first (test teardown, `neural-reg db drop`), and its objects in
    the store."""
    import datajoint as dj

    from neural_reg.stores import drop_objects

    for name in reversed(SCHEMA_NAMES):
        database = f"{prefix}_{name}"
        if database in dj.list_schemas(connection=connection):
            dj.Schema(database, connection=connection, create_tables=False).drop(prompt=False)
        drop_objects(database, config=connection._config)


def configure_store(settings=None) -> dict:
    """Point DataJoint's store ``bulk`` at this machine's store setting (neural_reg.stores); returns its spec."""
    from neural_reg.stores import configure

    return configure(settings)
