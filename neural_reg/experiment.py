"""One experiment, entered once: a declarative specification and :func:`enter_experiment`.

A specification (a JSON file, or the same dict in Python) names everything an experiment computes: the scans
(simulated, or already ingested), the scan group, the predictive model, the targets, the regularisers (targets x
alphas, plus the None control), the task, architecture, schedule and seeds, and the robustness configurations.
:func:`enter_experiment` checks and resolves all of it first, ingests simulated scans if asked, then enters every
configuration in one transaction; after that, ``neural-reg populate`` (or workers) compute everything in
dependency order. The demo and the paper's recipe are two such files (``neural_reg/experiments/``).

    {
      "name": "demo",
      "scans": {"simulate": {"n_scans": 3, "n_neurons": 400, ...}}  |  {"animals": ["26872", ...]}  |  {},
      "scan_group": "demo",
      "predictor": {"name": "demo-cpu", "preset": "cpu-fast", <overrides>},
      "targets": {"Neural": {"kind": "neural-model"}, "Shuffle": {"kind": "shuffle", "base": "Neural"},
                  "Pixel": {"kind": "pixel"}, ...},
      "classifiers": {"task": "digits", "arch": "resnet18-narrow",
                      "train": {"name": "demo-cpu", "preset": "cpu-demo", <overrides>},
                      "none": true, "regularise_towards": ["Shuffle", "Pixel", "Neural"], "alphas": [10.0],
                      "regulariser": {<overrides of the regulariser defaults>}, "seeds": [0, 1],
                      "adversarial_control": {"name": "demo-cpu-pgd", "adversarial": {"norm": "Linf", ...}}},
      "robustness": {"noise": {"name": ..., <noise config>}, "corruption": {"name": ..., <corruption config>},
                     "attacks": {"preset": "cpu-demo", "only": [...], "overrides": {...}}
                                | {"configs": {"my-L2-ddn": {<attack config>}, ...}},
                     "attack_set": "demo"}
    }

``adversarial_control`` (optional) is the positive control: the same task, architecture, schedule and seeds,
no regulariser, trained with PGD adversarial training (pipeline.classifier.adversarial); its train configuration
is ``train`` with ``adversarial`` set, stored under its own name.

A target's scan group and a neural-model target's predictor are filled in from the specification; a shuffle's
or a deflated target's ``base`` names another target of the same specification (e.g.
``"Deflated": {"kind": "deflated", "base": "Neural", "k": 1}``).
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import ConfigError

SPEC_DIR = Path(__file__).parent / "experiments"

TOP_KEYS = {"name": True, "description": False, "scans": False, "scan_group": True, "predictor": False,
            "targets": False, "classifiers": False, "robustness": False}
CLASSIFIER_KEYS = {"task": True, "arch": True, "train": True, "none": False, "regularise_towards": False,
                   "alphas": False, "regulariser": False, "seeds": True, "adversarial_control": False}
ROBUSTNESS_KEYS = {"noise": False, "corruption": False, "attacks": False, "attack_set": False}
ATTACK_KEYS = {"preset": False, "only": False, "overrides": False, "configs": False}


def _check(section: dict, keys: dict, where: str) -> None:
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: expected an object, got {type(section).__name__}")
    unknown = sorted(set(section) - set(keys))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}. Fix: use only {sorted(keys)}")
    missing = [k for k, required in keys.items() if required and k not in section]
    if missing:
        raise ConfigError(f"{where}: missing {missing}. Fix: give them")


def slug(label: str) -> str:
    """'Neural (data)' -> 'neural-data': a label as part of a configuration name."""
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


def load_spec(path) -> dict:
    """Read a specification file (JSON); a bare name means a file of neural_reg/experiments/ ('demo', 'paper')."""
    path = Path(path)
    if not path.exists() and not path.suffix and (SPEC_DIR / f"{path}.json").exists():
        path = SPEC_DIR / f"{path}.json"
    try:
        spec = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such experiment specification. Fix: give a JSON file, or one of "
                          f"{sorted(p.stem for p in SPEC_DIR.glob('*.json'))}") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}). Fix: "
                          "correct the file") from None
    check_spec(spec, str(path))
    return spec


def check_spec(spec: dict, source: str = "experiment specification") -> None:
    """Structure only (keys, types, references between sections); the configurations are checked by resolve()."""
    _check(spec, TOP_KEYS, source)
    if not isinstance(spec["name"], str) or not spec["name"]:
        raise ConfigError(f"{source}: field 'name' must be a non-empty string")
    if not isinstance(spec["scan_group"], str) or not spec["scan_group"]:
        raise ConfigError(f"{source}: field 'scan_group' must be a scan group's name")
    scans = spec.get("scans", {})
    _check(scans, {"simulate": False, "animals": False}, f"{source}: field 'scans'")
    if "simulate" in scans and "animals" in scans:
        raise ConfigError(f"{source}: field 'scans': give 'simulate' or 'animals', not both")
    targets = spec.get("targets", {})
    if not isinstance(targets, dict):
        raise ConfigError(f"{source}: field 'targets' must map labels to target configurations")
    for label, t in targets.items():
        if not isinstance(t, dict) or "kind" not in t:
            raise ConfigError(f"{source}: targets.{label} needs a 'kind'")
        if t["kind"] in ("shuffle", "deflated") and t.get("base") not in targets:
            raise ConfigError(f"{source}: targets.{label}: base {t.get('base')!r} is not a target of this "
                              f"specification. Fix: one of {sorted(set(targets) - {label})}")
        if t["kind"] == "neural-model" and "predictor" not in spec and "predictor_hash" not in t:
            raise ConfigError(f"{source}: targets.{label} is a neural-model target but the specification has no "
                              "'predictor'. Fix: add a 'predictor' section")
    if "classifiers" in spec:
        c = spec["classifiers"]
        _check(c, CLASSIFIER_KEYS, f"{source}: field 'classifiers'")
        for label in c.get("regularise_towards", []):
            if label not in targets:
                raise ConfigError(f"{source}: classifiers.regularise_towards: {label!r} is not a target of this "
                                  f"specification. Fix: one of {sorted(targets)}")
        if c.get("regularise_towards") and not c.get("alphas"):
            raise ConfigError(f"{source}: classifiers.alphas: give at least one alpha > 0 for the regularisers")
        seeds = c["seeds"]
        if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
            raise ConfigError(f"{source}: classifiers.seeds={seeds!r} must be a non-empty list of integers >= 0")
        for name in ("train", "regulariser"):
            if name in c and not isinstance(c[name], dict):
                raise ConfigError(f"{source}: classifiers.{name} must be an object")
        if "name" not in c["train"]:
            raise ConfigError(f"{source}: classifiers.train needs a 'name'")
        if "adversarial_control" in c:
            _check(c["adversarial_control"], {"name": True, "adversarial": True},
                   f"{source}: classifiers.adversarial_control")
    if "predictor" in spec and "name" not in spec["predictor"]:
        raise ConfigError(f"{source}: field 'predictor' needs a 'name'")
    robustness = spec.get("robustness", {})
    _check(robustness, ROBUSTNESS_KEYS, f"{source}: field 'robustness'")
    for name in ("noise", "corruption"):
        if name in robustness and "name" not in robustness[name]:
            raise ConfigError(f"{source}: robustness.{name} needs a 'name'")
    if "attacks" in robustness:
        _check(robustness["attacks"], ATTACK_KEYS, f"{source}: robustness.attacks")


@dataclass
class ResolvedExperiment:
    """Every configuration of a specification, resolved and named, ready to insert (nothing touched yet)."""

    spec: dict
    predictor: tuple[str, dict] | None = None
    targets: dict[str, tuple[str, dict]] = field(default_factory=dict)      # label -> (name, resolved)
    train: tuple[str, dict] | None = None
    adversarial_train: tuple[str, dict] | None = None                       # the positive control's schedule
    regularisers: list[dict] = field(default_factory=list)                  # label, alpha, name, resolved
    noise: tuple[str, dict] | None = None
    corruption: tuple[str, dict] | None = None
    attacks: dict[str, dict] = field(default_factory=dict)                  # name -> resolved


def resolve(spec: dict) -> ResolvedExperiment:
    """Resolve every configuration of a (checked) specification, without touching the database."""
    from schemas import classifier, predictor, robustness, target
    from schemas.paramset import params_hash, plain
    from pipeline.robustness.attacks import preset_configs

    check_spec(spec)
    out = ResolvedExperiment(spec=copy.deepcopy(spec))
    group, name = spec["scan_group"], spec["name"]
    if "predictor" in spec:
        p = dict(spec["predictor"])
        out.predictor = (p.pop("name"), plain(predictor.PredictorConfig.resolve(p)))
    predictor_hash = params_hash(out.predictor[1]) if out.predictor else None

    def target_config(label: str, seen: tuple = ()) -> dict:
        t = dict(spec["targets"][label])
        if t["kind"] in ("shuffle", "deflated"):
            if label in seen:
                raise ConfigError(f"experiment specification: targets.{label}: its bases form a cycle "
                                  f"{' -> '.join((*seen, label))}. Fix: base it on a target not derived from it")
            t["base"] = target_config(t["base"], (*seen, label))
            return t
        t.setdefault("scan_group", group)
        if t["kind"] == "neural-model":
            t.setdefault("predictor_hash", predictor_hash)
        return t

    for label in spec.get("targets", {}):
        out.targets[label] = (f"{name}-{slug(label)}", plain(target.TargetConfig.resolve(target_config(label))))
    c = spec.get("classifiers")
    if c:
        t = dict(c["train"])
        out.train = (t.pop("name"), plain(classifier.TrainConfig.resolve(t)))
        if "adversarial_control" in c:
            control = c["adversarial_control"]
            out.adversarial_train = (control["name"], plain(classifier.TrainConfig.resolve(
                {**t, "adversarial": control["adversarial"]})))
        if c.get("none", True):
            out.regularisers.append({"label": "None", "alpha": 0.0, "name": "none",
                                     "resolved": classifier.Regulariser.resolve({"alpha": 0.0})})
        for label in c.get("regularise_towards", []):
            target_name, resolved_target = out.targets[label]
            for alpha in c["alphas"]:
                resolved = plain(classifier.Regulariser.resolve(
                    {**c.get("regulariser", {}), "alpha": alpha, "target_hash": params_hash(resolved_target)}))
                out.regularisers.append({"label": label, "alpha": resolved["alpha"], "resolved": resolved,
                                         "name": f"{target_name}-alpha{resolved['alpha']:g}"})
    r = spec.get("robustness", {})
    for section, table in (("noise", robustness.NoiseConfig), ("corruption", robustness.CorruptionConfig)):
        if section in r:
            params = dict(r[section])
            setattr(out, section, (params.pop("name"), plain(table.resolve(params))))
    a = r.get("attacks", {})
    if "preset" in a:
        presets = preset_configs(a["preset"])
        only = a.get("only", list(presets))
        unknown = sorted(set(only) - set(presets)) + sorted(set(a.get("overrides", {})) - set(only))
        if unknown:
            raise ConfigError(f"robustness.attacks: {unknown} are not attacks of preset {a['preset']!r} (or not "
                              f"in 'only'). Fix: choose from {sorted(presets)}")
        for attack in only:
            params = {**presets[attack], **a.get("overrides", {}).get(attack, {})}
            out.attacks[f"{name}-{attack}"] = plain(robustness.AttackConfig.resolve(params))
    for attack, params in a.get("configs", {}).items():
        out.attacks[attack] = plain(robustness.AttackConfig.resolve(params))
    return out


def enter_experiment(spec: dict) -> dict:
    """Check and resolve a specification, ingest its simulated scans if needed, then enter every configuration
    in one transaction (idempotent: entering the same specification twice changes nothing).

    Returns {'targets': {label: target_hash}, 'regularisers': [{'label', 'alpha', 'regulariser_hash'}],
    'trainings': number of classifiers listed, 'attack_set': its key or None}.
    """
    from schemas import classifier, oracle, predictor, recording, robustness, target

    plan = resolve(spec)
    scans = spec.get("scans", {})
    if "simulate" in scans:
        from .workflow import ingest_simulated, simulated_animal_id

        sim = dict(scans["simulate"])
        animal = sim.get("animal_id") or simulated_animal_id(sim.get("seed", 0))
        if not recording.Scan & {"animal_id": animal}:
            ingest_simulated(**sim, progress=False)
        scan_keys = (recording.Scan & {"animal_id": animal}).keys()
    elif "animals" in scans:
        scan_keys = (recording.Scan & [{"animal_id": a} for a in scans["animals"]]).keys()
    else:
        scan_keys = None  # the scan group must exist already
    if scan_keys is None and not oracle.ScanGroup & {"scan_group": spec["scan_group"]}:
        raise ConfigError(f"experiment {spec['name']!r}: scan group {spec['scan_group']!r} does not exist and the "
                          "specification names no scans. Fix: `neural-reg group NAME`, or give 'scans'")
    if scan_keys is not None and not scan_keys:
        raise ConfigError(f"experiment {spec['name']!r}: no scans of animals {scans.get('animals')}. Fix: ingest "
                          "them first")

    summary = {"targets": {}, "regularisers": [], "trainings": 0, "attack_set": None}
    with recording.Scan.connection.transaction:
        if scan_keys is not None:
            oracle.ScanGroup.create(spec["scan_group"], scan_keys, spec.get("description", ""))
        if plan.predictor:
            predictor.PredictorConfig.insert_params(*plan.predictor)
        for label, (name, resolved) in plan.targets.items():
            summary["targets"][label] = target.TargetConfig.insert_target(name, **resolved)["target_hash"]
        if plan.train:
            c = spec["classifiers"]
            train_key = classifier.TrainConfig.insert_params(*plan.train)
            classifier.Seed.insert([(s,) for s in c["seeds"]], skip_duplicates=True)
            rows = []
            for reg in plan.regularisers:
                key = classifier.Regulariser.insert_regulariser(reg["name"], **reg["resolved"])
                summary["regularisers"].append({"label": reg["label"], "alpha": reg["alpha"], **key})
                rows += [dict(task=c["task"], arch=c["arch"], classifier_seed=s, **train_key, **key)
                         for s in c["seeds"]]
            if plan.adversarial_train:
                control_key = classifier.TrainConfig.insert_params(*plan.adversarial_train)
                none_key = classifier.Regulariser.insert_regulariser("none", **classifier.Regulariser.resolve(
                    {"alpha": 0.0}))
                rows += [dict(task=c["task"], arch=c["arch"], classifier_seed=s, **control_key, **none_key)
                         for s in c["seeds"]]
            classifier.Training.insert(rows, skip_duplicates=True)
            summary["trainings"] = len(rows)
        if plan.noise:
            robustness.NoiseConfig.insert_params(*plan.noise)
        if plan.corruption:
            robustness.CorruptionConfig.insert_params(*plan.corruption)
        for name, resolved in plan.attacks.items():
            robustness.AttackConfig.insert_attack(name, resolved)
        if plan.attacks:
            set_name = spec.get("robustness", {}).get("attack_set", spec["name"])
            summary["attack_set"] = robustness.AttackSet.insert_attack_set(set_name, list(plan.attacks))
    return summary
