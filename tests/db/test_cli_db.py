"""The command line against the real server: delete, db drop, status --json, one log line per key, no bars.

Every row deleted here is one the test created (an extra NoiseConfig and its NoiseRobustness rows; a throw-away
prefix): the ``populated`` experiment is shared by the session.
"""

import json
import re

from neural_reg.cli import main


def _no_bars(text: str) -> None:
    assert "\r" not in text and "\x1b" not in text, "a progress bar in a non-terminal run"


def test_status_json_has_the_rows_of_status(populated, db, monkeypatch, capsys):
    from neural_reg import workflow

    monkeypatch.setenv("NEURALREG_PREFIX", db)
    assert main(["status", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["table"] for r in rows] == [r["table"] for r in workflow.status()]
    assert {"table", "done", "to_do", "reserved", "failed", "retrying", "reservations"} <= set(rows[0])
    assert all(isinstance(r["done"], int) for r in rows)


def test_delete_a_config_shows_the_cascade_asks_and_deletes_exactly_it(populated, db, monkeypatch, capsys):
    from schemas import classifier, robustness

    monkeypatch.setenv("NEURALREG_PREFIX", db)
    key = robustness.NoiseConfig.insert_params("cli-extra", {"stds": [0.0, 0.5], "n_samples": 20, "seed": 0})
    ours = robustness.NoiseRobustness & key
    others_before = len(robustness.NoiseRobustness - key), len(robustness.NoiseConfig - key)
    n_classifiers = len(classifier.TrainedClassifier())
    try:
        # one key by a worker, the others by a plain populate: each logged on its own line, no progress bar
        assert main(["worker", "--once", "--max-calls", "1", "NoiseRobustness"]) == 0
        assert main(["populate", "NoiseRobustness"]) == 0
        captured = capsys.readouterr()
        _no_bars(captured.out + captured.err)
        lines = [line for line in captured.err.splitlines() if " populated robustness.NoiseRobustness " in line]
        assert len(lines) == n_classifiers == len(ours)
        for line in lines:
            assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+:\d+ INFO populated robustness\.NoiseRobustness "
                            rf".*noise_hash={key['noise_hash']}.* in \d+\.\d s$", line), line

        # without --yes and without a terminal (pytest's stdin): the cascade shown, refused, nothing deleted
        assert main(["delete", "config", "noise_name=cli-extra"]) == 2
        captured = capsys.readouterr()
        assert "robustness.NoiseConfig" in captured.out and "1 row(s)" in captured.out
        assert re.search(rf"robustness\.NoiseRobustness +{n_classifiers} row\(s\)", captured.out)
        assert re.search(rf"total +{n_classifiers + 1} row\(s\)", captured.out)
        assert "not a terminal" in captured.err and "--yes" in captured.err
        assert len(ours) == n_classifiers and len(robustness.NoiseConfig & key) == 1

        assert main(["delete", "config", "noise_name=cli-extra", "--dry-run"]) == 0
        assert "nothing deleted" in capsys.readouterr().out and len(ours) == n_classifiers

        assert main(["delete", "config", "noise_name=cli-extra", "--yes"]) == 0
        assert f"deleted {n_classifiers + 1} row(s) from 2 table(s)" in capsys.readouterr().out
        assert not ours and not robustness.NoiseConfig & key
        assert (len(robustness.NoiseRobustness - key), len(robustness.NoiseConfig - key)) == others_before
    finally:
        (robustness.NoiseConfig & key).delete(prompt=False)


def test_delete_names_its_fix(populated, db, monkeypatch, capsys):
    monkeypatch.setenv("NEURALREG_PREFIX", db)
    assert main(["delete", "config", "noise_name=no-such-config", "--yes"]) == 2
    assert "no robustness.NoiseConfig matches" in capsys.readouterr().err
    assert main(["delete", "config", "colour=red"]) == 2
    assert "Fix: give one of" in capsys.readouterr().err
    # a scan in a scan group: DataJoint's part integrity, said before anything is asked or deleted
    from schemas import recording

    scan = recording.Scan.keys(limit=1)[0]
    pairs = [f"{k}={v}" for k, v in scan.items()]
    assert main(["delete", "scan", *pairs, "--yes"]) == 2
    err = capsys.readouterr().err
    assert "--part-integrity cascade" in err
    assert scan in recording.Scan()


def test_db_drop_lists_asks_and_drops_a_throwaway_prefix(db, monkeypatch, capsys):
    import secrets

    import datajoint as dj

    from schemas import recording

    connection = recording.Scan.connection
    q = connection.adapter.quote_identifier
    create, drop = (("CREATE SCHEMA", "DROP SCHEMA IF EXISTS {} CASCADE") if connection.adapter.backend == "postgresql"
                    else ("CREATE DATABASE", "DROP DATABASE IF EXISTS {}"))
    prefix = f"test_drop_{secrets.token_hex(3)}"
    connection.query(f"{create} {q(prefix + '_recording')}")
    connection.query(f"CREATE TABLE {q(prefix + '_recording')}.{q('thing')} (id INT PRIMARY KEY)")
    connection.query(f"INSERT INTO {q(prefix + '_recording')}.{q('thing')} VALUES (1), (2), (3)")
    try:
        assert main(["db", "drop", prefix]) == 2  # no terminal, no --yes
        captured = capsys.readouterr()
        assert f"{prefix}_recording: 1 tables, 3 rows" in captured.out and "not a terminal" in captured.err
        assert f"{prefix}_recording" in dj.list_schemas(connection=connection)
        assert main(["db", "drop", prefix, "--yes"]) == 0
        assert f"dropped 1 schema(s) of prefix {prefix}" in capsys.readouterr().out
        assert f"{prefix}_recording" not in dj.list_schemas(connection=connection)
        assert main(["db", "drop", prefix, "--yes"]) == 0
        assert "nothing to drop" in capsys.readouterr().out
    finally:
        connection.query(drop.format(q(prefix + "_recording")))
