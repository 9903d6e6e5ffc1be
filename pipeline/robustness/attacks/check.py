"""An independent check of reported minimal perturbations: can a random-start ensemble go below them?

For each sample with reported distance d, fixed-epsilon attacks run at radius (1 - rtol) * d from random starts
(nothing is taken from the attacks that produced d): APGD with the cross-entropy, DLR and targeted DLR losses,
``restarts`` times each, and, for Linf, the gradient-free Square attack. A sample is "beaten" when any of them
finds a verified adversarial at that radius. A robustness score is trustworthy when few samples are beaten
(RobustBench-style evaluation: the minimum is then within rtol of what this ensemble can find).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipeline.devices import resolve_device

from ..images import check_images
from .apgd import APGD, rank_targets
from .counting import QueryCounter
from .square import SquareLinf
from .verify import verify

__all__ = ["CheckResult", "independent_check"]


@dataclass
class CheckResult:
    beaten: np.ndarray      # (n,) bool: an adversarial below (1 - rtol) * d was found
    distances: np.ndarray   # (n,) the smallest such adversarial's distance (inf where none)
    queries: float          # model queries per checked sample
    wall_time: float
    by_attack: dict         # {attack: checked samples it beat on its own}

    @property
    def fraction(self) -> float:
        """Share of the checked samples (finite d > 0) that were beaten."""
        return float(self.beaten.mean()) if self.beaten.size else 0.0


def independent_check(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, distances: np.ndarray, norm: str, *,
                      rtol: float = 0.005, restarts: int = 2, steps: int = 100, square_steps: int = 1000,
                      targets: int = 3, margin: float = 1e-4, batch_size: int = 250, seed: int = 0,
                      device: str | torch.device | None = None) -> CheckResult:
    """Attack every sample with finite distance d > 0 at radius (1 - rtol) * d (see the module docstring).

    x (n, 1, H, W), y (n,), distances (n,) as an ``AttackResult`` holds them; norm 'Linf' or 'L2'.
    Returns a CheckResult over the n samples (samples with d = 0 or inf are never beaten).
    """
    import time

    x, y = check_images(x, y)
    d = np.asarray(distances, dtype=np.float64)
    dev = resolve_device(device, model)
    counter = QueryCounter(model).eval()
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    rows_all = np.flatnonzero(np.isfinite(d) & (d > 0))
    found = np.full(len(d), np.inf)
    hit: dict[str, set] = {}
    t0 = time.perf_counter()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for i in range(0, len(rows_all), batch_size):
                rows = rows_all[i:i + batch_size]
                x0 = torch.from_numpy(x[rows]).to(dev)
                y0 = torch.from_numpy(y[rows]).to(dev)
                eps = torch.from_numpy(d[rows] * (1 - rtol)).to(dev)
                runs = []
                tgt = rank_targets(counter, x0, y0, norm, targets) if targets else None
                for _ in range(restarts):
                    runs.append(("apgd-ce", APGD(steps=steps, loss="ce").run_fixed(counter, x0, y0, eps, norm, margin)))
                    runs.append(("apgd-dlr", APGD(steps=steps, loss="dlr").run_fixed(counter, x0, y0, eps, norm,
                                                                                     margin)))
                    if tgt is not None:
                        runs.append((f"apgd-dlr-t{targets}", APGD(steps=steps, loss="dlr").run_fixed(
                            counter, x0, y0, eps, norm, margin, aux=tgt)))
                if norm == "Linf" and square_steps:
                    runs.append(("square", SquareLinf(steps=square_steps).run_fixed(counter, x0, y0, eps, norm,
                                                                                    margin)))
                for name, run in runs:
                    _, dist, ok = verify(counter, x0, y0, run.adv, norm, margin)
                    found[rows[ok]] = np.minimum(found[rows[ok]], dist[ok])
                    hit[name] = hit.get(name, set()) | set(rows[ok].tolist())
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
    beaten = found < d * (1 - rtol / 2)  # verify's push may add a little to the radius tried
    return CheckResult(beaten=beaten[rows_all], distances=found, queries=counter.queries / max(len(rows_all), 1),
                       wall_time=time.perf_counter() - t0, by_attack={k: len(v) for k, v in hit.items()})
