"""Target configurations are complete and checked when entered; the held-out images are a fixed choice."""

import json

import numpy as np
import pytest

from pipeline.errors import ConfigError
from pipeline.target.config import inputs_of, resolve_target_config, scan_group_of
from pipeline.target.heldout import heldout_mask

NEURAL = {"kind": "neural-model", "scan_group": "g", "predictor_hash": "a" * 32}
PIXEL = {"kind": "pixel", "scan_group": "g"}


def test_resolution_fills_every_default_and_is_idempotent_and_json_stable():
    r = resolve_target_config(NEURAL)
    assert r == {"kind": "neural-model", "scan_group": "g", "predictor_hash": "a" * 32, "predictor_seed": 0,
                 "heldout_fraction": 0.1, "heldout_seed": 20191208, "heldout_by": "source"}
    assert resolve_target_config(r) == r and json.loads(json.dumps(r)) == r
    shuffle = resolve_target_config({"kind": "shuffle", "base": NEURAL, "seed": np.int64(3)})
    assert shuffle["base"] == r and type(shuffle["seed"]) is int
    assert scan_group_of(shuffle) == "g" and inputs_of(shuffle) == r and inputs_of(r) == r


@pytest.mark.parametrize("config, message", [
    ({"kind": "neural-modl", "scan_group": "g"}, "unknown"),
    ({"kind": "pixel"}, "scan_group"),
    ({"kind": "pixel", "scan_group": "g", "scan_grup": "h"}, "scan_grup"),
    ({"kind": "neural-model", "scan_group": "g", "predictor_hash": "short"}, "predictor_hash"),
    ({"kind": "random", "scan_group": "g", "seed": -1}, "seed"),
    ({"kind": "pixel", "scan_group": "g", "heldout_fraction": 1.0}, "heldout_fraction"),
    ({"kind": "feature-model", "scan_group": "g", "weights_path": "w.pth", "layer": "conv9_9"}, "conv9_9"),
    ({"kind": "shuffle", "base": {"kind": "shuffle", "base": {"kind": "pixel", "scan_group": "g"}}}, "shuffle"),
])
def test_a_bad_configuration_fails_with_the_field_named(config, message):
    with pytest.raises(ConfigError, match=message):
        resolve_target_config(config)


def test_heldout_mask_is_fixed_by_fraction_and_seed():
    m = heldout_mask(200)
    assert m.sum() == 20 and np.array_equal(m, heldout_mask(200))
    assert not np.array_equal(m, heldout_mask(200, seed=1))
    assert heldout_mask(200, 0.0).sum() == 0 and heldout_mask(7, 0.5).sum() == 4
    with pytest.raises(ConfigError, match="heldout_fraction"):
        heldout_mask(10, 1.5)


# ------------------------------------------------------------------ contrast-energy, neural-truth, deflated

def test_the_new_kinds_resolve_with_their_defaults_and_derived_kinds_reach_their_inputs():
    heldout = {k: v for k, v in resolve_target_config(PIXEL).items() if k.startswith("heldout_")}
    assert resolve_target_config({"kind": "contrast-energy", "scan_group": "g", "grid": (2, np.int64(5))}) == {
        "kind": "contrast-energy", "scan_group": "g", "grid": [2, 5], "sigma": 2.0, **heldout}
    truth = resolve_target_config({"kind": "neural-truth", "scan_group": "g"})
    assert truth == {"kind": "neural-truth", "scan_group": "g", **heldout}
    deflated = resolve_target_config({"kind": "deflated", "base": NEURAL})
    assert deflated == {"kind": "deflated", "base": resolve_target_config(NEURAL), "k": 1}
    assert resolve_target_config(deflated) == deflated and json.loads(json.dumps(deflated)) == deflated
    # a shuffled deflated target is a valid control; its inputs are the neural-model target's
    shuffled = resolve_target_config({"kind": "shuffle", "base": {"kind": "deflated", "base": NEURAL, "k": 3}})
    assert shuffled["base"]["k"] == 3 and inputs_of(shuffled) == resolve_target_config(NEURAL)
    assert scan_group_of(shuffled) == "g" and scan_group_of(deflated) == "g" and inputs_of(truth) == truth



@pytest.mark.parametrize("config, message", [
    ({"kind": "contrast-energy", "scan_group": "g", "gird": [3, 4]}, "gird"),
    ({"kind": "contrast-energy", "scan_group": "g", "grid": [3]}, "grid"),
    ({"kind": "contrast-energy", "scan_group": "g", "grid": [0, 4]}, "grid"),
    ({"kind": "contrast-energy", "scan_group": "g", "grid": [3.5, 4]}, "grid"),
    ({"kind": "contrast-energy", "scan_group": "g", "sigma": 0}, "sigma"),
    ({"kind": "neural-truth"}, "scan_group"),
    ({"kind": "neural-truth", "scan_group": "g", "predictor_hash": "a" * 32}, "predictor_hash"),
    ({"kind": "deflated", "base": PIXEL, "kk": 1}, "kk"),
    ({"kind": "deflated"}, "base"),
    ({"kind": "deflated", "base": PIXEL, "k": 0}, "k=0"),
    ({"kind": "deflated", "base": PIXEL, "k": 1.5}, "k=1.5"),
    ({"kind": "deflated", "base": PIXEL, "k": True}, "k=True"),
    ({"kind": "deflated", "base": {"kind": "shuffle", "base": PIXEL}}, "'shuffle' target"),
    ({"kind": "deflated", "base": {"kind": "deflated", "base": PIXEL}}, "'deflated' target"),
    ({"kind": "deflated", "base": {"kind": "pixel", "scan_grup": "g"}}, "scan_grup"),  # the base is checked too
])
def test_a_bad_new_kind_configuration_fails_with_the_field_named(config, message):
    with pytest.raises(ConfigError, match=message):
        resolve_target_config(config)


def test_an_experiment_specification_names_a_deflated_targets_base_by_label_and_refuses_cycles():
    from neural_reg.experiment import load_spec, resolve

    spec = load_spec("demo")
    spec["targets"] = {"Neural": {"kind": "neural-model"}, "Deflated": {"kind": "deflated", "base": "Neural", "k": 2},
                       "Shuffled deflated": {"kind": "shuffle", "base": "Deflated"},
                       "Truth": {"kind": "neural-truth"}, "Contrast": {"kind": "contrast-energy", "grid": [2, 2]}}
    spec["classifiers"]["regularise_towards"] = ["Deflated"]
    plan = resolve(spec)
    neural = plan.targets["Neural"][1]
    assert plan.targets["Deflated"] == ("demo-deflated", {"kind": "deflated", "base": neural, "k": 2})
    assert plan.targets["Shuffled deflated"][1]["base"] == plan.targets["Deflated"][1]
    assert plan.targets["Truth"][1]["scan_group"] == plan.targets["Contrast"][1]["scan_group"] == "demo"
    spec["targets"]["Deflated"]["base"] = "Nural"
    with pytest.raises(ConfigError, match="'Nural' is not a target"):
        resolve(spec)
    spec["targets"]["Deflated"]["base"] = "Shuffled deflated"  # Deflated -> Shuffled deflated -> Deflated
    with pytest.raises(ConfigError, match="cycle"):
        resolve(spec)
