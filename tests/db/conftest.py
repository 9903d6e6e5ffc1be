"""Pipeline tests against a real, throw-away MySQL-family server.

The server is the configured shared one (DJ_HOST) or the project's private server, started here if needed and
stopped again if this session started it. Every test session works under its own schema prefix
(test_<random>_...), dropped at the end, so test runs never touch anyone's data.
"""

import secrets

import pytest

import schemas
from pipeline.database import PrivateServer, connect
from pipeline.settings import load_settings


@pytest.fixture(scope="session")
def db():
    settings = load_settings()
    server = PrivateServer(settings.home)
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
