"""Target configurations: every kind's parameters, checked and completed when the configuration is entered.

A resolved configuration is a plain-JSON dict ``{"kind": ..., <the kind's parameters>}`` with every default
filled in, so its hash names exactly what a worker computes, whatever the defaults in code say later.

Kinds and their parameters (besides ``heldout_fraction``, ``heldout_seed`` and ``heldout_by``, see heldout.py):
- neural-model   scan_group, predictor_hash, predictor_seed (0): mean of ModelSimilarity (Eq 6) over the group
- neural-data    scan_group: mean of DataSimilarity (Eq 2 on single trials) over the group
- pixel          scan_group: Eq 2 on the raw pixels of the group's images
- feature-model  scan_group, weights_path, layer ('conv3_1'): Eq 2 on a layer of an ImageNet VGG19
- random         scan_group, seed: Eq 2 on random vectors
- shuffle        base (a resolved configuration of another kind), seed: the base target with its stimuli
                 permuted; computed from the base's inputs directly, so it waits on no other target row
- contrast-energy  scan_group, grid ([3, 4]: rows, cols), sigma (2.0 pixels): Eq 2 on each image's local RMS
                 contrast pooled on the grid (pipeline.target.controls.contrast_energy_similarity), the image
                 statistic the audited demo target turned out to follow
- neural-truth   scan_group: simulated scans only; Eq 6 with the predictions replaced by the simulator's
                 noise-free rates (behaviour at the scan's mean), each neuron scaled by w_a max(v_a, 0) with v_a
                 the truth's own correlation with the held-out single trials; mean over the group's scans
- deflated       base (a resolved configuration of a kind other than shuffle and deflated), k (1): the base target
                 without its leading k eigencomponents, re-normalised to unit diagonal
                 (pipeline.target.controls.deflate_target); like shuffle, computed from the base's inputs directly
- robust-net     scan_group, task, arch, train (a train configuration with 'adversarial' set), seed, layer
                 ('layer4'): Eq 2 on the features of a network PGD-trained on the task (pipeline.target.robust)
"""

from __future__ import annotations

import copy

from pipeline.checks import check_keys, is_int, is_number
from pipeline.errors import ConfigError

from .heldout import HELDOUT_BY, HELDOUT_FRACTION, HELDOUT_SEED
from .robust import ROBUST_NET_DEFAULTS, check_robust_net
from .vgg import vgg19_layer_names

KINDS = ("neural-model", "neural-data", "shuffle", "pixel", "feature-model", "random", "contrast-energy",
         "neural-truth", "deflated", "robust-net")
DERIVED_KINDS = ("shuffle", "deflated")  # kinds built from a base configuration's target, from the base's inputs
NEURAL_KINDS = ("neural-model", "neural-data")  # the targets BrainLikeness measures against

# per kind: {parameter: default}; a default of REQUIRED must be given
REQUIRED = object()
# heldout_by 'source': whole photographs are held out (see heldout.heldout_mask); 'image': single images
_HELDOUT = {"heldout_fraction": HELDOUT_FRACTION, "heldout_seed": HELDOUT_SEED, "heldout_by": "source"}
PARAMETERS = {
    "neural-model": {"scan_group": REQUIRED, "predictor_hash": REQUIRED, "predictor_seed": 0, **_HELDOUT},
    "neural-data": {"scan_group": REQUIRED, **_HELDOUT},
    "pixel": {"scan_group": REQUIRED, **_HELDOUT},
    "feature-model": {"scan_group": REQUIRED, "weights_path": REQUIRED, "layer": "conv3_1", **_HELDOUT},
    "random": {"scan_group": REQUIRED, "seed": 0, **_HELDOUT},
    "shuffle": {"base": REQUIRED, "seed": 0},
    "contrast-energy": {"scan_group": REQUIRED, "grid": [3, 4], "sigma": 2.0, **_HELDOUT},
    "neural-truth": {"scan_group": REQUIRED, **_HELDOUT},
    "deflated": {"base": REQUIRED, "k": 1},
    # task, arch, train (with 'adversarial'), seed, layer: see pipeline.target.robust
    "robust-net": {"scan_group": REQUIRED, **ROBUST_NET_DEFAULTS, **_HELDOUT},
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
    if "heldout_by" in out and out["heldout_by"] not in HELDOUT_BY:
        raise ConfigError(f"target kind {kind!r}: heldout_by={out['heldout_by']!r} must be one of {list(HELDOUT_BY)}")
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
    if kind == "robust-net":
        out.update(check_robust_net(out))
    if kind == "feature-model":
        out["weights_path"] = str(out["weights_path"])
        if out["layer"] not in vgg19_layer_names():
            raise ConfigError(f"target kind 'feature-model': layer {out['layer']!r} is unknown. Fix: one of "
                              f"{vgg19_layer_names()}")
    if kind == "contrast-energy":
        grid = out["grid"]
        if (not isinstance(grid, (list, tuple)) or len(grid) != 2 or not all(is_int(g) and g >= 1 for g in grid)):
            raise ConfigError(f"target kind 'contrast-energy': grid={grid!r} must be [rows, cols], two integers "
                              ">= 1. Fix: e.g. [3, 4]")
        out["grid"] = [int(g) for g in grid]
        if not is_number(out["sigma"]) or not out["sigma"] > 0:
            raise ConfigError(f"target kind 'contrast-energy': sigma={out['sigma']!r} must be a width in pixels "
                              "> 0. Fix: e.g. 2.0")
        out["sigma"] = float(out["sigma"])
    if kind in DERIVED_KINDS:
        out["base"] = resolve_target_config(out["base"])
    if kind == "shuffle" and out["base"]["kind"] == "shuffle":
        raise ConfigError("target kind 'shuffle': its base is itself a shuffle. Fix: shuffle the base of it")
    if kind == "deflated":
        if out["base"]["kind"] in DERIVED_KINDS:
            raise ConfigError(f"target kind 'deflated': its base is a {out['base']['kind']!r} target. Fix: deflate "
                              "the base of it (and shuffle the deflated target, if a shuffled one is wanted; "
                              "remove more components with a larger k)")
        if not is_int(out["k"]) or out["k"] < 1:
            raise ConfigError(f"target kind 'deflated': k={out['k']!r} must be an integer >= 1 (the number of "
                              "leading eigencomponents removed). Fix: e.g. k=1")
        out["k"] = int(out["k"])
    return out


def inputs_of(config: dict) -> dict:
    """The configuration whose inputs are computed from: a shuffle's or deflated target's base (through any
    chain of them), any other kind itself."""
    while config["kind"] in DERIVED_KINDS:
        config = config["base"]
    return config


def scan_group_of(config: dict) -> str:
    """The scan group whose images a resolved target configuration indexes (a shuffle, deflated: its base's)."""
    return inputs_of(config)["scan_group"]
