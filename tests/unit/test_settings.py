import json

import pytest

from neural_reg.database import DatabaseError, shared_credentials
from neural_reg.settings import SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in ("NEURALREG_PREFIX", "NEURALREG_HOME", "NEURALREG_CONFIG", "DJ_HOST", "DJ_USER", "DJ_PASS",
                 "DJ_PORT"):
        monkeypatch.delenv(name, raising=False)
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
