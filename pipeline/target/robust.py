"""The robust-network target: a similarity matrix from an adversarially trained network's view of the stimuli.

A control of the question "is it the BRAIN that helps?": robust networks have representations that resemble
perception (Engstrom et al. 2019, "Adversarial robustness as a prior for learned representations"), so their
similarity of the stimuli is a target that should carry robustness if any target does. The network is trained
here (PGD adversarial training, pipeline.classifier.adversarial) on the classification task, with its own seed,
then Eq 2 is applied to its features at one readable layer (flattened, centred over the images, cosine): the
same construction as the VGG feature-model target, with a network whose robustness is known by construction.

The classifiers regularised towards this target are trained separately, from fresh initialisations; nothing of
the robust network's weights reaches them except through the similarity matrix.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from pipeline.classifier.resnet import LAYER_NAMES
from pipeline.classifier.tasks import load_task
from pipeline.classifier.train import train_classifier
from pipeline.errors import ConfigError
from pipeline.oracle.similarity import population_similarity

# the robust network: the demo's net, PGD-trained in Linf (eps 0.1, 4 steps of 0.5 eps, every image)
ROBUST_NET_DEFAULTS = {
    "task": "digits",
    "arch": "resnet10-w8",
    "train": {"preset": "cpu-demo", "epochs": 8, "lr_step_epochs": 3,
              "adversarial": {"norm": "Linf", "eps": 0.1, "steps": 4, "rel_stepsize": 0.5, "fraction": 1.0}},
    "seed": 1000,
    "layer": "layer4",
}


def check_robust_net(params: Mapping, where: str = "target kind 'robust-net'") -> dict:
    """The robust-net parameters resolved: train -> a complete train configuration with adversarial set."""
    from pipeline.classifier.config import resolve_train_config
    from pipeline.classifier.resnet import ARCHITECTURES
    from pipeline.classifier.tasks import TASKS

    out = dict(params)
    if not isinstance(out["task"], str) or not (out["task"] in TASKS or out["task"].startswith("folder:")):
        raise ConfigError(f"{where}: task={out['task']!r} is unknown. Fix: one of {sorted(TASKS)} or 'folder:<path>'")
    if out["arch"] not in ARCHITECTURES:
        raise ConfigError(f"{where}: arch={out['arch']!r} is unknown. Fix: one of {sorted(ARCHITECTURES)}")
    if out["layer"] not in LAYER_NAMES:
        raise ConfigError(f"{where}: layer={out['layer']!r} is unknown. Fix: one of {list(LAYER_NAMES)}")
    try:
        out["train"] = resolve_train_config(out["train"])
    except ConfigError as err:
        raise ConfigError(f"{where}: train: {err}") from err
    if out["train"]["adversarial"] is None:
        raise ConfigError(f"{where}: its train configuration has adversarial=None, so the network is not robust. "
                          "Fix: give train an 'adversarial' dict (see pipeline.classifier.adversarial)")
    return out


def network_similarity(model: torch.nn.Module, pixels: np.ndarray, layer: str, batch_size: int = 256) -> np.ndarray:
    """(n, n) float32 Eq 2 on the network's ``layer`` features of stimuli ``pixels`` (n, H, W) in [0, 255]."""
    x = torch.as_tensor(np.asarray(pixels, np.float32) / 255.0)[:, None]
    model.eval()
    feats = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            feats.append(model.features(x[start:start + batch_size], [layer])[layer].flatten(1).numpy())
    return population_similarity(np.concatenate(feats)).astype(np.float32)


def robust_net_similarity(pixels: np.ndarray, params: Mapping, data_dir=None) -> tuple[np.ndarray, float]:
    """((n, n) float32 target, the robust network's clean test accuracy) for stimuli (n, H, W) in [0, 255].

    params: resolved robust-net parameters (:func:`check_robust_net`); data_dir: where the task's data live.
    """
    from pipeline.classifier.inference import load_classifier

    task = load_task(params["task"], root=data_dir)
    result = train_classifier(task, params["arch"], params["train"], seed=params["seed"], progress=False)
    model = load_classifier(params["arch"], task.n_classes, result.state_dict)
    return network_similarity(model, pixels, params["layer"]), float(result.test_accuracy)
