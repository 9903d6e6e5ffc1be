"""The recording schema against a real server: ingests, round trips, and bad input that leaves no row behind."""

import shutil

import numpy as np
import pytest

from pipeline.recording.filetree import read_filetree, write_filetree
from pipeline.recording.scan_data import RecordingError
from pipeline.recording.simulator import simulate_scans
from neural_reg.workflow import ingest_filetree, ingest_simulated
from schemas import recording


@pytest.fixture(scope="module")
def sim_scan():
    return simulate_scans(n_scans=1, n_neurons=60, n_images=80, n_oracle_images=6, n_repeats=4, seed=11)[0]


@pytest.fixture
def tree(tmp_path, sim_scan):
    path = tmp_path / "static1234-2-3-GrayImageNet"
    write_filetree(sim_scan, path)
    return path


def canonical(scan):
    rows, cols = np.argsort(scan.trial_idx), np.argsort(scan.unit_ids)
    return rows, cols


def test_simulated_ingest_stores_every_trial_and_neuron(db):
    keys = ingest_simulated(n_scans=2, n_neurons=40, n_images=50, n_oracle_images=5, n_repeats=3, seed=5)
    assert len(keys) == 2
    for key in keys:
        scan = (recording.Scan & key).fetch1()
        assert (scan["n_neurons"], scan["n_trials"]) == (40, 50 + 5 * 3)
        assert len(recording.Trial & key) == 65 and len(recording.Scan.Unit & key) == 40
        assert len(recording.Trial & key & "tier='oracle'") == 15
        assert recording.load_responses(key).shape == (65, 40)
    # the two scans share one image set, stored once
    assert len(recording.Image & {"image_set": scan["image_set"]}) == 55


def test_filetree_round_trip_returns_the_input(db, tree, sim_scan):
    key = ingest_filetree(tree)
    assert key == {"animal_id": "1234", "session": 2, "scan_idx": 3}
    back = recording.load_scan(key)
    rows, cols = canonical(sim_scan)
    np.testing.assert_array_equal(back.responses, sim_scan.responses[np.ix_(rows, cols)])
    np.testing.assert_array_equal(back.trial_idx, sim_scan.trial_idx[rows])
    np.testing.assert_array_equal(back.trial_image_ids, sim_scan.trial_image_ids[rows])
    np.testing.assert_array_equal(back.tiers, np.asarray(sim_scan.tiers)[rows])
    np.testing.assert_array_equal(back.behavior, sim_scan.behavior[rows])
    np.testing.assert_array_equal(back.pupil_center, sim_scan.pupil_center[rows])
    np.testing.assert_array_equal(back.unit_ids, sim_scan.unit_ids[cols])
    order = np.argsort(sim_scan.image_ids)
    np.testing.assert_array_equal(back.image_ids, sim_scan.image_ids[order])
    np.testing.assert_array_equal(back.images, sim_scan.images[order])


def _expect_rejected(row_counts, call, *needles):
    before = row_counts()
    with pytest.raises(RecordingError) as info:
        call()
    message = str(info.value)
    for needle in needles:
        assert needle in message, f"{needle!r} not in: {message}"
    assert row_counts() == before, "a rejected ingest left rows behind"
    return message


def test_missing_folder(db, row_counts, tmp_path):
    _expect_rejected(row_counts, lambda: ingest_filetree(tmp_path / "nope", "x", 1, 1), "nope")


def test_mismatched_trial_counts(db, row_counts, tree):
    (tree / "data" / "responses" / "0.npy").unlink()
    _expect_rejected(row_counts, lambda: ingest_filetree(tree, session=9), "responses")


def test_nan_responses_name_the_file(db, row_counts, tree):
    bad = np.load(tree / "data" / "responses" / "5.npy")
    bad[3] = np.nan
    np.save(tree / "data" / "responses" / "5.npy", bad)
    _expect_rejected(row_counts, lambda: ingest_filetree(tree, session=9), "5.npy", "responses")


def test_infinite_responses(db, row_counts, tree):
    bad = np.load(tree / "data" / "responses" / "7.npy")
    bad[0] = np.inf
    np.save(tree / "data" / "responses" / "7.npy", bad)
    _expect_rejected(row_counts, lambda: ingest_filetree(tree, session=9), "7.npy")


def test_shapes_that_disagree(db, row_counts, tree):
    good = np.load(tree / "data" / "responses" / "2.npy")
    np.save(tree / "data" / "responses" / "2.npy", good[:-1])
    _expect_rejected(row_counts, lambda: ingest_filetree(tree, session=9), "2.npy", "responses")


def test_oracle_image_with_one_repeat(db, row_counts, tmp_path, sim_scan):
    scan = read_filetree(write_tree(tmp_path / "t", sim_scan))
    oracle_rows = np.flatnonzero(scan.tiers == "oracle")
    lonely = scan.trial_image_ids[oracle_rows[0]]
    drop = oracle_rows[scan.trial_image_ids[oracle_rows] == lonely][1:]
    keep = np.setdiff1d(np.arange(scan.n_trials), drop)
    for name in ("trial_idx", "trial_image_ids", "tiers", "responses", "behavior", "pupil_center"):
        setattr(scan, name, getattr(scan, name)[keep])
    _expect_rejected(row_counts, lambda: recording.ingest_scan(
        scan, {"animal_id": "x", "session": 1, "scan_idx": 1}, "lonely", "filetree"), "oracle", "repeats")


def test_scan_already_present(db, row_counts, tmp_path, sim_scan):
    path = write_tree(tmp_path / "static77-1-1-x", sim_scan)
    ingest_filetree(path)
    _expect_rejected(row_counts, lambda: ingest_filetree(path), "already")


def test_image_id_with_other_pixels(db, row_counts, tmp_path, sim_scan):
    path = write_tree(tmp_path / "static78-1-1-x", sim_scan)
    ingest_filetree(path, image_set="shared-set")
    other = tmp_path / "static78-1-2-x"
    shutil.copytree(path, other)
    for k in range(3):
        image = np.load(other / "data" / "images" / f"{k}.npy")
        np.save(other / "data" / "images" / f"{k}.npy", 255 - image)
    _expect_rejected(row_counts, lambda: ingest_filetree(other, image_set="shared-set"), "images", "differs")


def write_tree(path, scan):
    write_filetree(scan, path)
    return path


def test_cli_ingest_and_status(db, monkeypatch, tmp_path, sim_scan, capsys):
    from neural_reg.cli import main

    monkeypatch.setenv("NEURALREG_PREFIX", db)
    path = write_tree(tmp_path / "static79-4-2-cli", sim_scan)
    assert main(["ingest", "filetree", str(path)]) == 0
    assert "static79" not in capsys.readouterr().err
    assert recording.Scan & {"animal_id": "79", "session": 4, "scan_idx": 2}
    assert main(["ingest", "filetree", str(path)]) == 2  # already present: a clear error, exit 2
    assert "already" in capsys.readouterr().err


# ---- concurrent ingests: each in its own process, with its own DataJoint connection ---------------------------
RACE_ROUNDS = 4
_start_together = None  # a barrier shared by the two worker processes


def _race_worker_init(prefix, barrier):
    global _start_together
    import schemas

    schemas.activate(prefix)  # a fresh interpreter (spawn): its own connection to the same schemas
    _start_together = barrier


def _race_ingest(scan, key, image_set):
    """Ingest once both workers are ready; 'ok', or the error's class and message (a raw error fails the test)."""
    _start_together.wait(timeout=60)
    try:
        recording.ingest_scan(scan, key, image_set, "simulator")
        return "ok"
    except Exception as err:  # noqa: BLE001  (reported, not hidden: the test checks the class)
        return f"{type(err).__name__}: {err}"


@pytest.fixture(scope="module")
def race_pool(db):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(2, mp_context=ctx, initializer=_race_worker_init,
                             initargs=(db, ctx.Barrier(2))) as pool:
        yield lambda *calls: [f.result(timeout=120) for f in [pool.submit(_race_ingest, *c) for c in calls]]


@pytest.fixture(scope="module")
def race_scans():
    return simulate_scans(n_scans=2, n_neurons=15, n_images=40, n_oracle_images=4, n_repeats=2, seed=3)


def _assert_stored(key, scan):
    assert (recording.Scan & key).fetch1("n_trials") == scan.n_trials
    assert len(recording.Trial & key) == scan.n_trials and len(recording.Scan.Unit & key) == scan.n_neurons
    assert recording.load_responses(key).shape == (scan.n_trials, scan.n_neurons)


def test_two_scans_into_one_new_image_set_at_once_both_succeed(db, race_pool, race_scans):
    for r in range(RACE_ROUNDS):
        image_set = f"race-new-{r}"
        keys = [{"animal_id": "race", "session": 10 + r, "scan_idx": i} for i in (1, 2)]
        outcomes = race_pool(*[(scan, key, image_set) for scan, key in zip(race_scans, keys)])
        assert outcomes == ["ok", "ok"], f"round {r}: {outcomes}"
        assert len(recording.ImageSet & {"image_set": image_set}) == 1
        assert len(recording.Image & {"image_set": image_set}) == len(race_scans[0].image_ids)
        for key, scan in zip(keys, race_scans):
            _assert_stored(key, scan)


def test_same_scan_twice_at_once_one_wins_the_other_is_told(db, race_pool, race_scans):
    scan = race_scans[0]
    for r in range(RACE_ROUNDS):
        key = {"animal_id": "race", "session": 20 + r, "scan_idx": 1}
        # the same image set (a new one), and, in odd rounds, two different new image sets
        sets = [f"race-same-{r}"] * 2 if r % 2 == 0 else [f"race-same-{r}-a", f"race-same-{r}-b"]
        outcomes = race_pool(*[(scan, key, s) for s in sets])
        assert sorted(o[:6] for o in outcomes) == ["Record", "ok"], f"round {r}: {outcomes}"
        loser = next(o for o in outcomes if o != "ok")
        assert loser.startswith("RecordingError") and "already in the database" in loser, loser
        _assert_stored(key, scan)
        stored_set = (recording.Scan & key).fetch1("image_set")
        for s in set(sets) - {stored_set}:  # the loser's image set and images were rolled back with it
            assert not recording.ImageSet & {"image_set": s} and not recording.Image & {"image_set": s}


def test_a_duplicate_scan_at_insert_time_is_the_clear_error_and_rolls_back(db, row_counts, monkeypatch, race_scans):
    """The path of the loser that passed the 'already there?' check before the winner committed (another set)."""
    key = {"animal_id": "race", "session": 30, "scan_idx": 1}
    recording.ingest_scan(race_scans[0], key, "dup-a", "simulator")
    monkeypatch.setattr(recording, "_check_new_scan", lambda scan, key: None)
    _expect_rejected(row_counts, lambda: recording.ingest_scan(race_scans[0], key, "dup-b", "simulator"),
                     "already in the database")
    assert not recording.ImageSet & {"image_set": "dup-b"}


def test_an_ingest_waits_for_the_image_set_lock_and_gives_up_clearly(db, row_counts, monkeypatch, race_scans):
    import datajoint as dj

    cfg = dj.config
    from neural_reg.database import acquire_lock, release_lock

    other = dj.Connection(cfg["database.host"], cfg["database.user"], cfg["database.password"],
                          cfg["database.port"])
    try:
        name = recording.image_set_lock_name("locked-set")
        assert acquire_lock(other, name, 0)  # another ingest holds it
        monkeypatch.setattr(recording, "LOCK_TIMEOUT_S", 0.5)
        _expect_rejected(row_counts, lambda: recording.ingest_scan(
            race_scans[0], {"animal_id": "race", "session": 31, "scan_idx": 1}, "locked-set", "simulator"),
            "locked-set", "still running")
        release_lock(other, name)
        recording.ingest_scan(race_scans[0], {"animal_id": "race", "session": 31, "scan_idx": 1}, "locked-set",
                              "simulator")
    finally:
        other.close()
