"""Many workers starting at once on a new prefix: one declares the schemas, the others wait and find them."""

import secrets

import pytest

import schemas

N_PROCESSES = 4
_start_together = None  # a barrier shared by the processes


def _init(barrier):
    global _start_together
    import schemas  # noqa: F401  (the imports before the barrier: only the activations race)

    _start_together = barrier


def _first_start(prefix):
    """Activate the new prefix as every other process does; 'ok' and a join across schemas, or the error."""
    _start_together.wait(timeout=120)
    try:
        schemas.activate(prefix)  # a fresh interpreter (spawn): its own connection, from the same settings
        from schemas import classifier, robustness

        return ["ok", len(robustness.BrainLikeness.Layer * classifier.Training)]
    except Exception as err:  # noqa: BLE001  (reported, not hidden: the test expects none)
        return [f"{type(err).__name__}: {err}"]


def _lineage(connection, prefix):
    rows = set()
    for name in schemas.SCHEMA_NAMES:
        q = connection.adapter.quote_identifier
        for row in connection.query(f"SELECT * FROM {q(f'{prefix}_{name}')}.{q('~lineage')}").fetchall():
            rows.add(tuple(str(v).replace(f"{prefix}_", "<prefix>_") for v in row))
    return rows


def test_simultaneous_first_start_on_a_new_prefix(db):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from schemas import recording

    connection = recording.schema.connection
    prefix = f"{db}_new{secrets.token_hex(2)}"
    ctx = multiprocessing.get_context("spawn")
    try:
        with ProcessPoolExecutor(N_PROCESSES, mp_context=ctx, initializer=_init,
                                 initargs=(ctx.Barrier(N_PROCESSES),)) as pool:
            outcomes = [f.result(timeout=300) for f in [pool.submit(_first_start, prefix)
                                                        for _ in range(N_PROCESSES)]]
        assert outcomes == [["ok", 0]] * N_PROCESSES, outcomes
        # everything declared once, job tables too, with the same lineage as a prefix declared by one process
        assert schemas.missing_tables(connection, prefix) == []
        schemas.setup(db, connection)  # the session's prefix, declared by one process, job tables too
        assert _lineage(connection, prefix) == _lineage(connection, db)
    finally:
        schemas.drop_all(prefix, connection)


def test_setup_lock_is_released_and_reentrant_across_calls(db):
    from neural_reg.database import lock_free, lock_holder
    from schemas import recording

    connection = recording.schema.connection
    with schemas.setup_lock(connection, db):
        assert not lock_free(connection, schemas.setup_lock_name(db))
        assert lock_holder(connection, schemas.setup_lock_name(db)) == (
            connection.query("SELECT pg_backend_pid()" if connection.adapter.backend == "postgresql"
                             else "SELECT CONNECTION_ID()").fetchone()[0])
    assert lock_free(connection, schemas.setup_lock_name(db))
    summary = schemas.setup(db, connection)  # a second setup changes nothing
    assert summary["missing"] == [] and len(summary["schemas"]) == len(schemas.SCHEMA_NAMES)
