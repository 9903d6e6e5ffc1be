"""A colleague with DataJoint and neural-reg installed, and no project code imported, reads every array the project
wrote: a fresh process that imports only ``datajoint`` opens each schema with ``dj.VirtualModule`` and fetches every
codec column (``<ndarray>``, ``<npfile@bulk>``, ``<blob>``) of every table, equal to what the project's classes
fetch. DataJoint finds the project's codecs through the ``datajoint.codecs`` entry points (pyproject.toml), and the
store through ``DJ_STORES``, as any DataJoint user configures one."""

import json
import os
import pickle
import re
import subprocess
import sys
import textwrap

import datajoint as dj
import numpy as np

import schemas

PLAIN_CLIENT = textwrap.dedent('''
    import pickle, sys
    import datajoint as dj

    project = lambda: sorted(m for m in sys.modules if m.split(".")[0] in ("schemas", "neural_reg", "pipeline"))
    assert not project(), project()  # nothing of neural-reg imported by this script
    prefix, names, out = sys.argv[1], sys.argv[2].split(","), sys.argv[3]
    fetched = {}
    for name in names:
        module = dj.VirtualModule(name, f"{prefix}_{name}")
        tables = [t for t in vars(module).values() if isinstance(t, type) and issubclass(t, dj.Table)]
        tables += [p for t in list(tables) for p in vars(t).values() if isinstance(p, type) and issubclass(p, dj.Part)]
        for table in tables:
            table = table()
            columns = [a for a, attr in table.heading.attributes.items() if attr.codec is not None]
            if columns:
                rows = table.to_dicts()
                fetched[table.full_table_name] = {
                    tuple(row[k] for k in table.primary_key): {c: row[c] for c in columns} for row in rows}
    with open(out, "wb") as f:
        pickle.dump({"fetched": fetched, "loaded": project()}, f)
''')


def same(a, b) -> bool:
    if isinstance(a, dict) or isinstance(b, dict):
        return isinstance(a, dict) and isinstance(b, dict) and list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
                and a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
    return type(a) is type(b) and (a == b or (a != a and b != b))


def project_values(prefix: str) -> dict:
    """What the project's own classes fetch from every codec column, keyed like the plain client's."""
    values = {}
    for module in schemas.modules():
        for cls, _ in schemas.table_classes(module):
            table = cls()
            columns = [a for a, attr in table.heading.attributes.items() if attr.codec is not None]
            if columns:
                values[table.full_table_name] = {
                    tuple(row[k] for k in table.primary_key): {c: row[c] for c in columns} for row in table.to_dicts()}
    return values


def test_plain_datajoint_reads_every_array_column(populated, db, tmp_path):
    out = tmp_path / "fetched.pkl"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEURALREG_", "DJ_", "PYTHONPATH"))}
    env.update(DJ_HOST=str(dj.config["database.host"]), DJ_PORT=str(dj.config["database.port"]),
               DJ_USER=str(dj.config["database.user"]), DJ_PASS=str(dj.config["database.password"]),
               DJ_BACKEND=str(dj.config["database.backend"]),
               DJ_STORES=json.dumps({"bulk": dj.config.stores["bulk"]}))
    if dj.config.get("database.name"):
        env["DJ_DATABASE_NAME"] = str(dj.config["database.name"])
    # run outside the repository, so `schemas` is importable only as the installed neural-reg package
    result = subprocess.run([sys.executable, "-c", PLAIN_CLIENT, db, ",".join(schemas.SCHEMA_NAMES), str(out)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    with open(out, "rb") as f:
        plain = pickle.load(f)
    # what DataJoint loaded on its own for the codecs: the codec module (and its package's light __init__) only
    assert "schemas.codecs" in plain["loaded"]
    assert not [m for m in plain["loaded"] if m.startswith(("pipeline", "neural_reg."))], plain["loaded"]
    ours = project_values(db)
    assert set(plain["fetched"]) == set(ours)
    kinds = set()
    for table, rows in ours.items():
        heading = dj.FreeTable(dj.conn(), table).heading
        assert set(plain["fetched"][table]) == set(rows), table
        for key, row in rows.items():
            for column, value in row.items():
                assert same(plain["fetched"][table][key][column], value), (table, key, column)
                kinds.add(heading.attributes[column].codec.name)
    assert {"ndarray", "npfile", "blob"} <= kinds
    # every schema of the tiny experiment has rows with arrays the plain client read
    filled = {re.split("[`\"]", name)[1].removeprefix(f"{db}_") for name, rows in ours.items() if rows}
    assert filled == set(schemas.SCHEMA_NAMES), filled
    npfile_rows = sum(len(rows) for table, rows in ours.items()
                      if any(dj.FreeTable(dj.conn(), table).heading.attributes[c].codec.name == "npfile"
                             for row in rows.values() for c in row))
    assert npfile_rows > 0
