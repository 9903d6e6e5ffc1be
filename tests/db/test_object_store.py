"""<npfile@bulk> columns in an object store: a real S3-protocol server (moto's server mode, started here as its own
process on a free port), the local default, missing and damaged objects named by their row, and deletes that leave
no object behind for a later row to mistake for its own."""

import json
import socket
import subprocess
import sys
import time
import urllib.request

import datajoint as dj
import numpy as np
import pytest

import schemas
from neural_reg import delete as nr_delete
from neural_reg import stores
from neural_reg.settings import SettingsError, load_settings
from neural_reg.workflow import ingest_simulated
from schemas import recording
from schemas.codecs import StoredObjectError

BUCKET = "neural-reg-test"
KEYS = {"NEURALREG_STORE_ACCESS_KEY": "testing", "NEURALREG_STORE_SECRET_KEY": "testing"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    """moto's S3 server in its own process; fails (never skips) when it cannot start: moto is a test requirement."""
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"moto's S3 server did not start on port {port}: {log.read_text()[-2000:]}")
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture
def s3(db, s3_server, monkeypatch):
    """The store `bulk` pointed at a bucket of the test server through the settings, as a lab points it at MinIO."""
    import boto3

    client = boto3.client("s3", endpoint_url=s3_server, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    if BUCKET not in [b["Name"] for b in client.list_buckets().get("Buckets", [])]:
        client.create_bucket(Bucket=BUCKET)
    monkeypatch.setenv("NEURALREG_STORE", f"s3://{BUCKET}/lab")
    monkeypatch.setenv("NEURALREG_STORE_ENDPOINT", s3_server)
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    before = dict(dj.config.stores[stores.STORE])
    spec = schemas.configure_store()
    assert spec["protocol"] == "s3" and dj.config.stores["bulk"]["bucket"] == BUCKET
    yield client
    dj.config.stores[stores.STORE] = before


def _objects(client, prefix=""):
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"lab/_schema/{prefix}")
    return {o["Key"]: o for page in pages for o in page.get("Contents", [])}


def _responses_path(key) -> str:
    """The store path that the (one) responses block of the scan records (the row's metadata, not decoded)."""
    raw = (recording.Responses & key).proj("responses").cursor(as_dict=True).fetchone()["responses"]
    return (raw if isinstance(raw, dict) else json.loads(raw))["path"]  # PostgreSQL's driver parses JSON itself


def test_s3_round_trip_delete_and_reingest(db, s3):
    (key,) = ingest_simulated(n_scans=1, n_neurons=30, n_images=40, n_oracle_images=4, n_repeats=2, seed=901,
                              animal_id="s3store", progress=False)
    responses = recording.load_responses(key)
    assert responses.shape == (48, 30) and responses.dtype == np.float32
    path = _responses_path(key)
    objects = _objects(s3, f"{db}_recording/responses/")
    assert f"lab/{path}" in objects  # the bytes are in the bucket, the row holds only their path and checksum
    assert objects[f"lab/{path}"]["Size"] == responses.nbytes + 128  # .npy: a 128-byte header, then the array
    # DataJoint's delete leaves objects; neural-reg's removes those only the deleted rows referenced
    nr_delete.delete(recording.Scan & key)
    assert f"lab/{path}" not in _objects(s3)
    # the same key again: a new object under a new path, never the old one
    (again,) = ingest_simulated(n_scans=1, n_neurons=30, n_images=40, n_oracle_images=4, n_repeats=2, seed=902,
                                animal_id="s3store", progress=False)
    assert again == key and _responses_path(key) != path
    assert not np.array_equal(recording.load_responses(key), responses)
    nr_delete.delete(recording.Scan & key)


@pytest.fixture
def scan_in_s3(db, s3):
    (key,) = ingest_simulated(n_scans=1, n_neurons=20, n_images=30, n_oracle_images=3, n_repeats=2, seed=903,
                              animal_id="s3damage", progress=False)
    yield key, f"lab/{_responses_path(key)}"
    nr_delete.delete(recording.Scan & key)


def row_key(message: str) -> dict:
    """The key named in a "<table> row (k=v, ...)" message (in the primary-key order the backend reports)."""
    inside = message.split(" row (", 1)[1].split(")", 1)[0]
    return dict(pair.split("=", 1) for pair in inside.split(", "))


def test_a_missing_object_names_its_row(db, s3, scan_in_s3):
    key, object_key = scan_in_s3
    s3.delete_object(Bucket=BUCKET, Key=object_key)
    with pytest.raises(StoredObjectError) as err:
        recording.load_responses(key)
    message = str(err.value)
    assert f"{db}_recording.responses row (" in message
    assert row_key(message) == {"animal_id": "s3damage", "session": "1", "scan_idx": "1", "block": "0"}
    assert "column 'responses'" in message and "is missing" in message and object_key in message


def test_a_damaged_object_names_its_row(db, s3, scan_in_s3):
    key, object_key = scan_in_s3
    data = bytearray(s3.get_object(Bucket=BUCKET, Key=object_key)["Body"].read())
    data[-5] ^= 0x01  # one flipped bit in the last value: still a valid .npy file, another number
    s3.put_object(Bucket=BUCKET, Key=object_key, Body=bytes(data))
    with pytest.raises(StoredObjectError, match=r"responses row \(.*is damaged.*SHA-256") as err:
        recording.load_responses(key)
    assert row_key(str(err.value))["animal_id"] == "s3damage"
    s3.put_object(Bucket=BUCKET, Key=object_key, Body=bytes(data[:-100]))  # truncated
    with pytest.raises(StoredObjectError, match="is damaged"):
        recording.load_responses(key)


@pytest.fixture
def weights_table(db):
    schema = dj.Schema(f"{db}_storetest", connection=dj.conn())

    @schema
    class Weights(dj.Manual):
        definition = """
        model_id : int32
        ---
        state_dict : <npfile@bulk>
        """

    yield Weights
    schema.drop(prompt=False)
    stores.drop_objects(f"{db}_storetest")


def test_a_dict_of_arrays_round_trips_and_gc_removes_only_unreferenced_objects(db, s3, weights_table):
    state = {"conv.weight": np.random.default_rng(0).normal(size=(8, 1, 3, 3)).astype(np.float32),
             "bn.num_batches_tracked": np.array(7, dtype=np.int64), "fc.bias": np.zeros(10, np.float64)}
    weights_table.insert1({"model_id": 1, "state_dict": state})
    back = (weights_table & {"model_id": 1}).fetch1("state_dict")
    assert list(back) == list(state)
    for name, value in state.items():
        assert back[name].dtype == value.dtype and np.array_equal(back[name], value)
    # an insert that rolls back leaves its uploaded object: the garbage collector finds it, and only it
    with pytest.raises(RuntimeError):
        with weights_table.connection.transaction:
            weights_table.insert1({"model_id": 2, "state_dict": state})
            raise RuntimeError("rolled back")
    assert len(_objects(s3, f"{db}_storetest/")) == 2
    collector = dj.gc.GarbageCollector(dj.Schema(f"{db}_storetest", create_tables=False), store="bulk")
    report = collector.collect(dry_run=True)
    assert report["schema_paths_referenced"] == 1 and report["schema_paths_orphaned"] == 1
    # neural-reg's collector keeps objects younger than its minimum age (an insert may still be under way) ...
    young = stores.collect_garbage(db, dj.conn(), delete=True, databases=[f"{db}_storetest"])
    assert (young["removed"], young["kept_young"]) == (0, 1) and len(_objects(s3, f"{db}_storetest/")) == 2
    # ... and removes the older ones, never a referenced one
    old = stores.collect_garbage(db, dj.conn(), delete=True, min_age_s=0, databases=[f"{db}_storetest"])
    assert old["removed"] == 1 and old["orphaned_schema_paths"] == report["orphaned_schema_paths"]
    assert len(_objects(s3, f"{db}_storetest/")) == 1
    assert np.array_equal((weights_table & {"model_id": 1}).fetch1("state_dict")["conv.weight"], state["conv.weight"])


def test_the_default_store_is_a_folder_under_home_and_settings_are_checked(db, monkeypatch, tmp_path):
    for name in ("NEURALREG_STORE", "NEURALREG_STORE_ENDPOINT", *KEYS, "NEURALREG_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    if not settings.config_file:
        assert stores.store_spec(settings) == {"protocol": "file", "location": str(settings.home / "store")}
    assert dj.config.stores["bulk"]["protocol"] == "file"  # what the session's rows use
    config = tmp_path / "neural-reg.json"
    monkeypatch.setenv("NEURALREG_CONFIG", str(config))
    config.write_text(json.dumps({"store": {"protocol": "s3", "bucket": "b"}}))
    with pytest.raises(SettingsError, match="needs endpoint"):
        stores.store_spec(load_settings())
    config.write_text(json.dumps({"store": {"protocol": "s3", "endpoint": "https://minio.lab:9000", "bucket": "b",
                                            "access_key": "AK"}}))
    with pytest.raises(SettingsError, match="no secret key"):
        stores.store_spec(load_settings())
    secret = tmp_path / "s3-secret"
    secret.write_text("SK\n")
    config.write_text(json.dumps({"store": {"protocol": "s3", "endpoint": "https://minio.lab:9000", "bucket": "b",
                                            "location": "alice", "access_key": "AK",
                                            "secret_key_file": str(secret)}}))
    spec = stores.store_spec(load_settings())
    assert spec == {"protocol": "s3", "endpoint": "https://minio.lab:9000", "bucket": "b", "location": "alice",
                    "secure": True, "access_key": "AK", "secret_key": "SK"}
    config.write_text(json.dumps({"store": {"secret_key": "SK"}}))
    with pytest.raises(SettingsError, match="passwords do not belong"):
        load_settings()
    config.write_text(json.dumps({"store": {"location": str(tmp_path / "lab-store"), "bucket": "b"}}))
    with pytest.raises(SettingsError, match="S3 store only"):
        stores.store_spec(load_settings())
    monkeypatch.setenv("NEURALREG_STORE", str(tmp_path / "env-store"))  # the environment wins over the file
    assert stores.store_spec(load_settings()) == {"protocol": "file", "location": str(tmp_path / "env-store")}
