"""Target configurations: every kind's parameters, checked and completed when the configuration is entered.

A resolved configuration is a plain-JSON dict ``{"kind": ..., <the kind's parameters>}`` with every default
filled in, so its hash names exactly what a worker computes, whatever the defaults in code say later.

Kinds and their parameters (besides ``heldout_fraction`` and ``heldout_seed``, see heldout.py):
- neural-model   scan_group, predictor_hash, predictor_seed (0): mean of ModelSimilarity (Eq 6) over the group
- neural-data    scan_group: mean of DataSimilarity (Eq 2 on single trials) over the group
- pixel          scan_group: Eq 2 on the raw pixels of the group's images
- feature-model  scan_group, weights_path, layer ('conv3_1'): Eq 2 on a layer of an ImageNet VGG19
- random         scan_group, seed: Eq 2 on random vectors
- shuffle        base (a resolved configuration of another kind), seed: the base target with its stimuli
                 permuted; computed from the base's inputs directly, so it waits on no other target row
"""

from __future__ import annotations

import copy

from pipeline.checks import check_keys, is_int, is_number
from pipeline.errors import ConfigError

from .heldout import HELDOUT_FRACTION, HELDOUT_SEED
from .vgg import vgg19_layer_names

KINDS = ("neural-model", "neural-data", "shuffle", "pixel", "feature-model", "random")
NEURAL_KINDS = ("neural-model", "neural-data")  # the targets BrainLikeness measures against

# per kind: {parameter: default}; a default of REQUIRED must be given
REQUIRED = object()
_HELDOUT = {"heldout_fraction": HELDOUT_FRACTION, "heldout_seed": HELDOUT_SEED}
PARAMETERS = {
    "neural-model": {"scan_group": REQUIRED, "predictor_hash": REQUIRED, "predictor_seed": 0, **_HELDOUT},
    "neural-data": {"scan_group": REQUIRED, **_HELDOUT},
    "pixel": {"scan_group": REQUIRED, **_HELDOUT},
    "feature-model": {"scan_group": REQUIRED, "weights_path": REQUIRED, "layer": "conv3_1", **_HELDOUT},
    "random": {"scan_group": REQUIRED, "seed": 0, **_HELDOUT},
    "shuffle": {"base": REQUIRED, "seed": 0},
}


def resolve_target_config(config: dict) -> dict:
    """{'kind': ..., parameters} -> the complete, checked configuration (idempotent, plain JSON types)."""
    if not isinstance(config, dict) or "kind" not in config:
        raise ConfigError(f"target configuration {config!r}: needs a 'kind'. Fix: one of {list(KINDS)}")
    kind = config["kind"]
    if kind not in KINDS:
        raise ConfigError(f"target kind {kind!r} is unknown. Fix: use one of {list(KINDS)}")
    params = {k: v for k, v in config.items() if k != "kind"}
    spec = PARAMETERS[kind]
    check_keys(params, spec, f"target kind {kind!r}")
    missing = [k for k, default in spec.items() if default is REQUIRED and k not in params]
    if missing:
        raise ConfigError(f"target kind {kind!r}: missing {missing}. Fix: give them")
    out = {"kind": kind, **{k: copy.deepcopy(params.get(k, d)) for k, d in spec.items()}}
    if "scan_group" in out and (not isinstance(out["scan_group"], str) or not out["scan_group"]):
        raise ConfigError(f"target kind {kind!r}: scan_group={out['scan_group']!r} must be a scan group's name")
    for key in ("predictor_seed", "seed", "heldout_seed"):
        if key in out:
            if not is_int(out[key]) or out[key] < 0:
                raise ConfigError(f"target kind {kind!r}: {key}={out[key]!r} must be an integer >= 0")
            out[key] = int(out[key])
    if "heldout_fraction" in out:
        if not is_number(out["heldout_fraction"]) or not 0 <= out["heldout_fraction"] < 1:
            raise ConfigError(f"target kind {kind!r}: heldout_fraction={out['heldout_fraction']!r} must be in "
                              "[0, 1)")
        out["heldout_fraction"] = float(out["heldout_fraction"])
    if kind == "neural-model":
        h = out["predictor_hash"]
        if not isinstance(h, str) or len(h) != 32:
            raise ConfigError(f"target kind 'neural-model': predictor_hash={h!r} must be a PredictorConfig hash "
                              "(32 hex digits)")
    if kind == "feature-model":
        out["weights_path"] = str(out["weights_path"])
        if out["layer"] not in vgg19_layer_names():
            raise ConfigError(f"target kind 'feature-model': layer {out['layer']!r} is unknown. Fix: one of "
                              f"{vgg19_layer_names()}")
    if kind == "shuffle":
        out["base"] = resolve_target_config(out["base"])
        if out["base"]["kind"] == "shuffle":
            raise ConfigError("target kind 'shuffle': its base is itself a shuffle. Fix: shuffle the base of it")
    return out


def scan_group_of(config: dict) -> str:
    """The scan group whose images a resolved target configuration indexes (a shuffle: its base's)."""
    return config["base"]["scan_group"] if config["kind"] == "shuffle" else config["scan_group"]


def inputs_of(config: dict) -> dict:
    """The configuration whose inputs are computed from: a shuffle's base, any other kind itself."""
    return config["base"] if config["kind"] == "shuffle" else config
