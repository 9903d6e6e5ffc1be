"""The result tables as tidy pandas DataFrames, one row per observation, labelled by regulariser and seed.

An "experiment" is one (task, arch, train config): regularisers are compared within it, seeds paired.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

KIND_LABELS = {None: "None", "neural-model": "Neural", "neural-data": "Neural (data)", "shuffle": "Shuffle",
               "pixel": "Pixel", "feature-model": "VGG", "random": "Random"}
EXPERIMENT = ["task", "arch", "train_name"]


def classifiers() -> pd.DataFrame:
    """One row per trained classifier: experiment, regulariser label, alpha, seed, clean accuracy and its key."""
    from schemas import classifier, target

    rows = (classifier.TrainedClassifier * classifier.Regulariser * classifier.TrainConfig.proj("train_name")
            ).to_dicts()
    kinds = dict(zip(*target.TargetConfig.to_arrays("target_hash", "kind"))) if len(target.TargetConfig()) else {}
    out = []
    key_names = classifier.TrainedClassifier.primary_key
    for r in rows:
        kind = kinds.get(r["target_hash"]) if r["target_hash"] else None
        out.append({"key": {k: r[k] for k in key_names}, "task": r["task"], "arch": r["arch"],
                    "train_name": r["train_name"], "kind": kind or "none", "regulariser": KIND_LABELS.get(kind, kind),
                    "alpha": float(r["alpha"]),
                    "regulariser_name": r["regulariser_name"], "seed": int(r["classifier_seed"]),
                    "test_accuracy": float(r["test_accuracy"]), "wall_time": float(r["wall_time"])})
    df = pd.DataFrame(out)
    if df.empty:
        return df
    # several alphas of one kind (an alpha sweep): name them apart, except the main comparison keeps the label
    for label, group in df.groupby("regulariser"):
        if group["alpha"].nunique() > 1:
            df.loc[group.index, "regulariser"] = [f"{label} (alpha={a:g})" for a in group["alpha"]]
    return df


def _join(base: pd.DataFrame, rows: list[dict]) -> pd.DataFrame:
    """Attach experiment, regulariser and seed to result rows that carry a classifier key."""
    if not rows or base.empty:
        return pd.DataFrame()
    index = {tuple(sorted(k.items())): i for i, k in enumerate(base["key"])}
    key_names = list(base["key"].iloc[0])
    out = []
    for r in rows:
        i = index.get(tuple(sorted((k, r[k]) for k in key_names)))
        if i is not None:
            info = base.iloc[i]
            out.append({**{c: info[c] for c in EXPERIMENT + ["regulariser", "kind", "alpha", "seed"]}, **r})
    return pd.DataFrame(out)


def noise(base: pd.DataFrame) -> pd.DataFrame:
    from schemas import robustness

    rows = []
    for r in (robustness.NoiseRobustness * robustness.NoiseConfig.proj("noise_name")).to_dicts():
        for std, acc in zip(r["stds"], r["accuracy"]):
            rows.append({**{k: r[k] for k in base["key"].iloc[0]}, "noise_name": r["noise_name"],
                         "std": float(std), "accuracy": float(acc)})
    return _join(base, rows)


def scores(base: pd.DataFrame) -> pd.DataFrame:
    from schemas import robustness

    rows = [{**{k: r[k] for k in base["key"].iloc[0]}, "norm": r["norm"], "median": float(r["median"]),
             "robust_accuracy": float(r["robust_accuracy"]), "threshold": float(r["threshold"]),
             "n_attacks": int(r["n_attacks"])}
            for r in robustness.RobustnessScore.Norm.to_dicts()] if not base.empty else []
    return _join(base, rows)


def query_curves(base: pd.DataFrame) -> pd.DataFrame:
    from schemas import robustness

    rows = []
    for r in (robustness.Adversarial * robustness.AttackConfig.proj("attack_name", "norm")).to_dicts():
        for queries, median in np.asarray(r["queries_curve"]).reshape(-1, 2):
            if queries > 0 and np.isfinite(median):
                rows.append({**{k: r[k] for k in base["key"].iloc[0]}, "attack": r["attack_name"],
                             "norm": r["norm"], "queries": float(queries), "median": float(median)})
    return _join(base, rows)


def layer_weights(base: pd.DataFrame) -> pd.DataFrame:
    from schemas import classifier

    rows = [{**{k: r[k] for k in base["key"].iloc[0]}, "layer": r["layer"], "gamma": float(r["gamma"])}
            for r in classifier.TrainedClassifier.LayerWeight.to_dicts()] if not base.empty else []
    return _join(base, rows)


def corruptions(base: pd.DataFrame) -> pd.DataFrame:
    from schemas import robustness

    rows = [{**{k: r[k] for k in base["key"].iloc[0]}, "corruption": r["corruption"],
             "severity": int(r["severity"]), "accuracy": float(r["accuracy"])}
            for r in robustness.CorruptionRobustness.Score.to_dicts()] if not base.empty else []
    return _join(base, rows)


def brain_likeness(base: pd.DataFrame) -> pd.DataFrame:
    from schemas import robustness, target

    rows = [{**{k: r[k] for k in base["key"].iloc[0]}, "target_name": r["target_name"],
             "target_kind": r["kind"], "correlation": float(r["correlation"])}
            for r in (robustness.BrainLikeness * target.TargetConfig.proj("target_name", "kind")).to_dicts()
            ] if not base.empty else []
    return _join(base, rows)


def experiments(base: pd.DataFrame) -> list[dict]:
    """The distinct (task, arch, train_name) settings, most classifiers first."""
    if base.empty:
        return []
    counts = base.groupby(EXPERIMENT).size().sort_values(ascending=False)
    return [dict(zip(EXPERIMENT, idx)) for idx in counts.index]


def restrict(df: pd.DataFrame, experiment: dict) -> pd.DataFrame:
    if df.empty:
        return df
    mask = np.ones(len(df), bool)
    for k, v in experiment.items():
        mask &= (df[k] == v).to_numpy()
    return df[mask]
