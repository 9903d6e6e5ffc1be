"""Conditions: which regulariser at which strength. The one place for the labels, their order and the controls.

A classifier's regulariser is labelled from its target's kind (:data:`KIND_LABELS`; a kind not listed is its own
label) and its strength alpha (Eq 7) is a separate column. A *condition* is the pair (regulariser, alpha); the
unregularised baseline 'None' has alpha 0. Nothing here rewrites the regulariser column: text that shows both
(legend entries, gids) is built at draw time by :func:`condition_label`.

The controls are the references a Neural gain must beat: the targets without neural content (Shuffle, Pixel,
Random, VGG, Contrast energy, Robust net) and the neural references (Deflated: the Neural target with its leading
components removed; Neural (truth): the simulator's noise-free similarity). A gain that one of them also gives
is not a gain of (the rest of) the neural data, so every regulariser is compared with None and with each control
at the same alpha (:func:`pipeline.report.stats.paired_comparisons`, :func:`pipeline.report.stats.effect_table`).

A condition is distinguished by regulariser AND training: a classifier trained adversarially (PGD adversarial
training: its TrainConfig params have ``adversarial`` set, e.g. {"norm": "Linf", "eps": 0.03, "steps": 5,
"rel_stepsize": 0.4}) without a regulariser is the positive control, labelled :data:`ADVERSARIAL`
('Adversarial (PGD)', alpha 0; :func:`classifier_label`): it shows whether the robustness evaluation can see a gain.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["BASELINE", "BASELINE_KIND", "NEURAL", "ADVERSARIAL", "KIND_LABELS", "CONTROL_KINDS", "CONTROLS",
           "REGULARISER_ORDER", "regulariser_label", "adversarial_label", "classifier_label", "is_adversarial",
           "order_regularisers", "condition_label", "condition_columns", "conditions", "sort_conditions"]

BASELINE = "None"          # the unregularised classifier (alpha 0)
BASELINE_KIND = "none"     # its kind in queries.classifiers (no target)
NEURAL = "Neural"          # the regulariser the paper's claim is about (kind 'neural-model')
ADVERSARIAL = "Adversarial (PGD)"  # the positive control: PGD adversarial training, no regulariser (alpha 0)
# kind -> label, in the canonical display order (baseline, controls, then the neural regularisers)
KIND_LABELS = {
    BASELINE_KIND: BASELINE,
    "shuffle": "Shuffle",
    "pixel": "Pixel",
    "random": "Random",
    "feature-model": "VGG",
    "contrast-energy": "Contrast energy",
    "robust-net": "Robust net",
    "deflated": "Deflated",
    "neural-truth": "Neural (truth)",
    "neural-data": "Neural (data)",
    "neural-model": NEURAL,
}
CONTROL_KINDS = ("shuffle", "pixel", "random", "feature-model", "contrast-energy", "robust-net", "deflated",
                 "neural-truth")
CONTROLS = tuple(KIND_LABELS[k] for k in CONTROL_KINDS)
# the baseline, the positive control, then the regularisers
REGULARISER_ORDER = (BASELINE, ADVERSARIAL) + tuple(v for v in KIND_LABELS.values() if v != BASELINE)


def regulariser_label(kind) -> str:
    """The display label of a target kind: KIND_LABELS, the baseline for no kind, else the kind string itself."""
    if kind is None or (isinstance(kind, float) and np.isnan(kind)):
        return BASELINE
    return KIND_LABELS.get(kind, str(kind))


def adversarial_label(adversarial, detail: bool = False) -> str:
    """The label part of an adversarial training config: 'Adversarial (PGD)'; with ``detail``, its norm and eps
    ('Adversarial (PGD, Linf ε=0.03)'), to tell two adversarial configs of one experiment apart."""
    if not detail or not isinstance(adversarial, dict):
        return ADVERSARIAL
    parts = [str(adversarial[k]) for k in ("norm",) if k in adversarial]
    if "eps" in adversarial:
        parts.append(f"ε={float(adversarial['eps']):g}")
    return f"Adversarial (PGD, {' '.join(parts)})" if parts else ADVERSARIAL


def is_adversarial(label) -> bool:
    """Whether a condition label is the positive control (adversarially trained, no regulariser): 'Adversarial
    (PGD)' or its detailed form 'Adversarial (PGD, Linf ε=0.03)'."""
    return str(label) == ADVERSARIAL or str(label).startswith(ADVERSARIAL[:-1] + ",")


def classifier_label(kind, adversarial=None, detail: bool = False) -> str:
    """A classifier's condition label from its target kind AND its training: the kind's label
    (:func:`regulariser_label`) when trained without ``adversarial`` (None or {}); 'Adversarial (PGD)' when trained
    adversarially without a regulariser; '<regulariser> + Adversarial (PGD)' for both."""
    label = regulariser_label(kind)
    if not adversarial:
        return label
    adv = adversarial_label(adversarial, detail)
    return adv if label == BASELINE else f"{label} + {adv}"


def order_regularisers(names) -> list:
    """Distinct names: the canonical ones (REGULARISER_ORDER) first in that order, then the rest sorted."""
    distinct = list(dict.fromkeys(names))
    canon = [n for n in REGULARISER_ORDER if n in distinct]
    return canon + sorted((n for n in distinct if n not in canon), key=str)


def condition_label(regulariser, alpha=None) -> str:
    """'Neural (α=10)' for a regulariser at a strength; the bare name for the baseline or an unknown alpha."""
    if alpha is None or regulariser == BASELINE:
        return str(regulariser)
    return f"{regulariser} (α={float(alpha):g})"


def condition_columns(df: pd.DataFrame, by: str = "regulariser", alpha: str = "alpha") -> list[str]:
    """The columns that name a condition in ``df``: [by, alpha], or [by] when df has no alpha column."""
    return [by, alpha] if alpha in df.columns else [by]


def conditions(df: pd.DataFrame, by: str = "regulariser", alpha: str = "alpha") -> list[tuple]:
    """Distinct (regulariser, alpha) pairs of ``df`` in canonical order (regulariser order, then alpha ascending).

    Without an alpha column every pair is (regulariser, None).
    """
    if alpha not in df.columns:
        return [(r, None) for r in order_regularisers(df[by])]
    pairs = df[[by, alpha]].drop_duplicates()
    rank = {r: k for k, r in enumerate(order_regularisers(pairs[by]))}
    return sorted(((r, float(a)) for r, a in pairs.itertuples(index=False)), key=lambda p: (rank[p[0]], p[1]))


def sort_conditions(df: pd.DataFrame, then=(), by: str = "regulariser", alpha: str = "alpha") -> pd.DataFrame:
    """``df`` sorted by the columns in ``then`` first, then by condition in canonical order (stable)."""
    rank = {r: k for k, r in enumerate(order_regularisers(df[by]))}
    keys = list(then) + condition_columns(df, by, alpha)
    return df.sort_values(keys, key=lambda c: c.map(rank) if c.name == by else c, kind="stable")
