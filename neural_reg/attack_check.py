"""`neural-reg check-attacks`: can an independent attack ensemble go below the stored robustness scores?

For stored per-sample minima (robustness.RobustnessScore.Norm: the minimum over an attack set's attacks), two
ensembles attack each sample at radius (1 - rtol) * d, taking nothing from the attacks that made the score:
'project', :func:`pipeline.robustness.attacks.check.independent_check` (this project's APGD-CE, APGD-DLR and
targeted APGD-DLR from random starts, plus Square for Linf), and 'art',
:func:`pipeline.robustness.attacks.art_check.art_check` (the same losses in IBM's Adversarial Robustness Toolbox,
code this project did not write). A sample is *beaten* when either finds a verified adversarial there. A score is
trustworthy when few samples are beaten: issue 14 asks for fewer than 5 %.

Reads the database, writes nothing: the check is a reviewer's tool, and its numbers go to stdout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class CheckRow:
    classifier: str      # 'regulariser alpha=.. seed=..'
    norm: str
    n_checked: int       # samples with a finite, positive minimum
    beaten: int          # by either ensemble
    median_reported: float
    median_after: float  # the median with every beaten sample's smaller distance
    seconds: float
    beaten_by: dict | None = None  # {'project': n, 'art': n}: samples each ensemble beat on its own

    @property
    def fraction(self) -> float:
        return self.beaten / self.n_checked if self.n_checked else 0.0


def check_scores(attack_set: str | None = None, limit: int = 4, n_samples: int | None = 100, norms=("Linf", "L2"),
                 rtol: float = 0.005, restarts: int = 1, steps: int = 100, square_steps: int = 1000,
                 seed: int = 0, ensembles=("project", "art")) -> list[CheckRow]:
    """Check the stored scores of at most ``limit`` classifiers (seed 0 of each condition first, then seed 1, ...).

    attack_set: an AttackSet name (None: the first one in key order). n_samples: check the first n of each score's
    samples (None: all). The ensembles' settings as in independent_check (art_check takes steps and restarts);
    restarts=1 halves their price. ensembles: any of 'project', 'art'.
    """
    from pipeline.errors import NeuralRegError
    from pipeline.robustness.attacks.art_check import art_check
    from pipeline.robustness.attacks.check import independent_check
    from schemas import classifier, robustness

    from . import queries
    from .settings import load_settings

    unknown = set(ensembles) - {"project", "art"}
    if unknown or not ensembles:
        raise NeuralRegError(f"ensembles={list(ensembles)!r}: choose one or both of 'project', 'art'")
    sets = robustness.AttackSet.to_dicts(order_by="KEY")
    if not sets:
        raise NeuralRegError("no attack set is entered. Fix: enter an experiment with robustness.attacks first")
    chosen = next((s for s in sets if s["attack_set_name"] == attack_set), None) if attack_set else sets[0]
    if chosen is None:
        raise NeuralRegError(f"attack set {attack_set!r} is not entered; entered: "
                             f"{', '.join(s['attack_set_name'] for s in sets)}. Fix: --attack-set one of those")
    base = queries.classifiers()
    pk = classifier.TrainedClassifier.primary_key
    condition = {tuple(k[n] for n in pk): (int(seed), f"{r} alpha={a:g}")
                 for k, r, a, seed in zip(base["key"], base["regulariser"], base["alpha"], base["seed"])}
    scores: dict[tuple, dict] = {}  # classifier key -> {norm: RobustnessScore.Norm row}
    for row in (robustness.RobustnessScore.Norm & {"attack_set_hash": chosen["attack_set_hash"]}).to_dicts():
        scores.setdefault(tuple(row[n] for n in pk), {})[row["norm"]] = row
    # seed 0 of every condition first, then seed 1 of each, ...: a small limit still covers the conditions
    chosen_keys = sorted(scores, key=lambda k: condition[k])[:limit]
    out = []
    for k in chosen_keys:
        key = dict(zip(pk, k))
        seed_, label = condition[k]
        model = classifier.load_trained(key)
        for norm in norms:
            row = scores[k].get(norm)
            if row is None:
                continue
            idx, d = np.asarray(row["sample_idx"]), np.asarray(row["distances"], np.float64)
            if n_samples is not None:
                idx, d = idx[:n_samples], d[:n_samples]
            task = robustness._task(key["task"], str(load_settings().data_dir))  # cached per worker
            xs, ys = task.test_x[idx], task.test_y[idx]
            results = {}
            if "project" in ensembles:
                results["project"] = independent_check(model, xs, ys, d, norm, rtol=rtol, restarts=restarts,
                                                       steps=steps, square_steps=square_steps, seed=seed)
            if "art" in ensembles:
                results["art"] = art_check(model, xs, ys, d, norm, rtol=rtol, steps=steps, restarts=restarts,
                                           seed=seed)
            checked = np.isfinite(d) & (d > 0)
            smallest = np.min([r.distances for r in results.values()], axis=0)
            beaten = np.any([r.beaten for r in results.values()], axis=0)
            after = np.where(np.isfinite(smallest) & (smallest < d), smallest, d)
            out.append(CheckRow(f"{label} seed={seed_}", norm, int(checked.sum()), int(beaten.sum()),
                                float(np.median(d)), float(np.median(after)),
                                float(sum(r.wall_time for r in results.values())),
                                {k: int(r.beaten.sum()) for k, r in results.items()}))
    return out


def format_rows(rows: list[CheckRow], rtol: float) -> str:
    lines = [f"{'classifier':<34} {'norm':<5} {'checked':>7} {'beaten':>7} {'share':>7} {'median':>9} "
             f"{'after':>9} {'s':>6}  by ensemble"]
    for r in rows:
        lines.append(f"{r.classifier:<34} {r.norm:<5} {r.n_checked:>7} {r.beaten:>7} {100 * r.fraction:>6.1f}% "
                     f"{r.median_reported:>9.4f} {r.median_after:>9.4f} {r.seconds:>6.0f}  "
                     + " ".join(f"{k}={v}" for k, v in (r.beaten_by or {}).items()))
    for norm in sorted({r.norm for r in rows}):
        mine = [r for r in rows if r.norm == norm]
        n, b = sum(r.n_checked for r in mine), sum(r.beaten for r in mine)
        by: dict = {}
        for r in mine:
            for k, v in (r.beaten_by or {}).items():
                by[k] = by.get(k, 0) + v
        lines.append(f"check-attacks: {norm} beaten={b}/{n} ({100 * b / max(n, 1):.1f}%) at (1 - {rtol:g}) x the "
                     f"stored minimum, {len(mine)} classifiers (goal < 5%); "
                     + ", ".join(f"{k} alone {100 * v / max(n, 1):.1f}%" for k, v in by.items()))
    return "\n".join(lines)
