"""Accounts on a lab's server, each with one role on one prefix's schemas (the ``<prefix>_*`` databases).

- ``analyst``: SELECT on the prefix's schemas. Reads everything, writes nothing.
- ``worker``: SELECT on the prefix's schemas; INSERT, UPDATE and DELETE on the tables workers compute
  (Computed and Imported tables, their part tables, and their job tables, ``~~<table>``); nothing on recordings
  or configurations (Manual and Lookup tables and their parts); no CREATE, DROP or ALTER.
- ``admin``: ALL PRIVILEGES on the prefix's schemas: declares (``neural-reg db setup``), drops, ingests, enters
  experiments.

MySQL and MariaDB grant per database or per table, so the worker's grants name each table: the schemas and
their job tables must be declared first (``neural-reg db setup``), and ``setup`` re-grants every worker of the
prefix when it declares new tables. Accounts are created by an account that may create accounts and grant
(the server's root, or the private server's own account). Statements are standard MySQL 8 / MariaDB 10.11 SQL.

On PostgreSQL (DataJoint's other backend) an account is a login role and a schema a schema of the lab's
database: an analyst has USAGE on the prefix's schemas and SELECT on their tables; a worker that, and INSERT,
UPDATE, DELETE on the tables workers compute; an admin ALL on the schemas and their tables and CREATE on the
database (to declare the prefix's schemas: PostgreSQL has no grant on schemas not made yet, so an admin could
create other schemas there too). Grants name tables as on MySQL, so ``setup`` re-grants every analyst and
worker of the prefix. PostgreSQL has no per-host accounts: ``--host`` must be ``%`` (where a role may log in
from is the server's pg_hba.conf). A table belongs to the role that declared it: an admin drops only its own.

A generated password is returned once (``neural-reg db add-user`` prints it, once, to stdout), stored nowhere,
sent to the server only as a bound parameter, and never part of an error message.
"""

from __future__ import annotations

import re
import secrets
import string

from .database import ACCESS_DENIED, DatabaseError, scrub

ROLES = ("analyst", "worker", "admin")
NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,31}$")  # MySQL 8 allows 32 characters
HOST_PATTERN = re.compile(r"^[A-Za-z0-9_.%:-]{1,255}$")  # '%', '10.1.%', 'node12.cluster', '127.0.0.1'
# what a worker may do to the tables it computes
WORKER_WRITE = "INSERT, UPDATE, DELETE"


class AccountError(DatabaseError):
    """An account request the server cannot carry out; the message says why and the fix."""


# -- what the tables are -----------------------------------------------------------------------------------------
def schema_names(prefix: str) -> list[str]:
    from schemas import SCHEMA_NAMES

    return [f"{prefix}_{name}" for name in SCHEMA_NAMES]


def table_kind(table_name: str) -> str:
    """DataJoint's tier of a table from its name: 'job' (``~~x``), 'hidden' (``~lineage``), 'computed' (``__x``),
    'imported' (``_x``), 'lookup' (``#x``) or 'manual' (``x``); a part table has its master's tier."""
    if table_name.startswith("~~"):
        return "job"
    if table_name.startswith("~"):
        return "hidden"
    if table_name.startswith("__"):
        return "computed"
    if table_name.startswith("_"):
        return "imported"
    if table_name.startswith("#"):
        return "lookup"
    return "manual"


def worker_writable(table_name: str) -> bool:
    """Whether a worker writes this table: computed and imported tables, their parts, and job tables."""
    return table_kind(table_name) in ("job", "computed", "imported")


def is_master(table_name: str) -> bool:
    return "__" not in table_name.lstrip("_#~")


def is_postgres(connection) -> bool:
    from .database import _is_postgres

    return _is_postgres(connection)


def project_tables(connection, prefix: str) -> dict[str, list[str]]:
    """Every table of the prefix's schemas, per schema, as the server lists them (schemas not declared: absent)."""
    names = schema_names(prefix)
    rows = _fetch(connection, "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA IN "
                  f"({', '.join(['%s'] * len(names))}) ORDER BY TABLE_SCHEMA, TABLE_NAME", names)
    tables: dict[str, list[str]] = {}
    for database, table in rows:
        tables.setdefault(_text(database), []).append(_text(table))
    return tables


def setup_missing(connection, prefix: str) -> list[str]:
    """What ``neural-reg db setup`` has not declared yet: schemas, and job tables of auto-populated tables."""
    tables = project_tables(connection, prefix)
    missing = [f"schema {name}" for name in schema_names(prefix) if name not in tables]
    for database, names in tables.items():
        present = set(names)
        missing += [f"{database}.~~{t.lstrip('_')}" for t in names if table_kind(t) in ("computed", "imported")
                    and is_master(t) and f"~~{t.lstrip('_')}" not in present]
    return missing


# -- grants ------------------------------------------------------------------------------------------------------
def account_name(name: str, host: str = "%") -> str:
    """'name'@'host', checked (the patterns admit no quote, backslash or space)."""
    if not NAME_PATTERN.match(name or ""):
        raise AccountError(f"account name {name!r} is not valid. Fix: letters, digits, '_', '.', '-', starting with "
                           "a letter, at most 32 characters (e.g. w1, alice).")
    if not HOST_PATTERN.match(host or ""):
        raise AccountError(f"host {host!r} is not valid. Fix: '%' (anywhere), a host name, an IP address, or a "
                           "pattern such as '10.1.%'.")
    return f"'{name}'@'{host}'"


def _wildcards_literal(connection) -> bool:
    """Whether '_' and '%' in a database-level grant are plain characters (MySQL 8 with partial_revokes on)."""
    try:
        return bool(int(_fetch(connection, "SELECT @@partial_revokes")[0][0] or 0))
    except AccountError:  # MariaDB has no partial_revokes: wildcards are wildcards
        return False


def _db_level(database: str, literal: bool) -> str:
    """A database's name in a database-level grant: '_' is a wildcard there (alice_x would also match alicex_x),
    so it is escaped, unless the server takes wildcards literally."""
    escaped = database if literal else database.replace("_", "\\_").replace("%", "\\%")
    return f"`{escaped}`.*"


def role_name(name: str, host: str = "%") -> str:
    """"name": a PostgreSQL role, checked (the pattern admits no quote); PostgreSQL has no per-host accounts."""
    account_name(name, "%")
    if host != "%":
        raise AccountError(f"host {host!r}: PostgreSQL accounts are not per host. Fix: leave --host out (where a "
                           "role may connect from is the server's pg_hba.conf).")
    return f'"{name}"'


def _pg_grant_statements(connection, prefix: str, role: str, account: str) -> list[str]:
    tables = project_tables(connection, prefix)
    present = [db for db in schema_names(prefix) if db in tables]
    if role == "admin":
        database = _text(_fetch(connection, "SELECT current_database()")[0][0])
        statements = [f'GRANT CREATE ON DATABASE "{database}" TO {account}']
        for db in present:
            statements += [f'GRANT ALL ON SCHEMA "{db}" TO {account}',
                           f'GRANT ALL ON ALL TABLES IN SCHEMA "{db}" TO {account}']
        return statements
    statements = []
    for db in present:
        # REFERENCES beside SELECT: PostgreSQL's information_schema.table_constraints shows a table's primary key
        # only to a role with some privilege other than SELECT on it, and DataJoint reads the key from there (a
        # SELECT-only role sees every table keyless and DataJoint builds broken SQL). REFERENCES lets a role
        # create foreign keys to the table, which needs CREATE on a schema, which these roles do not have.
        statements += [f'GRANT USAGE ON SCHEMA "{db}" TO {account}',
                       f'GRANT SELECT, REFERENCES ON ALL TABLES IN SCHEMA "{db}" TO {account}']
        if role == "worker":
            statements += [f'GRANT {WORKER_WRITE} ON "{db}"."{t}" TO {account}' for t in tables[db]
                           if worker_writable(t)]
    return statements


def grant_statements(connection, prefix: str, role: str, account: str) -> list[str]:
    """The GRANT statements that give ``account`` ('name'@'host'; "name" on PostgreSQL) ``role`` on the prefix's
    schemas."""
    if role not in ROLES:
        raise AccountError(f"role {role!r} is not one of {', '.join(ROLES)}. Fix: --role analyst|worker|admin.")
    if is_postgres(connection):
        return _pg_grant_statements(connection, prefix, role, account)
    literal = _wildcards_literal(connection)
    if role == "admin":
        return [f"GRANT ALL PRIVILEGES ON {_db_level(db, literal)} TO {account}" for db in schema_names(prefix)]
    statements = [f"GRANT SELECT ON {_db_level(db, literal)} TO {account}" for db in schema_names(prefix)]
    if role == "worker":
        for database, tables in project_tables(connection, prefix).items():
            statements += [f"GRANT {WORKER_WRITE} ON `{database}`.`{t}` TO {account}" for t in tables
                           if worker_writable(t)]
    return statements


def _require_setup(connection, prefix: str, role: str) -> None:
    if role == "admin":
        return  # an admin may declare the schemas itself
    missing = setup_missing(connection, prefix)
    if missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        raise AccountError(f"prefix '{prefix}' is not set up ({shown} missing): a {role}'s grants name its tables. "
                           f"Fix: run `neural-reg db setup` (as an admin, NEURALREG_PREFIX={prefix}) first.")


def grant_role(connection, prefix: str, name: str, role: str, host: str = "%") -> int:
    """Give an existing account ``role`` on the prefix's schemas (idempotent); return the number of grants."""
    account = role_name(name, host) if is_postgres(connection) else account_name(name, host)
    _require_setup(connection, prefix, role)
    statements = grant_statements(connection, prefix, role, account)
    for sql in statements:
        _execute(connection, sql)
    return len(statements)


def generate_password(length: int = 28) -> str:
    """A random password with upper and lower case, digits and '-'/'_' (passes MySQL's validate_password)."""
    alphabet = string.ascii_letters + string.digits + "-_"
    chars = [secrets.choice(alphabet) for _ in range(length - 4)]
    chars += [secrets.choice(string.ascii_uppercase), secrets.choice(string.ascii_lowercase),
              secrets.choice(string.digits), secrets.choice("-_")]
    secrets.SystemRandom().shuffle(chars)
    return "".join(chars)


def add_user(connection, prefix: str, name: str, role: str, host: str = "%") -> str:
    """Create account ``name``@``host`` with ``role`` on the prefix's schemas; return its generated password.

    The password is returned once and stored nowhere. An account that exists already is an error (nothing
    changes); if a grant fails, the new account is dropped again.
    """
    postgres = is_postgres(connection)
    account = role_name(name, host) if postgres else account_name(name, host)
    if role not in ROLES:
        raise AccountError(f"role {role!r} is not one of {', '.join(ROLES)}. Fix: --role analyst|worker|admin.")
    _require_setup(connection, prefix, role)
    password = generate_password()
    try:
        if postgres:  # the driver quotes the password into the statement (no server-side parameters for DDL)
            _execute(connection, f"CREATE ROLE {account} LOGIN PASSWORD %s", secret=password, args=(password,))
        else:
            literal = _raw(connection).escape(password)  # quoted and escaped by the driver, for this connection
            _execute(connection, f"CREATE USER {account} IDENTIFIED BY {literal}", secret=password)
    except AccountError as err:
        if getattr(err, "code", None) in (1396, "42710"):
            raise AccountError(f"account {account} exists already. Fix: pick another name, or `neural-reg db "
                               f"remove-user {name}` first.") from None
        raise
    try:
        grant_role(connection, prefix, name, role, host)
    except BaseException:
        if postgres:
            _pg_drop_role(connection, name)
        else:
            _execute(connection, f"DROP USER IF EXISTS {account}")
        raise
    return password


def remove_user(connection, name: str, host: str = "%") -> bool:
    """Drop account ``name``@``host`` (and with it its grants); return whether it existed."""
    if is_postgres(connection):
        role_name(name, host)
        return _pg_drop_role(connection, name)
    account = account_name(name, host)
    try:
        _execute(connection, f"DROP USER {account}")
    except AccountError as err:
        if getattr(err, "code", None) == 1396:
            return False
        raise
    return True


def _pg_drop_role(connection, name: str) -> bool:
    """DROP ROLE, after taking its privileges in this database (DROP OWNED BY, which would also drop what it owns:
    a role that owns tables is refused instead, with the fix)."""
    if not _fetch(connection, "SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)):
        return False
    owned = _fetch(connection, "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = "
                   "c.relnamespace JOIN pg_roles r ON r.oid = c.relowner WHERE r.rolname = %s UNION ALL "
                   "SELECT n.nspname, '' FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner WHERE "
                   "r.rolname = %s LIMIT 3", (name, name))
    if owned:
        shown = ", ".join(f"{_text(s)}.{_text(t)}" if _text(t) else _text(s) for s, t in owned)
        raise AccountError(f'role "{name}" owns tables or schemas ({shown} ...): dropping it would drop them. Fix: '
                           f'give them to another admin first (REASSIGN OWNED BY "{name}" TO other_admin, as the '
                           "database's owner), then remove the account.")
    member = _fetch(connection, "SELECT pg_has_role(current_user, %s, 'USAGE')", (name,))[0][0]
    if not member:  # DROP OWNED needs the role's privileges: a CREATEROLE account may take them
        _execute(connection, f'GRANT "{name}" TO CURRENT_USER')
    _execute(connection, f'DROP OWNED BY "{name}"')
    _execute(connection, f'DROP ROLE "{name}"')
    return True


def _pg_prefix_accounts(connection, prefix: str) -> list[tuple[str, str]] | None:
    """(role, 'worker' or 'analyst') of every role but the owners with privileges on the prefix's tables."""
    names = schema_names(prefix)
    rows = _fetch(connection, "SELECT r.rolname, bool_or(a.privilege_type = 'INSERT') FROM pg_class c JOIN "
                  "pg_namespace n ON n.oid = c.relnamespace CROSS JOIN LATERAL aclexplode(c.relacl) a JOIN pg_roles "
                  "r ON r.oid = a.grantee WHERE n.nspname IN "
                  f"({', '.join(['%s'] * len(names))}) AND a.grantee <> c.relowner AND NOT r.rolsuper "
                  "AND NOT EXISTS (SELECT 1 FROM aclexplode(n.nspacl) s WHERE s.grantee = a.grantee AND "
                  "s.privilege_type = 'CREATE') GROUP BY r.rolname ORDER BY r.rolname", names)
    return [(_text(r), "worker" if w else "analyst") for r, w in rows]


def prefix_workers(connection, prefix: str) -> list[tuple[str, str]] | None:
    """(name, host) of every account with table-level grants on the prefix's schemas (the workers), or None
    when this account may not read the grant tables."""
    names = schema_names(prefix)
    try:
        rows = _fetch(connection, "SELECT DISTINCT User, Host FROM mysql.tables_priv WHERE Db IN "
                      f"({', '.join(['%s'] * len(names))})", names)
    except AccountError:
        return None
    return sorted((_text(u), _text(h)) for u, h in rows)


def refresh_worker_grants(connection, prefix: str) -> list[str] | None:
    """Grant every worker of the prefix its rights on tables declared since it was created (``db setup``);
    return the accounts, or None when this account may not read the grant tables."""
    if is_postgres(connection):  # analysts too: their SELECT grants name the tables as well
        done = []
        for name, role in _pg_prefix_accounts(connection, prefix):
            if NAME_PATTERN.match(name):
                grant_role(connection, prefix, name, role)
                done.append(f"{name} ({role})")
        return done
    workers = prefix_workers(connection, prefix)
    if workers is None:
        return None
    done = []
    for name, host in workers:
        if NAME_PATTERN.match(name) and HOST_PATTERN.match(host):
            grant_role(connection, prefix, name, "worker", host)
            done.append(f"{name}@{host}")
    return done


# -- talking to the server ---------------------------------------------------------------------------------------
def _raw(connection):
    """The PyMySQL connection under a DataJoint one (statements with a password skip DataJoint's query log)."""
    return getattr(connection, "_conn", connection)


def _failure(err: Exception, sql: str, secret: str | None) -> AccountError:
    if hasattr(err, "pgcode"):  # psycopg2: an SQLSTATE (42501 insufficient privilege, 42710 exists, ...)
        code = err.pgcode
        text = scrub((getattr(err, "pgerror", None) or str(err)).strip().splitlines()[0] if str(err).strip()
                     else type(err).__name__, secret)
    else:
        code = err.args[0] if err.args and isinstance(err.args[0], int) else None
        text = scrub(" ".join(str(a) for a in err.args[1:]) or type(err).__name__, secret)
    statement = scrub(sql.split(" IDENTIFIED ")[0].split(" PASSWORD ")[0], secret)
    if code in ACCESS_DENIED or code in (1142, 1227, 1410, "42501"):
        error = AccountError(f"{statement}: refused by the server ({code}: {text}). Fix: run it as an account that "
                             "may create accounts and grant (the server's root, e.g. DJ_USER=root, or the private "
                             "server's own account).")
    else:
        error = AccountError(f"{statement}: failed ({code}: {text}).")
    error.code = code
    return error


def _driver_errors(connection) -> tuple:
    if is_postgres(connection):
        import psycopg2

        return (psycopg2.Error,)
    import pymysql

    return (pymysql.err.MySQLError,)


def _execute(connection, sql: str, secret: str | None = None, args=None) -> None:
    errors = _driver_errors(connection)
    try:
        with _raw(connection).cursor() as cur:
            cur.execute(sql, args)  # no arguments: '%' in a host or a database pattern is sent as it is
    except errors as err:
        raise _failure(err, sql, secret) from None


def _fetch(connection, sql: str, args=()) -> list:
    errors = _driver_errors(connection)
    try:
        with _raw(connection).cursor() as cur:
            cur.execute(sql, tuple(args) or None)
            return list(cur.fetchall())
    except errors as err:
        raise _failure(err, sql, None) from None


def _text(value) -> str:
    return value.decode() if isinstance(value, (bytes, bytearray)) else str(value)
