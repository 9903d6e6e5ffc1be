"""The Sensorium / neuralpredictors file tree: round trips, tier mapping and every bad input."""

import re

import numpy as np
import pytest

from pipeline.recording.filetree import map_sensorium_tiers, read_filetree, write_filetree
from pipeline.recording.scan_data import RecordingError, ScanData
from pipeline.recording.simulator import simulate_scans

FIELDS = ("images", "image_ids", "trial_idx", "trial_image_ids", "tiers", "responses", "behavior",
          "pupil_center", "unit_ids", "areas", "layers", "positions")


def make_scan(n_neurons=7, seed=0) -> ScanData:
    """12 trials: oracle images 20 and 21 shown 3 and 2 times; 10, 11, 14 once; 12 and 13 twice (validation, test)."""
    rng = np.random.default_rng(seed)
    image_ids = np.array([10, 11, 12, 13, 14, 20, 21])
    shown = np.array([20, 10, 21, 11, 20, 12, 13, 21, 20, 14, 12, 13])
    tiers = np.array(["oracle", "train", "oracle", "train", "oracle", "validation", "test", "oracle",
                      "oracle", "train", "validation", "test"])
    # a repeat outside the oracle tier is allowed and must survive the round trip
    return ScanData(
        images=rng.uniform(0, 255, (7, 6, 8)).astype(np.float32), image_ids=image_ids,
        trial_idx=np.arange(100, 112), trial_image_ids=shown, tiers=tiers,
        responses=rng.gamma(0.5, 1.0, (12, n_neurons)).astype(np.float32),
        behavior=rng.normal(size=(12, 3)).astype(np.float32), pupil_center=rng.normal(size=(12, 2)).astype(np.float32),
        unit_ids=np.arange(1, n_neurons + 1) * 3, areas=np.array(["V1"] * (n_neurons - 1) + ["LM"]),
        layers=np.full(n_neurons, "L2/3"), positions=rng.uniform(0, 500, (n_neurons, 3)).astype(np.float32))


@pytest.fixture
def tree(tmp_path):
    write_filetree(make_scan(), tmp_path / "scan")
    return tmp_path / "scan"


def assert_same_scan(a: ScanData, b: ScanData):
    for f in FIELDS:
        x, y = getattr(a, f), getattr(b, f)
        np.testing.assert_array_equal(x, y, err_msg=f)
        assert np.asarray(x).dtype.kind == np.asarray(y).dtype.kind, f


def test_round_trip_is_exact(tree):
    back = read_filetree(tree)
    assert_same_scan(make_scan(), back)
    assert back.images.dtype == np.float32 and back.responses.dtype == np.float32
    assert back.source == str(tree) and back.extra["dropped_none_trials"] == 0


def test_layout_is_the_sensorium_one(tree):
    scan = make_scan()
    for k in (0, 11):
        img = np.load(tree / f"data/images/{k}.npy")
        assert img.shape == (1, 6, 8)
        np.testing.assert_array_equal(img[0], scan.images[scan.image_index()[k]])
        np.testing.assert_array_equal(np.load(tree / f"data/responses/{k}.npy"), scan.responses[k])
        assert np.load(tree / f"data/behavior/{k}.npy").shape == (3,)
        assert np.load(tree / f"data/pupil_center/{k}.npy").shape == (2,)
    assert len(list((tree / "data/responses").iterdir())) == 12
    np.testing.assert_array_equal(np.load(tree / "meta/trials/frame_image_id.npy"), scan.trial_image_ids)
    np.testing.assert_array_equal(np.load(tree / "meta/trials/trial_idx.npy"), scan.trial_idx)
    assert np.load(tree / "meta/trials/tiers.npy").dtype.kind == "U"  # no pickled objects
    assert np.load(tree / "meta/neurons/cell_motor_coordinates.npy").shape == (7, 3)
    np.testing.assert_allclose(np.load(tree / "meta/statistics/responses/all/mean.npy"), scan.responses.mean(0),
                               rtol=1e-6)
    assert not list(tree.glob(".filetree-*"))  # the temporary folder is gone


def test_simulated_scan_round_trips_and_overwrite_is_explicit(tmp_path):
    scan = simulate_scans(n_scans=1, n_neurons=9, n_images=20, n_oracle_images=3, n_repeats=3, seed=2)[0]
    scan.positions = None
    write_filetree(scan, tmp_path / "sim")
    back = read_filetree(tmp_path / "sim")
    assert_same_scan(scan, back)
    assert not (tmp_path / "sim/meta/neurons/cell_motor_coordinates.npy").exists() and back.positions is None
    with pytest.raises(RecordingError, match="already holds a file tree.*overwrite=True"):
        write_filetree(make_scan(), tmp_path / "sim")
    write_filetree(make_scan(), tmp_path / "sim", overwrite=True)  # fewer trials: no stale files remain
    assert_same_scan(make_scan(), read_filetree(tmp_path / "sim"))


def reference_tier_map(tiers, ids):
    """Slow reference: count, per trial, the test / final_test trials showing its image.

    A tree that already has 'oracle' trials uses our tiers: only final_test is remapped.
    """
    remap = ("final_test",) if "oracle" in tiers else ("test", "final_test")
    out = []
    for t, i in zip(tiers, ids):
        if t in remap:
            n = sum(1 for t2, i2 in zip(tiers, ids) if i2 == i and t2 in remap)
            out.append("oracle" if n >= 2 else "test")
        else:
            out.append(t)
    return out


@pytest.mark.parametrize("with_oracle", [False, True])
def test_sensorium_tier_map_matches_reference(with_oracle):
    rng = np.random.default_rng(0)
    names = ["train", "validation", "test", "final_test", "none"] + (["oracle"] if with_oracle else [])
    tiers = rng.choice(names, 300)
    ids = rng.integers(0, 120, 300)
    mapped = map_sensorium_tiers(tiers, ids)
    assert mapped.tolist() == reference_tier_map(tiers.tolist(), ids.tolist())
    assert ("oracle" in mapped) and (("test" in mapped) or not with_oracle)


def test_sensorium_repeated_test_images_become_oracle_and_none_is_dropped(tree):
    # as Sensorium ships it: repeats marked test / final_test, one unusable trial marked none
    tiers = np.array(["test", "train", "final_test", "train", "test", "validation", "test", "final_test",
                      "test", "none", "validation", "train"])
    np.save(tree / "meta/trials/tiers.npy", tiers)
    scan = read_filetree(tree)
    assert scan.n_trials == 11 and scan.extra["dropped_none_trials"] == 1
    assert 100 + 9 not in scan.trial_idx  # the 'none' trial
    assert 14 not in scan.image_ids  # its image is shown on no other trial
    expected = ["oracle", "train", "oracle", "train", "oracle", "validation", "test", "oracle", "oracle",
                "validation", "train"]
    assert scan.tiers.tolist() == expected
    np.testing.assert_array_equal(scan.responses, make_scan().responses[np.arange(12) != 9])


# --------------------------------------------------------------------------------------- bad inputs

def expect_error(tree, file: str, field: str, *more: str, **kwargs):
    """read_filetree raises RecordingError naming the file, the field and a fix."""
    with pytest.raises(RecordingError) as err:
        read_filetree(tree, **kwargs)
    msg = str(err.value)
    assert str(tree / file) in msg, msg
    assert f"field '{field}'" in msg, msg
    assert "Fix:" in msg, msg
    for m in more:
        assert re.search(m, msg), (m, msg)
    return msg


def test_missing_data_folder(tree):
    for f in (tree / "data/behavior").iterdir():
        f.unlink()
    (tree / "data/behavior").rmdir()
    expect_error(tree, "data/behavior", "behavior", "folder is missing")


def test_missing_trial_file(tree):
    (tree / "data/responses/3.npy").unlink()
    expect_error(tree, "data/responses", "responses", r"data/responses/3\.npy", "11 files", "12 trials")


def test_extra_trial_file(tree):
    np.save(tree / "data/images/12.npy", np.zeros((1, 6, 8), np.float32))
    expect_error(tree, "data/images", "images", r"data/images/12\.npy", "13 files")


def test_missing_meta_file(tree):
    (tree / "meta/neurons/unit_ids.npy").unlink()
    expect_error(tree, "meta/neurons/unit_ids.npy", "unit_ids", "missing")


def test_meta_trial_counts_disagree(tree):
    np.save(tree / "meta/trials/trial_idx.npy", np.arange(11))
    expect_error(tree, "meta/trials/trial_idx.npy", "trial_idx", "12 trials")


def test_meta_neuron_counts_disagree(tree):
    np.save(tree / "meta/neurons/area.npy", np.array(["V1"] * 6))
    expect_error(tree, "meta/neurons/area.npy", "areas", "7 neurons")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_response_names_its_file(tree, bad):
    r = np.load(tree / "data/responses/5.npy")
    r[2] = bad
    np.save(tree / "data/responses/5.npy", r)
    expect_error(tree, "data/responses/5.npy", "responses", "NaN or infinite", "neuron 2")


def test_response_length_disagrees_with_unit_ids(tree):
    np.save(tree / "data/responses/4.npy", np.zeros(6, np.float32))
    expect_error(tree, "data/responses/4.npy", "responses", r"\(6,\)", "unit_ids", r"\(7,\)")


def test_behavior_shape(tree):
    np.save(tree / "data/behavior/7.npy", np.zeros(2, np.float32))
    expect_error(tree, "data/behavior/7.npy", "behavior", r"\(2,\)")


def test_image_shape(tree):
    np.save(tree / "data/images/2.npy", np.zeros((1, 6, 9), np.float32))
    expect_error(tree, "data/images/2.npy", "images", r"\(6, 9\)")


def test_trials_of_one_image_must_show_identical_pixels(tree):
    # trials 0, 4, 8 show image 20: change the pixels of trial 4
    img = np.load(tree / "data/images/4.npy")
    img[0, 1, 1] += 1
    np.save(tree / "data/images/4.npy", img)
    msg = expect_error(tree, "data/images/4.npy", "images", "frame_image_id 20")
    assert str(tree / "data/images/0.npy") in msg


def test_oracle_image_with_one_repeat(tree):
    tiers = np.load(tree / "meta/trials/tiers.npy")
    tiers[1] = "oracle"  # image 10 is shown once
    np.save(tree / "meta/trials/tiers.npy", tiers)
    msg = expect_error(tree, "meta/trials/tiers.npy", "tiers", "fewer than 2 repeats", r"\[10\]")
    assert msg.startswith(str(tree / "meta/trials/tiers.npy") + ": field 'tiers'")


def test_unknown_tier(tree):
    tiers = np.load(tree / "meta/trials/tiers.npy")
    tiers[3] = "holdout"
    np.save(tree / "meta/trials/tiers.npy", tiers)
    expect_error(tree, "meta/trials/tiers.npy", "tiers", "holdout")


def test_pickled_meta_needs_consent(tree):
    tiers = np.load(tree / "meta/trials/tiers.npy").astype(object)
    np.save(tree / "meta/trials/tiers.npy", tiers, allow_pickle=True)
    expect_error(tree, "meta/trials/tiers.npy", "tiers", "pickled", "allow_pickle=True")
    assert read_filetree(tree, allow_pickle=True).tiers.tolist() == make_scan().tiers.tolist()


def test_not_a_folder(tmp_path):
    with pytest.raises(RecordingError, match=r"nowhere.*field 'path'.*Fix:"):
        read_filetree(tmp_path / "nowhere")
    (tmp_path / "half").mkdir()
    (tmp_path / "half/data").mkdir()
    expect_error(tmp_path / "half", "meta", "path", "missing")


def test_non_integer_ids(tree):
    np.save(tree / "meta/trials/frame_image_id.npy", np.load(tree / "meta/trials/frame_image_id.npy") + 0.5)
    expect_error(tree, "meta/trials/frame_image_id.npy", "trial_image_ids", "integers")


def test_garbage_meta_file(tree):
    (tree / "meta/neurons/layer.npy").write_bytes(b"not an array")
    expect_error(tree, "meta/neurons/layer.npy", "layers", "not a .npy file")
