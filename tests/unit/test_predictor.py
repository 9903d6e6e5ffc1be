"""Unit tests of the predictive model (pipeline/predictor): modules, regularisers, training, prediction."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from scipy.signal import convolve2d

from pipeline.predictor.core import DenseCore, laplace_penalty
from pipeline.predictor.model import build_model
from pipeline.predictor.modulator import Modulator
from pipeline.predictor.readout import GaussianReadout, PointReadout, receptive_field_positions
from pipeline.predictor.config import CPU_FAST_CONFIG, DEFAULT_CONFIG, PredictorConfigError
from pipeline.predictor.train import PredictorDataError, correlation_per_neuron, load_model, predict, train_predictor
from pipeline.checkpoints import CHECKPOINT_FILE, CheckpointError, read_checkpoint, save_checkpoint

torch.set_num_threads(1)

SHAPE = (18, 32)
# Small and fast, for tests: full-resolution 8-channel core on 18 x 32 images.
TINY = {**CPU_FAST_CONFIG, "core_channels": 8, "input_kernel": 7, "hidden_kernel": 3, "input_stride": 1,
        "max_epochs": 12, "patience": 3, "lr_decay_steps": 1, "lr": 0.01, "batch_size": 32}


# ---- a known linear-nonlinear population -------------------------------------------------------------------
def make_population(n_train=400, n_val=80, n_oracle=30, repeats=4, n_neurons=30, seed=0):
    """Smooth-noise images, Gabor receptive fields at known positions, softplus, a running gain, Poisson noise.

    Returns (data dict for train_predictor, true rate per trial (n_trials, n_neurons), true positions
    (n_neurons, 2) in readout grid units).
    """
    rng = np.random.default_rng(seed)
    h, w = SHAPE
    n_img = n_train + n_val + n_oracle
    img = gaussian_filter(rng.standard_normal((n_img, h, w)), sigma=(0, 1.0, 1.0))
    pix = np.clip(128 + 50 * img / img.std(), 0, 255).astype(np.float32)
    z = (pix - pix.mean()) / pix.std()
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    cx, cy = rng.uniform(0.2 * w, 0.8 * w, n_neurons), rng.uniform(0.2 * h, 0.8 * h, n_neurons)
    theta, phase = rng.uniform(0, np.pi, n_neurons), rng.uniform(0, 2 * np.pi, n_neurons)
    dx, dy = xx - cx[:, None, None], yy - cy[:, None, None]
    u = dx * np.cos(theta)[:, None, None] + dy * np.sin(theta)[:, None, None]
    gabor = np.exp(-(dx ** 2 + dy ** 2) / (2 * 2.0 ** 2)) * np.cos(2 * np.pi * u / 6 + phase[:, None, None])
    drive = z.reshape(n_img, -1) @ gabor.reshape(n_neurons, -1).T
    rate_img = 1.5 * np.log1p(np.exp(2 * drive / drive.std(0) - 1))
    img_idx = np.concatenate([np.arange(n_train + n_val), np.repeat(np.arange(n_train + n_val, n_img), repeats)])
    tiers = np.array(["train"] * n_train + ["validation"] * n_val + ["oracle"] * (n_oracle * repeats))
    nt = len(img_idx)
    behavior = np.stack([rng.normal(5, 1, nt), rng.normal(0, 0.1, nt), np.abs(rng.normal(0, 5, nt))], 1)
    running = (behavior[:, 2] - behavior[:, 2].mean()) / behavior[:, 2].std()
    rate = rate_img[img_idx] * np.exp(0.3 * running)[:, None]
    data = {"images": pix[img_idx], "responses": rng.poisson(rate).astype(np.float32),
            "behavior": behavior.astype(np.float32), "pupil_center": rng.normal(0, 1, (nt, 2)).astype(np.float32),
            "tiers": tiers}
    positions = np.stack([cx / (w - 1) * 2 - 1, cy / (h - 1) * 2 - 1], 1)
    return data, rate, positions


@pytest.fixture(scope="module")
def population():
    return make_population()


@pytest.fixture(scope="module")
def trained(population):
    data, _, _ = population
    return train_predictor(data, TINY, seed=0, progress=False)


def small_model(**over):
    torch.manual_seed(0)
    return build_model({**TINY, **over}, n_neurons=7, image_shape=SHAPE)


def randomise(module: torch.nn.Module, scale: float = 0.3) -> None:
    """Give every parameter (also the zero-initialised last layers) random values."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, scale)


# ---- modules ---------------------------------------------------------------------------------------------
def test_forward_shapes_and_positive_rates():
    model = small_model().eval()
    randomise(model.modulator)
    randomise(model.shifter)
    images = torch.rand(5, 1, *SHAPE) * 255
    out = model(images, torch.randn(5, 3), torch.randn(5, 2))
    assert out.shape == (5, 7)
    assert (out > 0).all()
    # (batch, H, W) works too, and a wrong image size is refused with the field named
    torch.testing.assert_close(model(images[:, 0], None, None), model(images, None, None))
    with pytest.raises(ValueError, match="images"):
        model(torch.rand(5, 1, 20, 32))


def test_dense_core_concatenates_its_layers():
    core = DenseCore(channels=4, n_layers=3, input_kernel=5, hidden_kernel=3).eval()
    x = torch.randn(2, 1, *SHAPE)
    out = core(x)
    assert out.shape == (2, 12, *SHAPE) and core.out_channels == 12
    first = core.layers[0](x)
    second = core.layers[1](first)
    third = core.layers[2](torch.cat([first, second], 1))  # layer 3 sees layers 1 and 2
    torch.testing.assert_close(out, torch.cat([first, second, third], 1))
    strided = DenseCore(channels=4, input_kernel=9, input_stride=2)
    assert tuple(strided(x).shape[-2:]) == strided.output_shape(*SHAPE) == (9, 16)


def test_point_readout_reads_the_feature_map_at_its_position():
    readout = PointReadout(in_channels=3, n_neurons=2, gamma_readout=0.0)
    feats = torch.randn(4, 3, 5, 9)
    with torch.no_grad():
        readout.mu.copy_(torch.tensor([[-1.0, -1.0], [0.5, 0.0]]))  # pixel (0, 0) and pixel (row 2, col 6)
        readout.features.copy_(torch.randn(3, 2))
        readout.bias.copy_(torch.tensor([0.1, -0.2]))
    out = readout.eval()(feats)
    expected = torch.stack([feats[:, :, 0, 0] @ readout.features[:, 0] + 0.1,
                            feats[:, :, 2, 6] @ readout.features[:, 1] - 0.2], 1)
    torch.testing.assert_close(out, expected.detach())


def test_gaussian_readout_samples_in_training_and_uses_the_mean_in_eval():
    torch.manual_seed(0)
    readout = GaussianReadout(in_channels=3, n_neurons=4, init_sigma=0.3)
    feats = torch.randn(2, 3, 8, 8)
    readout.eval()
    torch.testing.assert_close(readout(feats), readout(feats))
    point = PointReadout(3, 4)
    point.load_state_dict({k: v for k, v in readout.state_dict().items() if k != "sigma"})
    torch.testing.assert_close(readout(feats), point.eval()(feats))
    readout.train()
    assert not torch.allclose(readout(feats), readout(feats))


def test_shifter_moves_every_readout_position_by_its_output():
    model = small_model(readout="point").eval()
    shift = torch.tensor([0.2, -0.1])
    with torch.no_grad():  # a shifter whose output is the constant `shift`
        last = model.shifter.net[-2]
        last.weight.zero_()
        last.bias.copy_(torch.atanh(shift))
    images = torch.rand(3, 1, *SHAPE) * 255
    shifted = model(images, None, torch.randn(3, 2))
    reference = small_model(readout="point", shifter=False).eval()
    reference.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("shifter")})
    assert not torch.allclose(shifted, reference(images))  # a shift changes the output ...
    with torch.no_grad():
        reference.readout.mu += shift  # ... exactly as moving every position by it
    torch.testing.assert_close(shifted, reference(images))


@pytest.mark.parametrize("gain", ["exp", "softplus"])
def test_modulator_gain_multiplies_the_rates(gain):
    model = small_model(modulator_gain=gain).eval()
    c = torch.linspace(0.5, 2.0, 7)
    with torch.no_grad():  # a modulator whose gain is the constant c (one value per neuron)
        last = model.modulator.net[-1]
        last.weight.zero_()
        last.bias.copy_(torch.log(c) if gain == "exp" else torch.log(torch.expm1(c * math.log(2))))
    plain = small_model(modulator=False).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("modulator")})
    images = torch.rand(4, 1, *SHAPE) * 255
    torch.testing.assert_close(model(images, torch.randn(4, 3)), plain(images) * c)
    randomise(model.modulator)
    assert (Modulator(7, gain=gain).eval()(torch.randn(10, 3)) == 1).all()  # untrained: gain 1
    assert (model.modulator(torch.randn(50, 3) * 3) > 0).all()


def test_laplace_penalty_matches_a_slow_reference():
    w = torch.randn(4, 2, 7, 7)
    lap = np.array([[0.5, 1, 0.5], [1, -6, 1], [0.5, 1, 0.5]])
    reference = sum((convolve2d(f, lap, mode="same") ** 2).sum() for f in w.reshape(-1, 7, 7).numpy())
    assert float(laplace_penalty(w)) == pytest.approx(reference, rel=1e-5)
    # a smoother filter (a blurred copy) is penalised less
    smooth = torch.as_tensor(gaussian_filter(w.numpy(), sigma=(0, 0, 1.5, 1.5)))
    assert float(laplace_penalty(smooth)) < 0.2 * float(laplace_penalty(w))


def test_regularizer_terms_are_positive_and_scale_with_their_gamma():
    torch.set_grad_enabled(False)  # plain numbers here; no graph needed
    def reg(**gammas):
        torch.manual_seed(0)
        return build_model({**TINY, "gamma_input": 0, "gamma_readout": 0, **gammas}, 7, SHAPE)

    core1, core3 = reg(gamma_input=1.0).core.regularizer(), reg(gamma_input=3.0).core.regularizer()
    assert float(core1) > 0 and float(core3) == pytest.approx(3 * float(core1), rel=1e-6)
    ro1, ro3 = reg(gamma_readout=1.0).readout.regularizer(), reg(gamma_readout=3.0).readout.regularizer()
    assert float(ro1) > 0 and float(ro3) == pytest.approx(3 * float(ro1), rel=1e-6)
    hid = reg(gamma_hidden=2.0)
    assert float(hid.core.hidden_l2()) > 0
    assert float(hid.core.regularizer()) == pytest.approx(2 * float(hid.core.hidden_l2()), rel=1e-6)
    model = reg(gamma_input=1.0, gamma_readout=1.0, gamma_shifter=0.5, gamma_modulator=0.5)
    randomise(model.shifter)
    randomise(model.modulator)
    parts = [model.core.regularizer(), model.readout.regularizer(), model.shifter.regularizer(),
             model.modulator.regularizer()]
    assert all(float(p) > 0 for p in parts)
    assert float(model.regularizer()) == pytest.approx(float(sum(parts)), rel=1e-6)
    assert float(reg().regularizer()) == 0.0
    torch.set_grad_enabled(True)


def test_correlation_per_neuron_matches_numpy_and_gives_zero_for_constants():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(50, 6)), rng.normal(size=(50, 6))
    b[:, 1] = a[:, 1] * 2 + 1
    a[:, 4] = 3.0  # constant measured
    b[:, 5] = 0.0  # constant predicted
    got = correlation_per_neuron(a, b)
    reference = [np.corrcoef(a[:, k], b[:, k])[0, 1] for k in range(4)]
    np.testing.assert_allclose(got[:4], reference, rtol=1e-10)
    assert got[1] == pytest.approx(1.0)
    assert got[4] == 0.0 and got[5] == 0.0


def test_receptive_field_positions_find_the_known_positions(population):
    data, _, positions = population
    train = data["tiers"] == "train"
    images = torch.as_tensor(data["images"][train])
    z = (images - images.mean()) / images.std()
    found = receptive_field_positions(z, torch.as_tensor(data["responses"][train]), SHAPE).numpy()
    # grid spacing is 2 / 31 horizontally, 2 / 17 vertically: nearly all within about 1.5 pixels
    err = np.linalg.norm(found - positions, axis=1)
    assert np.median(err) < 0.1 and (err < 0.2).mean() > 0.9
    shuffled = np.random.default_rng(0).permutation(len(positions))
    assert np.median(np.linalg.norm(found - positions[shuffled], axis=1)) > 3 * np.median(err)


# ---- prediction ------------------------------------------------------------------------------------------
def test_predict_holds_missing_behaviour_at_its_training_mean(trained, population):
    data, _, _ = population
    model = trained.model()
    randomise(model.modulator)  # make behaviour and eye position matter a lot
    randomise(model.shifter, scale=1.0)
    images = data["images"][:20]
    n = len(images)
    at_mean = predict(model, images, np.tile(model.behavior_mean.numpy(), (n, 1)),
                      np.tile(model.pupil_mean.numpy(), (n, 1)))
    np.testing.assert_allclose(predict(model, images), at_mean, rtol=1e-5, atol=1e-6)
    other = predict(model, images, data["behavior"][:n] * 3, data["pupil_center"][:n] + 2)
    assert np.abs(other - at_mean).max() > 1e-2
    assert predict(model, images, batch_size=7).dtype == np.float32


def test_model_standardises_with_training_statistics(trained, population):
    data, _, _ = population
    train = data["tiers"] == "train"
    model = trained.model()
    assert float(model.image_mean) == pytest.approx(data["images"][train].mean(), rel=1e-4)
    np.testing.assert_allclose(model.behavior_mean.numpy(), data["behavior"][train].mean(0), rtol=1e-4)
    np.testing.assert_allclose(model.response_scale.numpy(), data["responses"][train].std(0), rtol=1e-4)
    # load_model rebuilds the same function from the state_dict
    again = load_model(trained.state_dict, trained.config, trained.n_neurons, trained.image_shape)
    np.testing.assert_array_equal(predict(again, data["images"][:9]), predict(model, data["images"][:9]))


# ---- training --------------------------------------------------------------------------------------------
def test_training_recovers_the_population_above_a_shuffled_control(trained, population):
    data, rate, _ = population
    held = data["tiers"] == "oracle"
    ceiling = correlation_per_neuron(data["responses"][held], rate[held])  # the true rate's correlation
    assert trained.heldout_tier == "oracle" and trained.correlation.shape == (30,)
    assert 0.3 < trained.mean_correlation < ceiling.mean()
    assert trained.mean_correlation > 0.6 * ceiling.mean()

    shuffled = dict(data)
    train = np.flatnonzero(data["tiers"] == "train")
    responses = data["responses"].copy()
    responses[train] = responses[np.random.default_rng(0).permutation(train)]
    shuffled["responses"] = responses
    control = train_predictor(shuffled, TINY, seed=0, progress=False)
    assert abs(control.mean_correlation) < 0.1
    assert trained.mean_correlation > control.mean_correlation + 0.25


def test_result_records_curves_and_the_best_epoch(trained):
    assert len(trained.curves["train_loss"]) == len(trained.curves["val_correlation"]) == trained.n_epochs
    assert 1 <= trained.best_epoch <= trained.n_epochs
    assert trained.best_val_correlation == pytest.approx(max(trained.curves["val_correlation"]))
    assert trained.curves["val_correlation"][-1] > trained.curves["val_correlation"][0]
    assert all(v.device.type == "cpu" for v in trained.state_dict.values())
    assert trained.device == "cpu" and trained.wall_time > 0
    assert set(trained.config) == set(DEFAULT_CONFIG)
    assert trained.summary()["mean_correlation"] == pytest.approx(float(np.mean(trained.v)))


def test_training_is_deterministic_for_a_seed_and_leaves_the_global_rng_alone(population):
    data, _, _ = population
    config = {**TINY, "max_epochs": 2}
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = train_predictor(data, config, seed=5, progress=False)
    after = torch.rand(3)
    b = train_predictor(data, config, seed=5, progress=False)
    c = train_predictor(data, config, seed=6, progress=False)
    torch.testing.assert_close(before, after)
    for key in a.state_dict:
        assert torch.equal(a.state_dict[key], b.state_dict[key]), key
    np.testing.assert_array_equal(a.correlation, b.correlation)
    assert not torch.equal(a.state_dict["readout.features"], c.state_dict["readout.features"])


def test_heldout_falls_back_to_test_trials(population):
    data, _, _ = population
    no_oracle = dict(data, tiers=np.where(data["tiers"] == "oracle", "test", data["tiers"]))
    result = train_predictor(no_oracle, {**TINY, "max_epochs": 1}, seed=0, progress=False)
    assert result.heldout_tier == "test" and result.n_epochs == 1


@pytest.mark.parametrize("change, field", [
    (lambda d: d.pop("behavior"), "behavior"),
    (lambda d: d.update(tiers=np.where(d["tiers"] == "validation", "train", d["tiers"])), "validation"),
    (lambda d: d.update(tiers=np.where(d["tiers"] == "oracle", "bogus", d["tiers"])), "tiers"),
    (lambda d: d.update(responses=d["responses"] - 1), "responses"),
    (lambda d: d.update(pupil_center=d["pupil_center"][:, :1]), "pupil_center"),
    (lambda d: d.update(images=d["images"][:-1]), "images"),
])
def test_bad_data_is_refused_with_the_field_named(population, change, field):
    data = dict(population[0])
    change(data)
    with pytest.raises(PredictorDataError, match=field):
        train_predictor(data, TINY, progress=False)


def test_bad_config_is_refused(population):
    with pytest.raises(PredictorConfigError, match="learning_rate"):
        train_predictor(population[0], {"learning_rate": 0.1}, progress=False)
    with pytest.raises(ValueError, match="readout"):
        build_model({"readout": "linear"}, 3, SHAPE)
    with pytest.raises(ValueError, match="input_kernel"):
        build_model({"input_kernel": 4}, 3, SHAPE)


# ---- checkpoints and resuming ------------------------------------------------------------------------------
# Decays the learning rate after epoch 6 (restoring the best weights) and stops early after epoch 7 of 10.
RESUME = {**TINY, "max_epochs": 10, "patience": 1, "lr_decay_steps": 1, "tolerance": 0.01}


class Killed(RuntimeError):
    pass


def kill_after(epoch_to_die):
    def callback(epoch, curves):
        if epoch == epoch_to_die:
            raise Killed(f"killed after epoch {epoch}")
    return callback


@pytest.fixture(scope="module")
def straight(population):
    result = train_predictor(population[0], RESUME, seed=0, progress=False)
    assert result.n_epochs == 7 and result.curves["lr"][-1] < RESUME["lr"]  # early-stopped, after one decay
    return result


def assert_same_result(a, b):
    assert a.state_dict.keys() == b.state_dict.keys()
    for k in a.state_dict:
        assert torch.equal(a.state_dict[k], b.state_dict[k]), k
    assert a.curves == b.curves
    assert (a.best_epoch, a.n_epochs, a.best_val_correlation) == (b.best_epoch, b.n_epochs, b.best_val_correlation)
    np.testing.assert_array_equal(a.correlation, b.correlation)


@pytest.mark.parametrize("killed_after", [3, 6])  # before the decay; just after it (best weights restored)
def test_killed_predictor_run_resumes_to_the_same_weights(population, straight, tmp_path, killed_after):
    with pytest.raises(Killed):
        train_predictor(population[0], RESUME, seed=0, progress=False, checkpoint_dir=tmp_path,
                        on_epoch_end=kill_after(killed_after))
    state = read_checkpoint(tmp_path / CHECKPOINT_FILE)
    assert state["epoch"] == killed_after and len(state["curves"]["train_loss"]) == killed_after
    assert state["early_stopping"]["decays"] == (killed_after >= 6)
    resumed = train_predictor(population[0], RESUME, seed=0, progress=False, checkpoint_dir=tmp_path)
    assert_same_result(straight, resumed)
    assert resumed.wall_time > state["wall_time"]
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_FILE]  # no temporary files left behind


def test_finished_predictor_run_returns_from_its_checkpoint_without_training(population, straight, tmp_path):
    first = train_predictor(population[0], RESUME, seed=0, progress=False, checkpoint_dir=tmp_path)
    assert read_checkpoint(tmp_path / CHECKPOINT_FILE)["early_stopping"]["stopped"]
    again = train_predictor(population[0], RESUME, seed=0, progress=False, checkpoint_dir=tmp_path,
                            on_epoch_end=kill_after(8))  # would raise had it trained an epoch
    assert_same_result(straight, first)
    assert_same_result(straight, again)


def test_shorter_predictor_run_extended_from_its_checkpoint(population, straight, tmp_path):
    short = train_predictor(population[0], {**RESUME, "max_epochs": 4}, seed=0, progress=False,
                            checkpoint_dir=tmp_path)
    assert short.n_epochs == 4
    assert_same_result(straight, train_predictor(population[0], RESUME, seed=0, progress=False,
                                                 checkpoint_dir=tmp_path))


def test_predictor_checkpoint_of_another_run_or_a_bad_one_is_refused(population, tmp_path):
    data = population[0]
    config = {**RESUME, "max_epochs": 2}
    train_predictor(data, config, seed=0, progress=False, checkpoint_dir=tmp_path)
    path = tmp_path / CHECKPOINT_FILE
    for other in (dict(seed=1), dict(config={**config, "lr": 0.02}),
                  dict(data=dict(data, responses=data["responses"] + 1))):
        args = {**dict(data=data, config=config, seed=0), **other}
        with pytest.raises(CheckpointError, match="another run"):
            train_predictor(**args, progress=False, checkpoint_dir=tmp_path)
    state = read_checkpoint(path)
    state["early_stopping"]["best_state"]["readout.features"][0, 0] = float("nan")  # the best weights, too
    save_checkpoint(path, state)
    with pytest.raises(CheckpointError, match=r"NaN or infinite values in early_stopping\['best_state'\]"):
        train_predictor(data, config, seed=0, progress=False, checkpoint_dir=tmp_path)
    save_checkpoint(path, dict(read_checkpoint(path), epoch=3))
    with pytest.raises(CheckpointError, match="beyond the 2 epochs"):
        train_predictor(data, config, seed=0, progress=False, checkpoint_dir=tmp_path)
