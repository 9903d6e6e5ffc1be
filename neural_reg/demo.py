"""The embedded default: the whole pipeline on simulated scans and scikit-learn's digits, on a laptop CPU.

simulated scans -> oracle -> predictors -> targets -> classifiers (None / Shuffle / Pixel / Neural, 2 seeds)
-> robustness, then one summary table and the figures. Every step is a populate(), so a second run computes
nothing twice.
"""

from __future__ import annotations

import time

from pipeline.predictor.train import CPU_FAST_CONFIG

DEMO = {
    "scans": dict(n_scans=3, n_neurons=400, n_images=800, n_oracle_images=40, n_repeats=10, seed=0),
    "scan_group": "demo",
    "predictor": ("demo-cpu", dict(CPU_FAST_CONFIG)),
    "task": "digits",
    "arch": "resnet18-narrow",
    "train": ("demo-cpu", {"preset": "cpu-demo", "epochs": 8, "lr_step_epochs": 3}),
    "alpha": 10.0,
    "seeds": (0, 1),
    "noise": ("demo", {"stds": [0.0, 0.1, 0.2, 0.3, 0.4, 0.6], "n_samples": 400, "seed": 0}),
    "corruption": ("demo", {"corruptions": ["gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur",
                                            "motion_blur", "fog", "brightness", "contrast", "pixelate",
                                            "jpeg_compression"],
                            "severities": [1, 3, 5], "n_samples": 200, "seed": 0}),
    "attack_preset": "cpu-demo",
    # the preset's cheapest attacks per norm plus Brendel-Bethge for L2 (the paper's L2 attack): about a minute
    # per classifier here; `neural-reg populate` after adding the rest of the preset scores them all
    "attacks": ("Linf-pgd", "Linf-fmn", "L2-ddn", "L2-bb"),
    # PGD's epsilon search repeats the attack per setting: one step size keeps it near a minute per classifier
    "attack_overrides": {"Linf-pgd": {"sweep": {"steps": [10, 30], "rel_stepsize": [0.3]},
                                      "search": {"eps_max": 1.0, "eps_min": 1e-3, "steps": 6}}},
}


def setup(config: dict = DEMO) -> None:
    """Enter the demo's recordings, its scan group and predictor configuration (idempotent)."""
    from schemas import oracle, predictor, recording

    from .workflow import ingest_simulated

    scans = config["scans"]
    animal = f"sim{scans['seed']}"
    if not recording.Scan & {"animal_id": animal}:
        ingest_simulated(**scans)
    scan_keys = (recording.Scan & {"animal_id": animal}).keys()
    oracle.ScanGroup.create(config["scan_group"], scan_keys, "the demo's simulated scans")
    predictor.PredictorConfig.insert_params(*config["predictor"])


def targets(config: dict = DEMO) -> dict:
    """The demo's targets (neural-model, its shuffle, pixel; neural-data for brain-likeness) -> {label: hash}."""
    from schemas import predictor, target

    g = config["scan_group"]
    p = predictor.PredictorConfig.key_of(config["predictor"][0])["predictor_hash"]
    TC = target.TargetConfig
    neural = TC.insert_target(f"{g}-neural-model", "neural-model", scan_group=g, predictor_hash=p,
                              predictor_seed=0)["target_hash"]
    return {
        "Neural": neural,
        "Shuffle": TC.insert_target(f"{g}-shuffle", "shuffle", base=neural, seed=0)["target_hash"],
        "Pixel": TC.insert_target(f"{g}-pixel", "pixel", scan_group=g)["target_hash"],
        "Neural (data)": TC.insert_target(f"{g}-neural-data", "neural-data", scan_group=g)["target_hash"],
    }


def classifiers(target_hashes: dict, config: dict = DEMO) -> dict:
    """Enter the regularisers (None, Shuffle, Pixel, Neural) and what to train; return {label: regulariser_hash}."""
    from schemas import classifier

    train_key = classifier.TrainConfig.insert_params(*config["train"])
    regs = {"None": classifier.Regulariser.insert_regulariser("none", 0.0)}
    for label in ("Shuffle", "Pixel", "Neural"):
        regs[label] = classifier.Regulariser.insert_regulariser(
            f"{label.lower()}-alpha{config['alpha']:g}", config["alpha"], target_hashes[label])
    for reg in regs.values():
        for seed in config["seeds"]:
            classifier.Training.insert1(dict(task=config["task"], arch=config["arch"], classifier_seed=seed,
                                             **train_key, **reg), skip_duplicates=True)
    return {label: reg["regulariser_hash"] for label, reg in regs.items()}


def robustness_configs(config: dict = DEMO) -> None:
    from pipeline.robustness.attacks import preset_configs
    from schemas import robustness

    robustness.NoiseConfig.insert_params(*config["noise"])
    robustness.CorruptionConfig.insert_params(*config["corruption"])
    for name, params in preset_configs(config["attack_preset"]).items():
        if name in config["attacks"]:
            params.update(config.get("attack_overrides", {}).get(name, {}))
            robustness.AttackConfig.insert_attack(f"demo-{name}", params)


def run(report_dir: str | None = "reports/demo", config: dict = DEMO) -> None:
    """Run the whole demo, print the summary table, write the report."""
    from . import workflow

    start = time.time()
    print("== recordings")
    setup(config)
    from schemas import recording

    for scan in recording.Scan.to_dicts():
        oracle_trials = len(recording.Trial & scan & "tier = 'oracle'")
        print(f"   scan {scan['animal_id']}-{scan['session']}-{scan['scan_idx']}: {scan['n_neurons']} neurons, "
              f"{scan['n_trials']} trials ({oracle_trials} oracle), images '{scan['image_set']}'")
    print("== oracle statistics, predictors, neural similarity")
    _populate(workflow, ("OracleStats", "OracleSimilarity", "DataSimilarity", "Stability", "TrainedPredictor",
                         "ModelSimilarity"))
    print("== targets")
    hashes = targets(config)
    _populate(workflow, ("Target",))
    print("== classifiers")
    classifiers(hashes, config)
    _populate(workflow, ("TrainedClassifier",))
    print("== robustness")
    robustness_configs(config)
    _populate(workflow, ("NoiseRobustness", "CorruptionRobustness", "Adversarial", "RobustnessScore",
                         "BrainLikeness"))
    from .report import summary_table

    print()
    print(summary_table())
    if report_dir:
        from .report import build_report

        path = build_report(report_dir)
        print(f"\nreport: {path}")
    print(f"demo finished in {time.time() - start:.0f} s")


def _populate(workflow, names) -> None:
    result = workflow.populate(names, progress=True, suppress_errors=False)
    for table, (done, errors) in result.items():
        if done or errors:
            print(f"   {table}: {done} computed" + (f", {len(errors)} failed" if errors else ""))
