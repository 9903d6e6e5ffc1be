"""Target configurations are complete and checked when entered; the held-out images are a fixed choice."""

import json

import numpy as np
import pytest

from pipeline.errors import ConfigError
from pipeline.target.config import inputs_of, resolve_target_config, scan_group_of
from pipeline.target.heldout import heldout_mask

NEURAL = {"kind": "neural-model", "scan_group": "g", "predictor_hash": "a" * 32}


def test_resolution_fills_every_default_and_is_idempotent_and_json_stable():
    r = resolve_target_config(NEURAL)
    assert r == {"kind": "neural-model", "scan_group": "g", "predictor_hash": "a" * 32, "predictor_seed": 0,
                 "heldout_fraction": 0.1, "heldout_seed": 20191208}
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
