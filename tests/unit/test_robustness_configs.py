"""Resolution of the robustness configurations (noise, corruption, attack): checked and complete at insert.

A bad configuration must fail when it is entered, with a message naming the field, not in a worker hours later;
a resolved one is complete, idempotent and plain JSON (it is stored, hashed, read back and resolved again).
"""

import json

import numpy as np
import pytest

from pipeline.errors import ConfigError, NeuralRegError
from pipeline.robustness.attacks import ATTACK_PRESETS, preset_configs, resolve_attack_config
from pipeline.robustness.corruptions import COMMON_CORRUPTIONS, resolve_corruption_config
from pipeline.robustness.errors import RobustnessConfigError, RobustnessInputError
from pipeline.robustness.noise import resolve_noise_config
from pipeline.robustness.samples import select_samples

NOISE = {"stds": [0.0, 0.1, 0.2], "n_samples": 400, "seed": 0}
CORRUPTION = {"corruptions": ["gaussian_noise", "fog"], "severities": [1, 3, 5], "n_samples": 200, "seed": 0}
ATTACKS = {
    "ddn": {"attack": "ddn", "norm": "L2", "sweep": {"steps": [10, 100]}},
    "pgd": {"attack": "pgd", "norm": "Linf", "sweep": {"steps": [10], "rel_stepsize": [0.3]},
            "search": {"eps_max": 1.0, "eps_min": 1e-3, "steps": 6}},
    "bb": {"attack": "bb", "norm": "L2", "sweep": {"lr": [1e-2]}, "init": "ddn", "init_steps": 40},
}
RESOLVERS = [(resolve_noise_config, NOISE), (resolve_corruption_config, CORRUPTION)] + [
    (resolve_attack_config, cfg) for cfg in ATTACKS.values()]


def _all_configs():
    yield from RESOLVERS
    for preset in ATTACK_PRESETS:
        for cfg in preset_configs(preset).values():
            yield resolve_attack_config, cfg


def _plain(value) -> bool:
    """Only JSON types: no tuples, no numpy scalars."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(map(_plain, value))
    return value is None or type(value) in (bool, int, float, str)


def test_resolved_configs_are_complete_idempotent_and_survive_json():
    for resolve, cfg in _all_configs():
        r = resolve(cfg)
        assert resolve(r) == r, cfg
        assert json.loads(json.dumps(r)) == r, cfg
        assert _plain(r), r
        assert "n_samples" in r and "seed" in r  # the caller selects the samples from these


def test_defaults_are_filled_in_and_numpy_values_become_plain():
    assert resolve_noise_config({"stds": np.array([0.0, 0.1])}) == {"stds": [0.0, 0.1], "n_samples": None, "seed": 0}
    full = resolve_corruption_config({})
    assert full == {"corruptions": list(COMMON_CORRUPTIONS), "severities": [1, 2, 3, 4, 5], "n_samples": None,
                    "seed": 0}
    r = resolve_attack_config({"attack": "ddn", "norm": "L2", "sweep": {"steps": np.array([10, 20]),
                                                                        "gamma": [np.float32(0.5)]},
                               "seed": np.int64(3), "n_samples": np.int32(16)})
    assert r == {"attack": "ddn", "norm": "L2", "sweep": {"steps": [10, 20], "gamma": [0.5]}, "repeats": 1,
                 "n_samples": 16, "batch_size": 250, "seed": 3, "margin": 1e-4}
    assert _plain(r)
    # a float hyper-parameter is stored as a float: 1 and 1.0 are one configuration (one hash)
    assert resolve_attack_config({"attack": "ddn", "norm": "L2", "sweep": {"gamma": [1]}})["sweep"] == {"gamma": [1.0]}
    bb = resolve_attack_config(ATTACKS["bb"])
    assert bb["init"] == ["ddn"] and bb["init_steps"] == 40
    assert resolve_attack_config(ATTACKS["pgd"])["search"] == {"eps_max": 1.0, "eps_min": 1e-3, "steps": 6}
    # no eps_max = the box's diameter: left out, not stored as None
    assert resolve_attack_config({**ATTACKS["pgd"], "search": {"eps_max": None}})["search"] == {"eps_min": 1e-4,
                                                                                                "steps": 10}


@pytest.mark.parametrize("resolve, cfg, typo", [
    (resolve_noise_config, NOISE, "std"),
    (resolve_corruption_config, CORRUPTION, "severity"),
    (resolve_attack_config, ATTACKS["ddn"], "n_sample"),
    (resolve_attack_config, ATTACKS["pgd"], "serach"),
])
def test_a_misspelt_key_fails_naming_it(resolve, cfg, typo):
    bad = {**cfg, typo: 1}
    with pytest.raises(ConfigError, match=f"unknown key.*'{typo}'.*Fix"):
        resolve(bad)


@pytest.mark.parametrize("resolve, cfg, match", [
    (resolve_noise_config, {**NOISE, "stds": [0.1, -0.1]}, "stds.*>= 0"),
    (resolve_noise_config, {**NOISE, "stds": []}, "stds"),
    (resolve_noise_config, {**NOISE, "stds": 0.1}, "stds"),
    (resolve_noise_config, {"n_samples": 10}, "stds"),
    (resolve_noise_config, {**NOISE, "n_samples": 0}, "n_samples"),
    (resolve_noise_config, {**NOISE, "seed": -1}, "seed"),
    (resolve_noise_config, {**NOISE, "seed": 1.5}, "seed"),
    (resolve_corruption_config, {**CORRUPTION, "severities": [1, 6]}, "severities.*1..5"),
    (resolve_corruption_config, {**CORRUPTION, "severities": [2.0]}, "severities.*integer"),
    (resolve_corruption_config, {**CORRUPTION, "severities": [1, 1]}, "repeats"),
    (resolve_corruption_config, {**CORRUPTION, "corruptions": ["rain"]}, "'rain' is unknown.*gaussian_noise"),
    (resolve_corruption_config, {**CORRUPTION, "corruptions": ["saturate"]}, "saturate.*grayscale"),
    (resolve_corruption_config, {**CORRUPTION, "corruptions": "fog"}, "corruptions.*list"),
    (resolve_corruption_config, {**CORRUPTION, "corruptions": []}, "corruptions.*non-empty"),
    (resolve_attack_config, {**ATTACKS["ddn"], "attack": "deepfool"}, "'deepfool' is not available.*ddn"),
    (resolve_attack_config, {**ATTACKS["ddn"], "norm": "L3"}, "norm='L3' is not a norm.*Linf"),
    (resolve_attack_config, {**ATTACKS["ddn"], "sweep": {"stepsize": [1]}}, "not a hyper-parameter"),
    (resolve_attack_config, {**ATTACKS["ddn"], "sweep": {"steps": []}}, "steps.*empty"),
    (resolve_attack_config, {**ATTACKS["ddn"], "sweep": {"steps": [10.5]}}, "steps.*integer"),
    (resolve_attack_config, {**ATTACKS["ddn"], "sweep": {"gamma": ["big"]}}, "gamma.*number"),
    (resolve_attack_config, {**ATTACKS["ddn"], "sweep": [10]}, "sweep.*dict"),
    (resolve_attack_config, {**ATTACKS["ddn"], "batch_size": 0}, "batch_size"),
    (resolve_attack_config, {**ATTACKS["ddn"], "repeats": True}, "repeats"),
    (resolve_attack_config, {**ATTACKS["ddn"], "margin": 0.5}, "margin"),
    (resolve_attack_config, {**ATTACKS["ddn"], "search": {"steps": 3}}, "search.*only for attacks.*pgd"),
    (resolve_attack_config, {**ATTACKS["ddn"], "init": ["ddn"]}, "init.*only for attacks.*bb"),
    (resolve_attack_config, {**ATTACKS["pgd"], "search": {"eps_min": 0.5, "eps_max": 0.1}}, "eps_min < eps_max"),
    (resolve_attack_config, {**ATTACKS["pgd"], "search": {"steps": -1}}, "steps.*>= 0"),
    (resolve_attack_config, {**ATTACKS["pgd"], "search": {"step": 3}}, "unknown key.*'step'"),
    (resolve_attack_config, {**ATTACKS["bb"], "init": ["pgd"]}, "init.*blended"),
    (resolve_attack_config, {**ATTACKS["bb"], "init_steps": 0}, "init_steps"),
    (resolve_attack_config, [("attack", "ddn")], "dict"),
])
def test_bad_values_fail_at_resolve_naming_the_field(resolve, cfg, match):
    with pytest.raises(RobustnessConfigError, match=match) as err:
        resolve(cfg)
    # one error family: a ConfigError, and a RobustnessInputError for callers of the evaluation functions
    assert isinstance(err.value, ConfigError) and isinstance(err.value, RobustnessInputError)
    assert isinstance(err.value, NeuralRegError)


def test_unknown_preset_and_too_many_samples():
    with pytest.raises(ConfigError, match="'nope' is unknown.*cpu-demo"):
        preset_configs("nope")
    with pytest.raises(RobustnessInputError, match="n_samples=11.*holds 10.*Fix"):
        select_samples(10, 11, seed=0)
    np.testing.assert_array_equal(select_samples(5, None, seed=0), np.arange(5))
    edited = preset_configs("cpu-demo")  # fresh dicts: a caller may edit them
    edited["L2-ddn"]["sweep"]["steps"].append(1)
    assert preset_configs("cpu-demo")["L2-ddn"]["sweep"]["steps"] == [20, 50]
