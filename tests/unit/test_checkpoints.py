"""pipeline.checkpoints: one checksummed file written atomically, and every check on loading it."""

from __future__ import annotations

import pytest
import torch

from pipeline.checkpoints import (CHECKPOINT_FILE, MAGIC, CheckpointError, checkpoint_path, fingerprint, key_folder,
                                  load_checkpoint, read_checkpoint, save_checkpoint)
from pipeline.errors import NeuralRegError

FP = fingerprint({"run": "test", "seed": 0})


def a_state(epoch=2, **over) -> dict:
    """What a trainer writes: weights, optimiser state (nested, with ints), a generator, curves (NaN allowed)."""
    state = dict(fingerprint=FP, epoch=epoch,
                 model={"w": torch.randn(3, 4), "steps": torch.tensor(7)},
                 optimiser={"state": {0: {"momentum_buffer": torch.randn(3, 4), "step": torch.tensor(2.0)}},
                            "param_groups": [{"lr": 0.1, "params": [0]}]},
                 generator=torch.Generator().manual_seed(0).get_state(),
                 curves={"loss": [1.0] * epoch, "similarity_loss": [float("nan")] * epoch},
                 wall_time=1.5)
    state.update(over)
    return state


@pytest.fixture
def saved(tmp_path):
    path = checkpoint_path(tmp_path)
    state = a_state()
    save_checkpoint(path, state)
    return path, state


def refused(path, *needles, epochs=3, **kw):
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, FP, epochs, **kw)
    for needle in (str(path), *needles):
        assert needle in str(info.value), f"{needle!r} not in: {info.value}"
    return str(info.value)


def test_round_trip_is_exact_and_leaves_one_file(saved):
    path, state = saved
    assert path.name == CHECKPOINT_FILE and [p.name for p in path.parent.iterdir()] == [CHECKPOINT_FILE]
    assert path.read_bytes().startswith(f"{MAGIC} 2 sha256=".encode())
    back = load_checkpoint(path, FP, 3, required=("model", "optimiser"))
    assert torch.equal(back["model"]["w"], state["model"]["w"]) and back["epoch"] == 2
    buffer = "momentum_buffer"
    assert torch.equal(back["optimiser"]["state"][0][buffer], state["optimiser"]["state"][0][buffer])
    assert torch.equal(back["generator"], state["generator"]) and back["wall_time"] == 1.5
    save_checkpoint(path, a_state(epoch=3))  # replaced atomically
    assert read_checkpoint(path)["epoch"] == 3 and len(list(path.parent.iterdir())) == 1


@pytest.mark.parametrize("where", ["header digest", "payload start", "payload middle", "last byte"])
def test_one_flipped_byte_anywhere_is_refused(saved, where):
    path, _ = saved
    data = bytearray(path.read_bytes())
    header_end = data.index(b"\n")
    at = {"header digest": header_end - 5, "payload start": header_end + 1, "payload middle": len(data) // 2,
          "last byte": len(data) - 1}[where]
    data[at] ^= 0x01
    path.write_bytes(bytes(data))
    refused(path, "damaged", "delete it to start the run afresh")


def test_a_truncated_or_foreign_file_is_refused(saved):
    path, _ = saved
    path.write_bytes(path.read_bytes()[:-100])
    refused(path, "damaged")
    torch.save(a_state(), path)  # an unchecksummed (format 1) checkpoint
    refused(path, "not a checksummed", "delete it")
    path.write_bytes(b"")
    refused(path, "not a checksummed")
    path.write_bytes(path.read_bytes() + f"{MAGIC} 9 sha256={'0' * 64}\n".encode())
    refused(path, "format 9")


@pytest.mark.parametrize("where, poison", [
    ("model['w']", lambda s: s["model"]["w"].view(-1).__setitem__(5, float("nan"))),
    ("optimiser['state'][0]['momentum_buffer']",
     lambda s: s["optimiser"]["state"][0]["momentum_buffer"].view(-1).__setitem__(0, float("-inf"))),
    ("best[1]", lambda s: s.update(best=[torch.ones(2), torch.tensor([1.0, float("inf")])])),
])
def test_non_finite_values_are_refused_though_the_checksum_is_valid(tmp_path, where, poison):
    path, state = checkpoint_path(tmp_path), a_state()
    poison(state)
    save_checkpoint(path, state)
    read_checkpoint(path)  # intact as a file ...
    refused(path, "NaN or infinite", where, "delete it")  # ... but not a state to resume


@pytest.mark.parametrize("change, needle", [
    (dict(epoch=3), "epoch counter says 3"),  # advanced past its curves
    (dict(epoch=1), "epoch counter says 1"),
    (dict(epoch=0, curves={"loss": []}), "epoch counter 0"),
    (dict(epoch=True), "epoch counter True"),
    (dict(epoch=2.0), "epoch counter 2.0"),
    (dict(curves={"loss": [1.0, 2.0], "lr": [0.1]}), "inconsistent"),
    (dict(curves={"loss": 3}), "inconsistent"),
    (dict(curves=None), "inconsistent"),
])
def test_an_unsound_epoch_counter_is_refused(tmp_path, change, needle):
    path = checkpoint_path(tmp_path)
    save_checkpoint(path, dict(a_state(), **change))
    refused(path, needle, "delete it")


def test_another_run_a_later_epoch_or_missing_keys_are_refused(saved):
    path, _ = saved
    with pytest.raises(CheckpointError, match="another run"):
        load_checkpoint(path, fingerprint({"run": "test", "seed": 1}), 3)
    refused(path, "beyond the 1 epochs asked for", epochs=1)
    refused(path, "lacks ['regulariser']", required=("model", "regulariser"))


def test_the_error_class_is_the_callers(saved):
    class TrainError(CheckpointError):
        pass

    path, _ = saved
    with pytest.raises(TrainError, match="beyond"):
        load_checkpoint(path, FP, 1, error=TrainError)
    assert issubclass(CheckpointError, NeuralRegError)


def test_key_folder_is_per_namespace_and_key_and_matches_params_hash(tmp_path):
    from schemas.paramset import params_hash

    key = {"animal_id": "a", "session": 1, "predictor_seed": 0}
    folder = key_folder(tmp_path, "alice_predictor", key)
    assert folder == tmp_path / f"alice_predictor-{params_hash({k: str(v) for k, v in key.items()})}"
    assert key_folder(tmp_path, "alice_predictor", dict(reversed(key.items()))) == folder
    assert key_folder(tmp_path, "bob_predictor", key) != folder
    assert key_folder(tmp_path, "alice_predictor", dict(key, session=2)) != folder
    assert checkpoint_path(None) is None
