"""Where the big arrays live: the DataJoint store ``bulk`` of every ``<npfile@bulk>`` column (schemas/codecs.py).

Responses, similarity matrices, targets and trained weights are objects in a store, not LONGBLOBs in the
database; each row holds its object's path, size and SHA-256. The store is configured per machine (first wins):

1. environment: ``NEURALREG_STORE`` = a folder (``/mnt/lab/neural-reg-store``) or a bucket URL
   (``s3://neural-reg/alice``, with ``NEURALREG_STORE_ENDPOINT=https://minio.lab:9000`` for MinIO or any other
   S3-compatible server); credentials ``NEURALREG_STORE_ACCESS_KEY`` and ``NEURALREG_STORE_SECRET_KEY``;
2. ``neural-reg.json``'s ``store`` section: ``{"location": "/mnt/lab/neural-reg-store"}``, or ``{"protocol":
   "s3", "endpoint": "https://minio.lab:9000", "bucket": "neural-reg", "location": "alice", "access_key":
   "...", "secret_key_file": "~/.neural-reg-s3"}`` (the secret key never goes in the file itself);
3. default: the folder ``<home>/store``, next to the private server's data (``<home>/mysql``).

An S3 store without access_key and secret key uses botocore's own chain (``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY``, ``~/.aws/credentials``, an instance role). Every machine of a lab (workers, analysts)
must point at the same store: a shared disk or a bucket. A plain DataJoint client configures the same store as
DataJoint does, e.g. ``DJ_STORES='{"bulk": {"protocol": "file", "location": "/mnt/lab/neural-reg-store"}}'``.

Objects are never mistaken for another row's: each write goes to a new path (a random token in the name), the
row records its SHA-256, and fetching checks it. DataJoint's delete leaves objects behind; neural-reg's delete
(``neural-reg delete``, :func:`delete`) removes the deleted rows' objects after the delete committed,
``neural-reg db drop`` removes a prefix's objects with its schemas, and ``python -m neural_reg.stores gc``
reports (``--delete``: removes) objects no row references, older than an hour (a younger one may belong to an
insert still in progress).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from neural_reg.settings import Settings, SettingsError, load_settings

STORE = "bulk"  # as in schemas/codecs.py (not imported here: that module imports DataJoint)
GC_MIN_AGE_S = 3600.0


def _store_section(settings: Settings) -> tuple[dict, str]:
    if not settings.config_file:
        return {}, "defaults"
    try:
        data = json.loads(Path(settings.config_file).read_text())
    except (OSError, ValueError):  # load_settings read and checked it already; a file changed since is its own error
        return {}, str(settings.config_file)
    return dict(data.get("store") or {}), f"{settings.config_file}: field 'store'"


def _read_secret_file(path: str, source: str) -> str:
    file = Path(path).expanduser()
    try:
        secret = file.read_text().strip()
    except OSError as err:
        raise SettingsError(f"{source}: secret_key_file {file} cannot be read ({type(err).__name__}). Fix: create "
                            "it (mode 0600) holding the store's secret key, or set NEURALREG_STORE_SECRET_KEY.") \
            from None
    if not secret:
        raise SettingsError(f"{source}: secret_key_file {file} is empty. Fix: write the store's secret key into it.")
    return secret


def store_spec(settings: Settings | None = None) -> dict:
    """The DataJoint store specification of ``bulk`` (``dj.config['stores']['bulk']``), resolved as the module's
    docstring says; raises SettingsError naming the setting and the fix when it is incomplete."""
    settings = settings or load_settings()
    env = os.environ
    if env.get("NEURALREG_STORE"):
        source, url = "NEURALREG_STORE", env["NEURALREG_STORE"].strip()
        if url.startswith("s3://"):
            bucket, _, location = url[5:].partition("/")
            section = {"protocol": "s3", "bucket": bucket, "location": location.strip("/")}
            if env.get("NEURALREG_STORE_ENDPOINT"):
                section["endpoint"] = env["NEURALREG_STORE_ENDPOINT"]
        elif "://" in url and not url.startswith("file://"):
            raise SettingsError(f"NEURALREG_STORE={url!r}: only a folder or an s3:// URL is supported. Fix: e.g. "
                                "NEURALREG_STORE=/mnt/lab/neural-reg-store or NEURALREG_STORE=s3://bucket/folder.")
        else:
            section = {"protocol": "file", "location": url.removeprefix("file://")}
    else:
        section, source = _store_section(settings)
        if not section:
            section, source = {"protocol": "file", "location": str(settings.home / "store")}, "default"
    protocol = section.get("protocol", "file").lower()
    if protocol == "file":
        unknown = sorted(set(section) - {"protocol", "location"})
        if unknown:
            raise SettingsError(f"{source}: {', '.join(unknown)} apply to an S3 store only. Fix: add "
                                "\"protocol\": \"s3\", or remove them.")
        if not section.get("location"):
            raise SettingsError(f"{source}: a file store needs its folder. Fix: e.g. \"store\": {{\"location\": "
                                "\"/mnt/lab/neural-reg-store\"}.")
        return {"protocol": "file", "location": str(Path(section["location"]).expanduser().resolve())}
    if protocol != "s3":
        raise SettingsError(f"{source}: protocol {protocol!r} is not supported. Fix: 'file' (a folder, also a "
                            "shared disk) or 's3' (AWS S3, MinIO or another S3-compatible server).")
    missing = [k for k in ("endpoint", "bucket") if not section.get(k)]
    if missing:
        fix = ("set NEURALREG_STORE_ENDPOINT, e.g. https://minio.lab:9000 (AWS: https://s3.amazonaws.com)"
               if source == "NEURALREG_STORE" else
               'e.g. "store": {"protocol": "s3", "endpoint": "https://minio.lab:9000", "bucket": "neural-reg"}')
        raise SettingsError(f"{source}: an S3 store needs {' and '.join(missing)}. Fix: {fix}.")
    access = env.get("NEURALREG_STORE_ACCESS_KEY") or section.get("access_key")
    secret = env.get("NEURALREG_STORE_SECRET_KEY") or (
        _read_secret_file(section["secret_key_file"], source) if section.get("secret_key_file") else None)
    if bool(access) != bool(secret):
        half = "an access key but no secret key" if access else "a secret key but no access key"
        raise SettingsError(f"{source}: the S3 store has {half}. Fix: give both (NEURALREG_STORE_ACCESS_KEY and "
                            "NEURALREG_STORE_SECRET_KEY, or access_key and secret_key_file), or neither to use "
                            "the AWS credential chain (AWS_ACCESS_KEY_ID, ~/.aws/credentials).")
    endpoint = section["endpoint"]
    spec = {"protocol": "s3", "endpoint": endpoint, "bucket": section["bucket"],
            "location": section.get("location", "").strip("/"), "secure": not endpoint.startswith("http://")}
    if access:
        spec.update(access_key=access, secret_key=secret)
    return spec


def configure(settings: Settings | None = None, config=None, spec: dict | None = None) -> dict:
    """Point DataJoint's store ``bulk`` (``config.stores``, default ``dj.config``) at this lab's store; a local
    folder is created. Returns the specification (the secret key included: never print it)."""
    import datajoint as dj

    spec = dict(spec or store_spec(settings))
    if spec["protocol"] == "file":
        try:
            Path(spec["location"]).mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise SettingsError(f"store folder {spec['location']} cannot be created ({err.strerror}). Fix: create "
                                "it, or set NEURALREG_STORE / neural-reg.json 'store' to a writable folder.") from None
    (config if config is not None else dj.config).stores[STORE] = spec
    return spec


def describe(spec: dict) -> str:
    """The store, for people: its folder or bucket URL (never a credential)."""
    if spec["protocol"] == "file":
        return spec["location"]
    return f"s3://{spec['bucket']}/{spec.get('location', '')} at {spec['endpoint']}"


def _backend(config=None):
    from datajoint.hash_registry import get_store_backend

    return get_store_backend(STORE, config=config)


# -------------------------------------------------------------------------------- objects of rows
def referenced(tables) -> set[str]:
    """Paths in ``bulk`` that the rows of ``tables`` (table objects or restricted expressions) reference; reads the
    rows' metadata only."""
    paths = set()
    for table in tables:
        for name in table.heading.schema_objects:
            codec = table.heading.attributes[name].codec
            for row in table.proj(name).cursor(as_dict=True):
                paths.update(p for p, store in codec.referenced_paths(row[name]) if store == STORE)
    return paths


def _schema_tables(connection, databases):
    import datajoint as dj

    for database in databases:
        if database in dj.list_schemas(connection=connection):
            schema = dj.Schema(database, connection=connection, create_tables=False)
            for name in schema.list_tables():
                yield dj.FreeTable(connection, connection.adapter.make_full_table_name(database, name))


def remove_objects(paths, config=None) -> int:
    backend = _backend(config)
    removed = 0
    for path in paths:
        if backend.exists(path):
            backend.remove(path)
            removed += 1
    return removed


def delete(expr, part_integrity: str = "enforce") -> tuple[int, int]:
    """DataJoint's cascading delete of ``expr`` (one transaction, no prompt), then the removal of the objects that
    only the deleted rows referenced. Returns (root rows deleted, objects removed). Inside a caller's transaction
    the objects stay (the delete may yet roll back): ``python -m neural_reg.stores gc`` removes them later."""
    import datajoint as dj

    paths, databases = set(), set()
    if STORE in expr.connection._config.stores:
        diagram = dj.Diagram.cascade(expr, part_integrity=part_integrity)
        restricted = set(diagram._cascade_restrictions or diagram._restrict_conditions)  # as Diagram.counts()
        tables = [table for table in diagram if table.full_table_name in restricted]
        paths = referenced(tables)
        databases = {table.database for table in tables}
    deleted = expr.delete(prompt=False, part_integrity=part_integrity)
    if not paths or expr.connection.in_transaction:
        return deleted, 0
    # a path that another row still references (a row copied with INSERT ... SELECT) stays
    still = referenced(_schema_tables(expr.connection, databases))
    return deleted, remove_objects(paths - still, config=expr.connection._config)


def drop_objects(database: str, config=None) -> None:
    """Remove every object of one schema (``_schema/<database>/`` in ``bulk``): after that schema was dropped."""
    import datajoint as dj

    config = config if config is not None else dj.config
    if STORE not in config.stores:
        configure(config=config)  # this machine's store (a drop that did not activate the schemas first)
    backend = _backend(config)
    prefix = config.get_store_spec(STORE)["schema_prefix"].strip("/")
    folder = backend._full_path(f"{prefix}/{database}" if prefix else database)
    try:
        if backend.fs.exists(folder):
            backend.fs.rm(folder, recursive=True)
    except FileNotFoundError:
        pass


def _mtime(info: dict) -> float | None:
    value = info.get("mtime", info.get("LastModified", info.get("last_modified")))
    if value is None:
        return None
    return value.timestamp() if hasattr(value, "timestamp") else float(value)


def collect_garbage(prefix: str, connection, delete: bool = False, min_age_s: float = GC_MIN_AGE_S,
                    databases=None) -> dict:
    """Objects of the prefix's schemas (or of ``databases``) in ``bulk`` that no row references (DataJoint's
    GarbageCollector), those older than ``min_age_s`` removed when ``delete``. Returns DataJoint's report with
    ``removed`` and ``kept_young``."""
    import datajoint as dj

    import schemas

    databases = databases or [f"{prefix}_{name}" for name in schemas.SCHEMA_NAMES]
    present = [d for d in databases if d in dj.list_schemas(connection=connection)]
    if not present:
        return {"schemas": [], "orphaned_schema_paths": [], "removed": 0, "kept_young": 0}
    collector = dj.gc.GarbageCollector(*(dj.Schema(d, connection=connection, create_tables=False) for d in present),
                                       store=STORE, config=connection._config)
    report = collector.collect(dry_run=True)
    removed = young = 0
    now = time.time()
    for path in report["orphaned_schema_paths"]:
        mtime = _mtime(collector.backend.fs.info(collector.backend._full_path(path)))
        if mtime is not None and now - mtime < min_age_s:
            young += 1
        elif delete and collector.delete_schema_path(path):
            removed += 1
    return {**report, "schemas": present, "removed": removed, "kept_young": young}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m neural_reg.stores", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("show", help="the store this machine uses")
    gc = sub.add_parser("gc", help="objects no row references (older than an hour); --delete removes them")
    gc.add_argument("--delete", action="store_true")
    gc.add_argument("--min-age", type=float, default=GC_MIN_AGE_S, help="seconds (default 3600)")
    args = parser.parse_args(argv)
    settings = load_settings()
    if args.command == "show":
        print(f"store '{STORE}': {describe(store_spec(settings))}")
        return 0
    from neural_reg.database import connect

    connection = connect(settings)
    configure(settings)
    report = collect_garbage(settings.prefix, connection, delete=args.delete, min_age_s=args.min_age)
    print(f"prefix {settings.prefix}: {report['schema_paths_orphaned'] if report['schemas'] else 0} unreferenced "
          f"object(s), {report.get('schema_paths_orphaned_bytes', 0) / 1e6:.1f} MB; {report['kept_young']} younger "
          f"than {args.min_age:.0f} s kept; {report['removed']} removed"
          + ("" if args.delete else " (run with --delete to remove them)"))
    return 0


if __name__ == "__main__":
    from pipeline.errors import NeuralRegError

    try:
        sys.exit(main())
    except NeuralRegError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
