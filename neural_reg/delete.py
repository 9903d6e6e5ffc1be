"""Deleting with care: ``neural-reg delete`` and ``neural-reg db drop`` show what would go, then ask.

``delete scan|config|classifier KEY...`` names one row by attr=value pairs (as ``neural-reg export`` does) and
deletes it with DataJoint's cascade: every row downstream of it, in every schema. The cascade is computed first
(``dj.Diagram.cascade(...).counts()``, DataJoint 2.3.5: what ``delete`` would remove, nothing changed) and shown
table by table; then it is confirmed on the terminal (or ``--yes``) and deleted in one transaction.

``db drop PREFIX`` lists the prefix's schemas with their tables' row counts, then drops them, downstream first.

A run without ``--yes`` whose stdin is not a terminal (a script, a job) refuses: nothing is deleted, exit 2.
"""

from __future__ import annotations

import sys

from pipeline.errors import NeuralRegError

WHAT = ("scan", "config", "classifier")


class DeleteError(NeuralRegError):
    """A delete that cannot go ahead (no such row, an ambiguous key, not confirmed); the message says the fix."""


# -------------------------------------------------------------------------------- which rows
def config_tables() -> list:
    """The parameter-set tables (a hash and a unique name each), e.g. robustness.NoiseConfig, in schema order."""
    import schemas
    from schemas.paramset import ParamSet

    return [table for module in schemas.modules() for table, _ in schemas.table_classes(module)
            if issubclass(table, ParamSet)]


def _config_table(key: dict):
    tables = config_tables()
    matching = [t for t in tables if {t.hash_attr, t.name_attr} & set(key)]
    if len(matching) == 1:
        return matching[0]
    names = ", ".join(f"{t.name_attr} (or {t.hash_attr})" for t in tables)
    raise DeleteError(f"config key {key}: names {'no' if not matching else 'more than one'} configuration table. "
                      f"Fix: give one of {names}, e.g. noise_name=demo")


def resolve(what: str, key: dict):
    """(label, restricted table) of the one row ``key`` names: a scan, a configuration or a trained classifier."""
    from . import export

    if what == "scan":
        from schemas import recording

        return "recording.Scan", recording.Scan & export.find_scan(key)
    if what == "classifier":
        from schemas import classifier

        return "classifier.TrainedClassifier", classifier.TrainedClassifier & export.find_classifier(key)
    if what == "config":
        table = _config_table(key)
        label = f"{table.__module__.split('.')[-1]}.{table.__name__}"
        fix = f"give the {table.name_attr} (or {table.hash_attr}) of an existing {table.__name__}"
        full = export._one_row(table.proj(table.name_attr), key, [table.hash_attr, table.name_attr], label, fix)
        return label, table & {table.hash_attr: full[table.hash_attr]}
    raise DeleteError(f"cannot delete a {what!r}. Fix: choose one of {', '.join(WHAT)}")


# -------------------------------------------------------------------------------- the cascade
def table_labels() -> dict:
    """{full table name: 'module.Class'} (parts 'module.Master.Part') of every activated schema's tables."""
    import datajoint as dj

    import schemas

    labels = {}
    for module in schemas.modules():
        short = module.__name__.split(".")[-1]
        database = module.schema.database
        for table, name in schemas.table_classes(module):
            if issubclass(table, dj.Part):
                master = next(m for m, _ in schemas.table_classes(module) if any(v is table for v in vars(m).values()))
                label = f"{short}.{master.__name__}.{table.__name__}"
            else:
                label = f"{short}.{table.__name__}"
            q = module.schema.connection.adapter.quote_identifier  # `x` on MySQL, "x" on PostgreSQL
            labels[f"{q(database)}.{q(name)}"] = label
    return labels


def cascade(expr, part_integrity: str = "enforce") -> list[tuple[str, str, int]]:
    """What ``expr.delete(part_integrity=...)`` would remove, nothing changed: (label, full table name, rows) per
    table with rows, upstream first."""
    import datajoint as dj

    labels = table_labels()
    counts = dj.Diagram.cascade(expr, part_integrity=part_integrity).counts()
    return [(labels.get(name, name), name, n) for name, n in counts.items() if n]


def check_part_integrity(rows: list[tuple[str, str, int]]) -> None:
    """DataJoint refuses to delete a part's rows without its master's (part_integrity 'enforce'): say so first."""
    from datajoint.dependencies import extract_master as get_master

    taken = {name for _, name, _ in rows}
    orphaned = [(label, name) for label, name, _ in rows if get_master(name) and get_master(name) not in taken]
    if orphaned:
        parts = ", ".join(label for label, _ in orphaned)
        raise DeleteError(f"the cascade takes rows of the part table(s) {parts} but not of their master(s), which "
                          "DataJoint does not allow. Fix: add --part-integrity cascade to delete the masters' rows "
                          "too (and all that depends on them: shown before you confirm), or delete the master first")


def format_cascade(rows: list[tuple[str, str, int]]) -> str:
    width = max((len(label) for label, _, _ in rows), default=0)
    lines = [f"  {label:<{width}}  {n:>7} row(s)" for label, _, n in rows]
    return "\n".join(lines + [f"  {'total':<{width}}  {sum(n for _, _, n in rows):>7} row(s)"])


def delete(expr, part_integrity: str = "enforce") -> int:
    """DataJoint's cascading delete, in one transaction, without its own prompt, then the removal of the store
    objects only the deleted rows referenced (DataJoint leaves them: neural_reg.stores); returns the root rows
    deleted."""
    from .stores import delete as delete_with_objects

    return delete_with_objects(expr, part_integrity)[0]


# -------------------------------------------------------------------------------- db drop
def prefix_schemas(prefix: str, connection) -> list[tuple[str, list[tuple[str, int]]]]:
    """(schema, [(table, rows)]) of every schema of ``prefix`` the server has, downstream first (drop order)."""
    import schemas

    names = [f"{prefix}_{name}" for name in reversed(schemas.SCHEMA_NAMES)]
    found = connection.query(
        "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA IN "
        f"({', '.join(['%s'] * len(names))}) ORDER BY TABLE_NAME", args=names).fetchall()
    present = connection.query(
        f"SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME IN ({', '.join(['%s'] * len(names))})",
        args=names).fetchall()
    present = {str(r[0]) for r in present}
    out = []
    for schema in names:
        if schema not in present:
            continue
        tables = []
        for db, table in found:
            if str(db) == schema:
                name = connection.adapter.make_full_table_name(schema, str(table))
                n = connection.query(f"SELECT COUNT(*) FROM {name}").fetchone()[0]
                tables.append((str(table), int(n)))
        out.append((schema, tables))
    return out


def format_schemas(found: list[tuple[str, list[tuple[str, int]]]]) -> str:
    lines = []
    for schema, tables in found:
        lines.append(f"  {schema}: {len(tables)} tables, {sum(n for _, n in tables)} rows")
    return "\n".join(lines)


# -------------------------------------------------------------------------------- asking
def confirm(question: str, yes: bool = False, expected: tuple[str, ...] = ("y", "yes"), stdin=None) -> bool:
    """True with ``yes``; else the answer read from stdin, which must be a terminal: a non-interactive run without
    ``--yes`` raises DeleteError (nothing done; the command line exits 2)."""
    if yes:
        return True
    stdin = stdin or sys.stdin
    try:
        interactive = stdin.isatty()
    except (AttributeError, ValueError):
        interactive = False
    if not interactive:
        raise DeleteError("not confirmed: stdin is not a terminal, so nothing was deleted. Fix: check the list above "
                          "and run the command again with --yes")
    print(question, end=" ", flush=True)
    answer = stdin.readline().strip().lower()
    return answer in expected
