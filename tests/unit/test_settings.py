import json

import pytest

from neural_reg.database import DatabaseError, shared_credentials
from neural_reg.settings import SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in ("NEURALREG_PREFIX", "NEURALREG_HOME", "NEURALREG_CONFIG", "DJ_HOST", "DJ_USER", "DJ_PASS",
                 "DJ_PORT", "DJ_BACKEND", "DJ_DATABASE_NAME", "DJ_IGNORE_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / ".git").mkdir()  # a repository's root: no datajoint.json above it is looked for (as DataJoint)
    monkeypatch.setattr("neural_reg.settings.SYSTEM_SECRETS_DIR", tmp_path / "no-system-secrets")
    monkeypatch.chdir(tmp_path)


def test_defaults_and_prefix_from_environment(monkeypatch, tmp_path):
    s = load_settings()
    assert s.prefix == "neuralreg" and s.home == tmp_path / ".neural-reg" and s.host is None
    monkeypatch.setenv("NEURALREG_PREFIX", "test_3f9a")
    assert load_settings().prefix == "test_3f9a"


def test_config_file_and_environment_precedence(monkeypatch, tmp_path):
    (tmp_path / "neural-reg.json").write_text(json.dumps(
        {"prefix": "alice", "database": {"host": "db.lab:3307", "user": "alice"}}))
    s = load_settings()
    assert (s.prefix, s.host, s.user) == ("alice", "db.lab:3307", "alice")
    monkeypatch.setenv("NEURALREG_PREFIX", "bob")
    assert load_settings().prefix == "bob"


@pytest.mark.parametrize("prefix", ["Alice", "1abc", "a-b", "x" * 41, ""])
def test_bad_prefix_is_rejected_with_the_rule(monkeypatch, prefix):
    monkeypatch.setenv("NEURALREG_PREFIX", prefix or "_")
    with pytest.raises(SettingsError, match="lowercase"):
        load_settings()


def test_password_in_config_file_is_refused(tmp_path):
    (tmp_path / "neural-reg.json").write_text(json.dumps({"database": {"host": "h", "password": "hunter22"}}))
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "hunter22" not in str(info.value) and "database.password" in str(info.value)


def test_shared_server_credentials(monkeypatch):
    monkeypatch.setenv("DJ_HOST", "db.lab:3307")
    monkeypatch.setenv("DJ_USER", "alice")
    with pytest.raises(DatabaseError, match="DJ_PASS"):
        shared_credentials(load_settings())
    monkeypatch.setenv("DJ_PASS", "s3cret-pass")
    creds = shared_credentials(load_settings())
    assert (creds.host, creds.port, creds.user) == ("db.lab", 3307, "alice")
    assert "s3cret-pass" not in repr(creds)


# ---- a config file with wrong types, unknown keys or a password is refused, naming the key and the fix ---------
def write_config(tmp_path, data) -> None:
    (tmp_path / "neural-reg.json").write_text(json.dumps(data))


@pytest.mark.parametrize("data, field, fix", [
    ({"prefx": "alice"}, "'prefx'", "did you mean 'prefix'"),
    ({"database": {"hots": "db.lab"}}, "'database.hots'", "did you mean 'database.host'"),
    ({"datadir": "/data"}, "'datadir'", "did you mean 'data_dir'"),
    ({"colour": "red"}, "'colour'", "The fields are 'prefix', 'home', 'data_dir', 'database'"),
])
def test_unknown_key_is_refused_not_silently_defaulted(tmp_path, data, field, fix):
    write_config(tmp_path, data)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert f"unknown field {field}" in message and fix in message and "neural-reg.json" in message


@pytest.mark.parametrize("data, field, expected", [
    ({"prefix": 3}, "'prefix'", "a string"),
    ({"prefix": ["alice"]}, "'prefix'", "a string"),
    ({"home": False}, "'home'", "a string"),
    ({"database": "db.lab"}, "'database'", "an object"),
    ({"database": {"port": "3306"}}, "'database.port'", "an integer"),
    ({"database": {"port": True}}, "'database.port'", "an integer"),
    ({"database": {"host": 3306}}, "'database.host'", "a string"),
    ({"database": {"user": ""}}, "'database.user'", "empty"),
])
def test_wrong_type_is_refused_with_the_key_and_the_fix(tmp_path, data, field, expected):
    write_config(tmp_path, data)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert field in message and expected in message and "Fix" in message


@pytest.mark.parametrize("port", ["0", "70000", "abc"])
def test_bad_port_is_refused(monkeypatch, tmp_path, port):
    monkeypatch.setenv("DJ_PORT", port)
    with pytest.raises(SettingsError, match="DJ_PORT.*1 to 65535"):
        load_settings()
    monkeypatch.delenv("DJ_PORT")
    write_config(tmp_path, {"database": {"host": f"db.lab:{port}"}})
    with pytest.raises(SettingsError, match="database.host"):
        load_settings()


@pytest.mark.parametrize("data, field", [
    ({"password": "hunter22"}, "'password'"),
    ({"database": {"passwd": "hunter22"}}, "'database.passwd'"),
    ({"database": {"PASS": "hunter22"}}, "'database.PASS'"),
    ({"database": {"Pwd": "hunter22"}}, "'database.Pwd'"),
    ({"extra": {"deep": {"DJ_PASS": "hunter22"}}}, "'extra.deep.DJ_PASS'"),
    ({"workers": [{"rootPassword": "hunter22"}]}, "'workers[0].rootPassword'"),
])
def test_password_in_any_key_is_refused_and_never_shown(tmp_path, data, field):
    write_config(tmp_path, data)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert field in message and "passwords do not belong" in message and "hunter22" not in message


def test_password_file_is_allowed_and_read(tmp_path):
    secret = tmp_path / "pass"
    secret.write_text("s3cret-pass\n")
    write_config(tmp_path, {"prefix": "alice", "database": {"host": "db.lab", "port": 3307, "user": "alice",
                                                             "password_file": str(secret)}})
    settings = load_settings()
    assert settings.port == 3307 and settings.password_file == secret
    creds = shared_credentials(settings)
    assert (creds.host, creds.port, creds.password) == ("db.lab", 3307, "s3cret-pass")
    secret.unlink()
    with pytest.raises(DatabaseError, match="password_file .* cannot be read"):
        shared_credentials(settings)


def test_bad_json_message_does_not_echo_the_text(tmp_path):
    (tmp_path / "neural-reg.json").write_text('{"prefix": "alice", "database": {"user": hunter22}}')
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "not valid JSON" in str(info.value) and "hunter22" not in str(info.value)


def test_check_packet_size_names_the_setting_the_values_and_the_fix():
    from neural_reg.database import check_packet_size, packet_size_needed

    class FakeConnection:  # a PyMySQL-like connection whose server has MySQL 8's default, 64 MiB
        def cursor(self):
            return self

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def execute(self, sql):
            assert sql == "SELECT @@max_allowed_packet"

        def fetchone(self):
            return (64 << 20,)

    # PyMySQL sends bytes as X'<hex>': twice the raw size, plus the statement
    assert 2 * 100 < packet_size_needed(100) < 2 * 100 + (1 << 20)
    assert check_packet_size(FakeConnection(), 20 << 20, "a 20 MiB block") == 64 << 20
    with pytest.raises(DatabaseError) as info:
        check_packet_size(FakeConnection(), 200 << 20, "scan 1-1-1: responses block 0")
    message = str(info.value)
    assert "scan 1-1-1: responses block 0" in message and "max_allowed_packet" in message
    assert "64 MiB" in message and str(packet_size_needed(200 << 20)) in message
    assert "SET GLOBAL max_allowed_packet=469762048" in message and "--max-allowed-packet=448M" in message
    with pytest.raises(DatabaseError, match="no server takes more than 1G"):
        check_packet_size(FakeConnection(), 600 << 20, "a huge block")


# ---- DataJoint's own configuration: datajoint.json, .secrets/, DJ_* ------------------------------------------
def write_datajoint(directory, data, secrets=None):
    (directory / "datajoint.json").write_text(json.dumps(data))
    if secrets:
        (directory / ".secrets").mkdir()
        for name, value in secrets.items():
            (directory / ".secrets" / name).write_text(value + "\n")


def test_a_datajoint_json_naming_a_lab_server_is_used(tmp_path):
    write_datajoint(tmp_path, {"database": {"host": "db.lab", "port": 3307, "user": "alice"}},
                    {"database.password": "s3cret-pass"})
    settings = load_settings()
    assert (settings.host, settings.port, settings.user, settings.backend) == ("db.lab", 3307, "alice", "mysql")
    assert settings.datajoint_file == tmp_path / "datajoint.json" and settings.secrets_dir == tmp_path / ".secrets"
    creds = shared_credentials(settings)  # a shared server: no private one starts
    assert (creds.host, creds.port, creds.user, creds.password) == ("db.lab", 3307, "alice", "s3cret-pass")
    assert "s3cret-pass" not in repr(settings) + repr(creds)


def test_datajoint_json_flat_keys_secrets_user_and_a_parent_directory(tmp_path, monkeypatch):
    write_datajoint(tmp_path, {"database.host": "pg.lab", "database.backend": "postgresql",
                               "database.name": "lab"},
                    {"database.user": "bob", "database.password": "pg-pass"})
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")  # found from a subdirectory, as DataJoint finds it
    creds = shared_credentials(load_settings())
    assert (creds.host, creds.port, creds.user, creds.password) == ("pg.lab", 5432, "bob", "pg-pass")
    assert (creds.backend, creds.database) == ("postgresql", "lab")


def test_the_precedence_env_then_neural_reg_json_then_datajoint_json_then_secrets(tmp_path, monkeypatch):
    write_datajoint(tmp_path, {"database": {"host": "dj.lab", "user": "dj-user", "password": "dj-pass"}},
                    {"database.user": "secret-user", "database.password": "secret-pass"})
    settings = load_settings()
    assert (settings.host, settings.user) == ("dj.lab", "dj-user")  # datajoint.json over its .secrets/
    assert shared_credentials(settings).password == "dj-pass"
    secret = tmp_path / "pass"
    secret.write_text("file-pass\n")
    write_config(tmp_path, {"database": {"host": "nr.lab", "user": "nr-user", "password_file": str(secret)}})
    settings = load_settings()
    assert (settings.host, settings.user) == ("nr.lab", "nr-user")  # neural-reg.json over datajoint.json
    assert shared_credentials(settings).password == "file-pass"
    for name, value in {"DJ_HOST": "env.lab", "DJ_USER": "env-user", "DJ_PASS": "env-pass"}.items():
        monkeypatch.setenv(name, value)
    creds = shared_credentials(load_settings())  # the environment over both files
    assert (creds.host, creds.user, creds.password) == ("env.lab", "env-user", "env-pass")


def test_dj_ignore_config_file_skips_datajoint_json_and_its_secrets(tmp_path, monkeypatch):
    write_datajoint(tmp_path, {"database": {"host": "dj.lab", "user": "alice"}}, {"database.password": "p"})
    monkeypatch.setenv("DJ_IGNORE_CONFIG_FILE", "true")
    settings = load_settings()
    assert settings.host is None and settings.datajoint_file is None and shared_credentials(settings) is None


def test_backend_setting_and_its_default_port(tmp_path, monkeypatch):
    assert load_settings().backend == "mysql"
    monkeypatch.setenv("DJ_BACKEND", "postgresql")
    assert load_settings().backend == "postgresql"
    monkeypatch.setenv("DJ_HOST", "pg.lab")
    monkeypatch.setenv("DJ_USER", "alice")
    monkeypatch.setenv("DJ_PASS", "x-pass")
    creds = shared_credentials(load_settings())
    assert (creds.port, creds.backend, creds.database) == (5432, "postgresql", "postgres")
    monkeypatch.delenv("DJ_BACKEND")
    write_config(tmp_path, {"database": {"backend": "mariadb"}})
    assert load_settings().backend == "mysql"
    monkeypatch.setenv("DJ_BACKEND", "oracle")
    with pytest.raises(SettingsError, match="DJ_BACKEND: backend 'oracle' is not known.*'postgresql'"):
        load_settings()


def test_a_bad_datajoint_json_is_an_error_naming_it_without_its_text(tmp_path):
    (tmp_path / "datajoint.json").write_text('{"database": {"password": hunter22}}')
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "datajoint.json: not valid JSON" in str(info.value) and "hunter22" not in str(info.value)
    write_datajoint(tmp_path, {"database": {"port": [3306]}})
    with pytest.raises(SettingsError, match="database.port' must be an integer"):
        load_settings()


def test_datajoint_json_is_found_where_datajoint_finds_it(tmp_path, monkeypatch):
    from datajoint.settings import find_config_file

    from neural_reg.settings import _find_datajoint_file

    (tmp_path / "a" / "b").mkdir(parents=True)
    write_datajoint(tmp_path / "a", {"database": {"host": "h"}})
    for where in (tmp_path, tmp_path / "a", tmp_path / "a" / "b"):
        monkeypatch.chdir(where)
        assert _find_datajoint_file() == find_config_file()


def test_check_packet_size_on_postgresql_has_its_1_gb_limit():
    from types import SimpleNamespace

    from neural_reg.database import POSTGRES_STATEMENT_CAP, check_packet_size

    connection = SimpleNamespace(adapter=SimpleNamespace(backend="postgresql"))  # no query is sent
    assert check_packet_size(connection, 300 << 20, "a block") == POSTGRES_STATEMENT_CAP
    with pytest.raises(DatabaseError, match="a huge block: .*at most 1 GB in one statement.*smaller pieces"):
        check_packet_size(connection, 600 << 20, "a huge block")
