"""The paper's full-scale experiment (Li et al. 2019, Sec 4) as a specification, entered in one call.

    neural-reg setup-paper --scan-group mice8 [--task cifar10-gray --arch resnet18 --seeds 5 --alphas 20]
    neural-reg worker        # on each GPU box: predictors, targets, classifiers, robustness, in that order

``neural_reg/experiments/paper.json`` holds the recipe: Neural (model), its Shuffle, Pixel and Neural (data) over
the scan group's non-oracle images (and VGG19 conv3_1 when a torchvision VGG19 weights file is given); the
paper's schedule (SGD, lr 0.1 x 0.3 every 4 epochs, reset after epoch 20, 40 epochs, batch 64), alpha swept over
1, 5, 20 and 80 (the paper's 20 in either convention, see pipeline.classifier.config), 5 seeds, plus the None
control, the deflated and contrast-energy controls, a robust network's target, and a PGD adversarially trained
positive control; noise stds of Fig 4, 15 common corruptions x 5 severities, and the 'paper' attack
sweep on 1000 test samples, scored as one attack set.
"""

from __future__ import annotations

from .experiment import enter_experiment, load_spec


def paper_spec(scan_group: str, task: str = "cifar10-gray", arch: str = "resnet18", seeds: int = 5,
               alphas=None, vgg_weights: str | None = None) -> dict:
    """The paper's specification for one scan group (the command line's options applied; alphas None: the
    file's sweep, 1-80, wide enough for either reading of the paper's alpha = 20, see classifier.config)."""
    spec = load_spec("paper")
    spec["name"] = f"paper-{scan_group}"
    spec["scan_group"] = scan_group
    c = spec["classifiers"]
    c.update(task=task, arch=arch, seeds=list(range(int(seeds))))
    if alphas is not None:
        c["alphas"] = [float(a) for a in alphas]
    if "Robust net" in spec["targets"]:  # the robust network learns the same task, in the same architecture
        spec["targets"]["Robust net"].update(task=task, arch=arch)
    if vgg_weights:
        spec["targets"]["VGG"] = {"kind": "feature-model", "weights_path": str(vgg_weights), "layer": "conv3_1"}
        c["regularise_towards"].append("VGG")
    return spec


def setup_paper(scan_group: str, **options) -> dict:
    """Enter the whole paper experiment for an existing scan group; return enter_experiment's summary."""
    return enter_experiment(paper_spec(scan_group, **options))
