"""Classifier training: determinism, zero cost at alpha = 0, resume from checkpoints, similarity loss falls."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn as nn

from pipeline.checkpoints import CheckpointError
from pipeline.checkpoints import CHECKPOINT_FILE, read_checkpoint, save_checkpoint
from pipeline.classifier.config import (TRAIN_PRESETS, TrainConfigError, learning_rate, resolve_regulariser,
                                        resolve_train_config)
from pipeline.classifier.inference import load_classifier, predict_logits
from pipeline.classifier.resnet import ARCHITECTURES
from pipeline.classifier.tasks import load_task
from pipeline.classifier.train import train_classifier

torch.set_num_threads(1)

ARCH = "resnet18-w4"
CONFIG = dict(preset="cpu-test", batch_size=32, max_steps_per_epoch=4, epochs=3, eval_batch_size=100)
REG = dict(alpha=2.0, batch_size=7)


@pytest.fixture(autouse=True)
def tiny_architecture(monkeypatch):
    """A width-4 ResNet18, known to build_classifier for these tests only: seconds per run."""
    monkeypatch.setitem(ARCHITECTURES, ARCH, "ResNet18 at width 4: for unit tests")


@pytest.fixture(scope="module")
def task():
    full = load_task("digits")
    return dataclasses.replace(full, train_x=full.train_x[:256], train_y=full.train_y[:256],
                               test_x=full.test_x[:100], test_y=full.test_y[:100])


@pytest.fixture(scope="module")
def target():
    """20 smooth 36 x 64 stimuli in [0, 255] and their pixel similarity (Eq 2 on pixels): a matchable target."""
    rng = np.random.default_rng(0)
    coarse = torch.from_numpy(rng.random((20, 1, 10, 17)).astype(np.float32))
    stimuli = 255 * torch.nn.functional.interpolate(coarse, size=(36, 64), mode="bilinear", align_corners=False)[:, 0]
    u = stimuli.numpy().reshape(20, -1).astype(np.float64)
    u -= u.mean(0)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    return dict(matrix=(u @ u.T).astype(np.float32), stimuli=stimuli.numpy())


def run(task, target=None, reg=None, **kw):
    args = dict(train_config=CONFIG, seed=0, device="cpu", progress=False)
    args.update(kw)
    return train_classifier(task, ARCH, regulariser=reg, target=target, **args)


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_same_seed_same_weights_and_result_fields(task, target):
    a = run(task, target, REG)
    b = run(task, target, REG)
    assert_same_weights(a.state_dict, b.state_dict)
    assert a.curves == b.curves
    c = run(task, target, REG, seed=1)
    assert not torch.equal(a.state_dict["linear.weight"], c.state_dict["linear.weight"])
    assert a.device == "cpu" and a.epochs == 3 and a.steps_per_epoch == 4 and a.pairs_per_step == 21
    assert all(len(v) == 3 for v in a.curves.values())
    assert list(a.gamma) == ["conv1", "layer1", "layer2", "layer3", "layer4"]
    assert sum(a.gamma.values()) == pytest.approx(1.0, abs=1e-6)
    assert a.test_accuracy == a.curves["test_accuracy"][-1]
    assert all(v.device.type == "cpu" for v in a.state_dict.values())


def stem_inputs(fn):
    """Input (H, W) of every call of a single-channel Conv2d (the stem) while fn runs, via a global hook."""
    shapes = []

    def hook(module, args):
        if isinstance(module, nn.Conv2d) and module.in_channels == 1:
            shapes.append(tuple(args[0].shape[-2:]))

    handle = nn.modules.module.register_module_forward_pre_hook(hook)
    try:
        result = fn()
    finally:
        handle.remove()
    return result, shapes


def test_alpha_zero_does_no_stimulus_pass(task, target):
    plain, plain_shapes = stem_inputs(lambda: run(task))
    zero, zero_shapes = stem_inputs(lambda: run(task, target, dict(REG, alpha=0.0)))
    reg, reg_shapes = stem_inputs(lambda: run(task, target, REG))
    assert (36, 64) not in plain_shapes and zero_shapes == plain_shapes
    assert reg_shapes.count((36, 64)) == 3 * 4  # one stimulus batch per step
    assert_same_weights(plain.state_dict, zero.state_dict)  # alpha = 0 is the plain run, bit for bit
    assert zero.gamma == {} and zero.pairs_per_step == 0 and np.isnan(zero.curves["similarity_loss"]).all()
    assert not torch.equal(plain.state_dict["linear.weight"], reg.state_dict["linear.weight"])


class Killed(RuntimeError):
    pass


def kill_after(epoch_to_die):
    def callback(epoch, curves):
        if epoch == epoch_to_die:
            raise Killed(f"killed after epoch {epoch}")
    return callback


def test_killed_run_resumes_to_the_same_weights(task, target, tmp_path):
    straight = run(task, target, REG)
    with pytest.raises(Killed):
        run(task, target, REG, checkpoint_dir=tmp_path, on_epoch_end=kill_after(1))
    assert read_checkpoint(tmp_path / CHECKPOINT_FILE)["epoch"] == 1
    resumed = run(task, target, REG, checkpoint_dir=tmp_path)
    assert_same_weights(straight.state_dict, resumed.state_dict)
    assert resumed.curves == straight.curves and resumed.gamma == straight.gamma
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_FILE]  # no temporary files left behind


def test_shorter_run_extended_from_its_checkpoint(task, tmp_path):
    straight = run(task)
    run(task, train_config=dict(CONFIG, epochs=1), checkpoint_dir=tmp_path)
    extended = run(task, checkpoint_dir=tmp_path)
    assert_same_weights(straight.state_dict, extended.state_dict)


def test_checkpoint_of_another_run_is_refused(task, tmp_path):
    run(task, train_config=dict(CONFIG, epochs=1), checkpoint_dir=tmp_path)
    with pytest.raises(TrainConfigError, match="another run"):
        run(task, train_config=dict(CONFIG, epochs=1), checkpoint_dir=tmp_path, seed=3)
    assert (tmp_path / CHECKPOINT_FILE).is_file()


@pytest.fixture
def one_epoch_in(task, target, tmp_path):
    """A regularised run killed after its first of 3 epochs: (its checkpoint file, the state in it)."""
    with pytest.raises(Killed):
        run(task, target, REG, checkpoint_dir=tmp_path, on_epoch_end=kill_after(1))
    path = tmp_path / CHECKPOINT_FILE
    return path, read_checkpoint(path)


def assert_refused(task, target, path, *needles):
    """Resuming from ``path`` fails with a TrainConfigError naming the file, the fault and the fix."""
    with pytest.raises(TrainConfigError) as info:
        run(task, target, REG, checkpoint_dir=path.parent)
    assert isinstance(info.value, CheckpointError)
    for needle in (str(path), "delete it to start the run afresh", *needles):
        assert needle in str(info.value), f"{needle!r} not in: {info.value}"
    assert path.is_file()  # refused, never silently overwritten


def test_checkpoint_with_a_flipped_byte_is_refused(task, target, one_epoch_in):
    path, _ = one_epoch_in
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    assert_refused(task, target, path, "damaged", "checksum")


@pytest.mark.parametrize("where", ["model", "optimiser", "regulariser"])
def test_checkpoint_with_a_nan_is_refused_though_its_checksum_is_valid(task, target, one_epoch_in, where):
    path, state = one_epoch_in
    if where == "model":
        state["model"]["linear.weight"][0, 0] = float("nan")
    elif where == "optimiser":
        next(iter(state["optimiser"]["state"].values()))["momentum_buffer"].view(-1)[0] = float("inf")
    else:
        state["regulariser"][next(k for k, v in state["regulariser"].items() if v.is_floating_point())].view(-1)[0] \
            = float("nan")
    save_checkpoint(path, state)  # a valid checksum over the bad weights
    assert_refused(task, target, path, "NaN or infinite", where)


def test_checkpoint_with_an_advanced_epoch_counter_is_refused(task, target, one_epoch_in):
    path, state = one_epoch_in
    save_checkpoint(path, dict(state, epoch=2))  # valid checksum; the curves still hold one epoch
    assert_refused(task, target, path, "inconsistent", "epoch counter says 2")
    save_checkpoint(path, dict(state, epoch=0))
    assert_refused(task, target, path, "epoch counter 0")


def test_a_checkpoint_of_the_old_format_is_refused(task, target, one_epoch_in):
    path, state = one_epoch_in
    torch.save(state, path)  # format 1: torch.save alone, no checksum
    assert_refused(task, target, path, "not a checksummed")


def test_similarity_loss_falls_during_regularised_training(task, target):
    cfg = dict(CONFIG, epochs=4, max_steps_per_epoch=6, lr_decay=1.0)
    result = run(task, target, dict(alpha=10.0, batch_size=8, layers=["conv1", "layer1", "layer2"]),
                 train_config=cfg)
    sim = result.curves["similarity_loss"]
    assert sim[-1] < 0.6 * sim[0], sim


def test_paper_schedule():
    cfg = resolve_train_config("paper")
    assert (cfg["epochs"], cfg["batch_size"], cfg["momentum"]) == (40, 64, 0.9)
    lrs = [learning_rate(e, cfg) for e in range(40)]
    assert lrs[0] == lrs[3] == 0.1 and lrs[4] == pytest.approx(0.03) and lrs[16] == pytest.approx(0.1 * 0.3 ** 4)
    assert lrs[20] == 0.1 and lrs[24] == pytest.approx(0.03) and lrs[39] == pytest.approx(0.1 * 0.3 ** 4)
    assert {"paper", "cpu-demo"} <= set(TRAIN_PRESETS)


def test_configs_from_a_database_blob_with_numpy_scalars():
    cfg = resolve_train_config({"preset": "cpu-demo", "epochs": np.int64(3), "lr": np.float32(0.5)})
    assert cfg["epochs"] == 3 and type(cfg["epochs"]) is int and type(cfg["lr"]) is float
    reg = resolve_regulariser({"alpha": np.float32(20.0), "batch_size": np.int32(9), "layers": np.array(["layer1"])})
    assert reg["alpha"] == 20.0 and reg["batch_size"] == 9 and reg["layers"] == ["layer1"]
    assert resolve_regulariser({"alpha": np.float64(0.0)}) is None


def test_bad_configuration_is_clear(task, target):
    with pytest.raises(TrainConfigError, match="lr_schedule"):
        resolve_train_config({"lr_schedule": "cosine"})
    with pytest.raises(TrainConfigError, match="preset"):
        resolve_train_config("fast")
    with pytest.raises(TrainConfigError, match="needs target"):
        run(task, None, REG)
    with pytest.raises(TrainConfigError, match="0, 255"):
        run(task, dict(target, stimuli=target["stimuli"] / 255), REG)
    with pytest.raises(TrainConfigError, match="square"):
        run(task, dict(target, matrix=target["matrix"][:5]), REG)
    with pytest.raises(TrainConfigError, match="alpha"):
        run(task, target, dict(REG, alpha=-1))
    with pytest.raises(TrainConfigError, match="batch_size"):
        run(task, target, dict(REG, batch_size=1))


def test_load_classifier_and_predict_logits_round_trip(task):
    result = run(task, train_config=dict(CONFIG, epochs=1))
    model = load_classifier(ARCH, 10, result.state_dict)
    logits = predict_logits(model, task.test_x, batch_size=33)
    assert logits.shape == (100, 10) and logits.dtype == np.float32
    with torch.no_grad():
        direct = model(torch.from_numpy(task.test_x)).numpy()
    np.testing.assert_allclose(logits, direct, rtol=1e-4, atol=1e-5)
    assert (logits.argmax(1) == task.test_y).mean() == pytest.approx(result.test_accuracy)
