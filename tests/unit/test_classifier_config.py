"""Classifier configurations resolve once: complete, plain, preset-free, idempotent, JSON-stable, strict on keys."""

import json

import numpy as np
import pytest

from pipeline.classifier.config import (REGULARISER_DEFAULTS, TRAIN_KEYS, TRAIN_PRESETS, TrainConfigError,
                                        resolve_regulariser, resolve_train_config)
from pipeline.errors import ConfigError

PLAIN = (int, float, bool, str, list, type(None))


def assert_plain(cfg):
    for key, value in cfg.items():
        assert type(value) in PLAIN, (key, type(value))
        if isinstance(value, list):
            assert all(type(v) is str for v in value), key


@pytest.mark.parametrize("config", ["paper", "cpu-demo", "cpu-test", None, {"preset": "cpu-test", "lr": 0.2},
                                    {"epochs": np.int64(3), "lr": np.float32(0.5), "flip": np.bool_(False)}])
def test_resolved_train_config_is_complete_plain_idempotent_and_json_stable(config):
    cfg = resolve_train_config(config)
    assert list(cfg) == list(TRAIN_KEYS) and "preset" not in cfg
    assert_plain(cfg)
    assert resolve_train_config(cfg) == cfg
    assert json.loads(json.dumps(cfg)) == cfg
    assert resolve_train_config(json.loads(json.dumps(cfg))) == cfg


def test_overrides_fill_from_the_named_preset_else_paper():
    assert resolve_train_config({"preset": "cpu-test", "lr": 0.2}) == {**TRAIN_PRESETS["cpu-test"], "lr": 0.2}
    assert resolve_train_config({"epochs": 3}) == {**TRAIN_PRESETS["paper"], "epochs": 3}
    assert resolve_train_config(None) == resolve_train_config("paper") == TRAIN_PRESETS["paper"]


def test_a_stored_train_config_does_not_follow_later_preset_edits(monkeypatch):
    stored = resolve_train_config("cpu-test")
    monkeypatch.setitem(TRAIN_PRESETS, "cpu-test", {**TRAIN_PRESETS["cpu-test"], "lr": 0.123})
    assert resolve_train_config(stored) == stored and stored["lr"] == 0.05
    again = resolve_train_config("cpu-test")
    assert again != stored and again["lr"] == 0.123


def test_misspelt_or_bad_train_values_fail_naming_them():
    with pytest.raises(TrainConfigError, match="learning_rate"):
        resolve_train_config({"preset": "paper", "learning_rate": 0.1})
    with pytest.raises(TrainConfigError, match="preset 'fast'"):
        resolve_train_config("fast")
    for key, value in [("epochs", 0), ("epochs", 2.5), ("batch_size", True), ("lr", -0.1), ("lr", float("nan")),
                       ("pad", -1), ("flip", "yes"), ("augment", 1), ("max_steps_per_epoch", 0)]:
        with pytest.raises(TrainConfigError, match=key):
            resolve_train_config({key: value})
    with pytest.raises(TrainConfigError):
        resolve_train_config(["paper"])
    assert issubclass(TrainConfigError, ConfigError)


@pytest.mark.parametrize("regulariser", [{}, {"alpha": 5.0, "layers": "layer2"},
                                         {"alpha": np.float32(20.0), "batch_size": np.int32(9),
                                          "layers": np.array(["layer3", "conv1"]), "loss_form": np.str_("arctanh-4x")}])
def test_resolved_regulariser_is_complete_plain_idempotent_and_json_stable(regulariser):
    reg = resolve_regulariser(regulariser)
    assert list(reg) == list(REGULARISER_DEFAULTS)
    assert_plain(reg)
    assert resolve_regulariser(reg) == reg
    assert json.loads(json.dumps(reg)) == reg
    assert resolve_regulariser(json.loads(json.dumps(reg))) == reg


def test_regulariser_layers_in_network_order_and_alpha_zero_is_none():
    assert resolve_regulariser({"layers": ["layer3", "conv1"]})["layers"] == ["conv1", "layer3"]
    assert resolve_regulariser({}) == REGULARISER_DEFAULTS
    assert resolve_regulariser(None) is None and resolve_regulariser({"alpha": 0}) is None


def test_a_stored_regulariser_does_not_follow_later_default_edits(monkeypatch):
    stored = resolve_regulariser({"alpha": 5.0})
    monkeypatch.setitem(REGULARISER_DEFAULTS, "clip_eps", 0.01)
    assert resolve_regulariser(stored) == stored and stored["clip_eps"] == 1e-3
    assert resolve_regulariser({"alpha": 5.0})["clip_eps"] == 0.01


def test_misspelt_or_bad_regulariser_values_fail_naming_them():
    with pytest.raises(TrainConfigError, match="layer_names"):
        resolve_regulariser({"alpha": 1.0, "layer_names": ["conv1"]})
    for key, value in [("alpha", -1.0), ("batch_size", 1), ("layers", ["layer5"]), ("momentum", 1.0),
                       ("clip_eps", 0.0), ("loss_form", "l2"), ("stimulus_bn", "train"), ("loss_form", 3)]:
        with pytest.raises(TrainConfigError, match=key):
            resolve_regulariser({"alpha": 1.0, key: value})
