"""Predictor configurations resolve once: complete, plain, preset-free, idempotent, JSON-stable, every field checked."""

import json

import numpy as np
import pytest

from pipeline.errors import ConfigError
from pipeline.predictor.config import (CPU_FAST_CONFIG, DEFAULT_CONFIG, PREDICTOR_PRESETS, PredictorConfigError,
                                       resolve_config)


@pytest.mark.parametrize("config", ["paper", "cpu-fast", None, {"preset": "cpu-fast", "lr": 0.01},
                                    {"core_channels": np.int64(8), "gamma_input": np.float32(2.0),
                                     "shifter": np.bool_(False), "readout": np.str_("point")}])
def test_resolved_config_is_complete_plain_idempotent_and_json_stable(config):
    cfg = resolve_config(config)
    assert list(cfg) == list(DEFAULT_CONFIG) and "preset" not in cfg
    assert all(type(v) in (int, float, bool, str) for v in cfg.values()), {k: type(v) for k, v in cfg.items()}
    assert resolve_config(cfg) == cfg
    assert json.loads(json.dumps(cfg)) == cfg
    assert resolve_config(json.loads(json.dumps(cfg))) == cfg


def test_presets_and_overrides():
    assert set(PREDICTOR_PRESETS) == {"paper", "cpu-fast"}
    assert resolve_config("paper") == resolve_config(None) == DEFAULT_CONFIG
    assert resolve_config("cpu-fast") == CPU_FAST_CONFIG
    assert resolve_config({"preset": "cpu-fast", "lr": 0.01}) == {**CPU_FAST_CONFIG, "lr": 0.01}
    assert resolve_config({"max_epochs": 3}) == {**DEFAULT_CONFIG, "max_epochs": 3}


def test_a_stored_config_does_not_follow_later_preset_edits(monkeypatch):
    stored = resolve_config("cpu-fast")
    monkeypatch.setitem(PREDICTOR_PRESETS, "cpu-fast", {**CPU_FAST_CONFIG, "lr": 0.123})
    assert resolve_config(stored) == stored and stored["lr"] == CPU_FAST_CONFIG["lr"]
    again = resolve_config("cpu-fast")
    assert again != stored and again["lr"] == 0.123


@pytest.mark.parametrize("key, value", [
    ("core_channels", 0), ("core_layers", 1.5), ("input_kernel", 4), ("hidden_kernel", -3), ("input_stride", 0),
    ("gamma_input", -1.0), ("gamma_readout", float("inf")), ("readout", "linear"), ("init_mu_range", 1.5),
    ("init_sigma", 0.0), ("shifter", "yes"), ("shifter_hidden", 0), ("modulator", 1), ("modulator_gain", "relu"),
    ("output_nonlinearity", "relu"), ("readout_init", "zeros"), ("lr", 0.0), ("batch_size", True),
    ("max_epochs", 0), ("patience", 0), ("lr_decay_steps", -1), ("lr_decay_factor", 1.0), ("tolerance", -1e-4),
    ("eval_batch_size", 0), ("device", "gpu"), ("device", 0),
])
def test_every_field_is_checked(key, value):
    with pytest.raises(PredictorConfigError, match=key):
        resolve_config({key: value})


def test_misspelt_keys_and_presets_fail_naming_them():
    with pytest.raises(PredictorConfigError, match="learning_rate"):
        resolve_config({"learning_rate": 0.1})
    with pytest.raises(PredictorConfigError, match="fast"):
        resolve_config("fast")
    assert issubclass(PredictorConfigError, ConfigError)
    assert resolve_config({"device": "cuda:1"})["device"] == "cuda:1"  # CUDA itself is checked where it trains
