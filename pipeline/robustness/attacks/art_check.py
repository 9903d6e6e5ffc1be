"""A check of reported minimal perturbations with an APGD the project did not write: IBM's Adversarial Robustness
Toolbox (ART 1.20, ``AutoProjectedGradientDescent``, after Croce & Hein 2020).

``check.independent_check`` attacks with this project's own APGD and Square; a bug shared by the attack that
produced a score and the check of it would hide there. This check runs ART's APGD instead: untargeted with the
cross-entropy and the DLR loss, and targeted DLR towards each sample's ``targets`` runner-up classes (by the clean
logits, as AutoAttack's APGD-T does), at radius (1 - rtol) * d per sample, from ART's random starts. ART's APGD
takes one scalar radius per call, so each sample is attacked alone (ART batches nothing across radii). Every
adversarial ART returns is re-verified here (``verify``). A sample's runs stop at the first verified adversarial,
so ``by_attack`` counts the samples each attack beat first, in the order CE, DLR, targeted DLR.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ..images import check_images
from .check import CheckResult
from .verify import verify

__all__ = ["art_check"]


def _classifier(model: torch.nn.Module, shape: tuple, n_classes: int, device: str):
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=shape, nb_classes=n_classes,
                             clip_values=(0.0, 1.0), device_type="gpu" if device.startswith("cuda") else "cpu")


def art_check(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, distances: np.ndarray, norm: str, *,
              rtol: float = 0.005, steps: int = 100, restarts: int = 1, targets: int = 3, margin: float = 1e-4,
              seed: int = 0) -> CheckResult:
    """Attack every sample with finite distance d > 0 with ART's APGD at radius (1 - rtol) * d (module docstring).

    x (n, 1, H, W) float32 in [0, 1], y (n,), distances (n,); norm 'Linf' or 'L2'. restarts: ART's random
    initialisations per loss. Returns a CheckResult over the n samples (``queries``: the gradient steps budgeted,
    steps x restarts per run; ART may stop a run early).
    """
    from art.attacks.evasion import AutoProjectedGradientDescent

    x, y = check_images(x, y)
    if norm not in ("Linf", "L2"):
        raise ValueError(f"norm={norm!r}: the ART check attacks 'Linf' or 'L2'")
    d = np.asarray(distances, dtype=np.float64)
    model = model.eval()
    dev = next(model.parameters()).device
    with torch.no_grad():
        logits = torch.cat([model(torch.from_numpy(x[i:i + 256]).to(dev)) for i in range(0, len(x), 256)]).cpu()
    n_classes = logits.shape[1]
    clf = _classifier(model, tuple(x.shape[1:]), n_classes, str(dev))
    art_norm = np.inf if norm == "Linf" else 2
    rows_all = np.flatnonzero(np.isfinite(d) & (d > 0))
    found = np.full(len(d), np.inf)
    hit: dict[str, set] = {}
    ranked = logits.scatter(1, torch.from_numpy(y)[:, None], -np.inf).argsort(dim=1, descending=True).numpy()
    grads = 0
    t0 = time.perf_counter()
    state = np.random.get_state()
    np.random.seed(seed)  # ART draws its random starts from numpy's global generator
    try:
        for i in rows_all:
            eps = float(d[i] * (1 - rtol))
            x_i = x[i:i + 1]
            runs = [("art-apgd-ce", "cross_entropy", False, y[i:i + 1]),
                    ("art-apgd-dlr", "difference_logits_ratio", False, y[i:i + 1])]
            if n_classes >= 3:
                runs += [(f"art-apgd-dlr-t{targets}", "difference_logits_ratio", True, ranked[i, j:j + 1])
                         for j in range(min(targets, n_classes - 1))]
            x0 = torch.from_numpy(x_i).to(dev)
            y0 = torch.from_numpy(y[i:i + 1]).to(dev)
            for name, loss, targeted, label in runs:
                attack = AutoProjectedGradientDescent(clf, norm=art_norm, eps=eps, eps_step=2 * eps, max_iter=steps,
                                                      targeted=targeted, nb_random_init=restarts, batch_size=1,
                                                      loss_type=loss, verbose=False)
                adv = attack.generate(x_i, np.eye(n_classes, dtype=np.float32)[label])
                grads += steps * restarts
                _, dist, ok = verify(model, x0, y0, torch.from_numpy(adv.astype(np.float32)).to(dev), norm, margin)
                if ok[0]:
                    found[i] = min(found[i], float(dist[0]))
                    hit.setdefault(name, set()).add(int(i))
                    break  # the sample is beaten: the remaining losses cannot change the verdict
    finally:
        np.random.set_state(state)
    beaten = found < d * (1 - rtol / 2)  # verify's push may add a little to the radius tried
    return CheckResult(beaten=beaten[rows_all], distances=found, queries=grads / max(len(rows_all), 1),
                       wall_time=time.perf_counter() - t0, by_attack={k: len(v) for k, v in hit.items()})
