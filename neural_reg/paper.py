"""The paper's full-scale configuration (Li et al. 2019, Sec 4), entered as rows, for a GPU worker to populate.

    neural-reg setup-paper --scan-group mice8 [--task cifar10-gray --arch resnet18 --seeds 5 --alphas 20]
    neural-reg worker        # on each GPU box

Targets: Neural (model), its Shuffle, Pixel and Neural (data) over the scan group's non-oracle images, and VGG19
conv3_1 when a torchvision VGG19 weights file is given. Classifiers: the paper's schedule (SGD, lr 0.1 x 0.3 every
4 epochs, reset after epoch 20, 40 epochs, batch 64), alpha 20, 5 seeds, plus the None control. Robustness: noise
stds of Fig 4, 15 common corruptions x 5 severities, the 'paper' attack sweep on 1000 test samples.
"""

from __future__ import annotations

from pipeline.predictor.train import DEFAULT_CONFIG

NOISE_STDS = [0.0, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.25, 0.3]


def setup_paper(scan_group: str, task: str = "cifar10-gray", arch: str = "resnet18", seeds: int = 5,
                alphas=(20.0,), vgg_weights: str | None = None) -> dict:
    """Insert every configuration of the paper's experiment for an existing scan group; return a summary."""
    from pipeline.robustness.attacks import preset_configs
    from pipeline.robustness.corruptions import COMMON_CORRUPTIONS
    from schemas import classifier, predictor, robustness, target

    p = predictor.PredictorConfig.insert_params("paper", dict(DEFAULT_CONFIG))["predictor_hash"]
    TC = target.TargetConfig
    neural = TC.insert_target(f"paper-{scan_group}-neural-model", "neural-model", scan_group=scan_group,
                              predictor_hash=p, predictor_seed=0)["target_hash"]
    name = f"paper-{scan_group}"
    targets = {"Neural": neural,
               "Shuffle": TC.insert_target(f"{name}-shuffle", "shuffle", base=neural, seed=0)["target_hash"],
               "Pixel": TC.insert_target(f"{name}-pixel", "pixel", scan_group=scan_group)["target_hash"]}
    TC.insert_target(f"{name}-neural-data", "neural-data", scan_group=scan_group)
    if vgg_weights:
        targets["VGG"] = TC.insert_target(f"{name}-vgg19-conv3_1", "feature-model", scan_group=scan_group,
                                          weights_path=str(vgg_weights), layer="conv3_1")["target_hash"]
    train = classifier.TrainConfig.insert_params("paper", {"preset": "paper"})
    classifier.Seed.insert([(s,) for s in range(seeds)], skip_duplicates=True)
    robustness.NoiseConfig.insert_params("paper", {"stds": NOISE_STDS, "n_samples": None, "seed": 0})
    robustness.CorruptionConfig.insert_params("paper", {"corruptions": list(COMMON_CORRUPTIONS),
                                                        "severities": [1, 2, 3, 4, 5], "n_samples": 2000,
                                                        "seed": 0})
    for name, params in preset_configs("paper").items():
        robustness.AttackConfig.insert_attack(f"paper-{name}", params)
    return {"targets": targets, "train": train, "alphas": list(alphas), "task": task, "arch": arch,
            "seeds": seeds}


def enter_training(summary: dict) -> int:
    """Enter the classifiers to train once the targets are populated (a Regulariser needs its Target row)."""
    from schemas import classifier

    regs = [classifier.Regulariser.insert_regulariser("none", 0.0)]
    for label, target_hash in summary["targets"].items():
        for alpha in summary["alphas"]:
            regs.append(classifier.Regulariser.insert_regulariser(f"paper-{label.lower()}-alpha{alpha:g}", alpha,
                                                                  target_hash))
    rows = [dict(task=summary["task"], arch=summary["arch"], classifier_seed=s, **summary["train"], **r)
            for r in regs for s in range(summary["seeds"])]
    classifier.Training.insert(rows, skip_duplicates=True)
    return len(rows)
