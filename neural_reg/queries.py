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


def _join(base: pd.DataFrame, rows: list[tuple[dict, dict]]) -> pd.DataFrame:
    """Result rows labelled with their classifier's experiment, regulariser and seed.

    rows: (database row carrying a classifier key, the values to keep) pairs.
    """
    if not rows or base.empty:
        return pd.DataFrame()
    index = {tuple(sorted(k.items())): i for i, k in enumerate(base["key"])}
    key_names = list(base["key"].iloc[0])
    out = []
    for row, values in rows:
        i = index.get(tuple(sorted((k, row[k]) for k in key_names)))
        if i is not None:
            info = base.iloc[i]
            out.append({**{c: info[c] for c in EXPERIMENT + ["regulariser", "kind", "alpha", "seed"]}, **values})
    return pd.DataFrame(out)


def noise(base: pd.DataFrame) -> pd.DataFrame:
    from schemas import robustness

    query = robustness.NoiseRobustness * robustness.NoiseConfig.proj("noise_name")
    return _join(base, [(r, {"noise_name": r["noise_name"], "std": float(std), "accuracy": float(acc)})
                        for r in query.to_dicts() for std, acc in zip(r["stds"], r["accuracy"])])


def scores(base: pd.DataFrame) -> pd.DataFrame:
    from schemas import robustness

    return _join(base, [(r, {"norm": r["norm"], "median": float(r["median"]),
                             "robust_accuracy": float(r["robust_accuracy"]), "threshold": float(r["threshold"]),
                             "n_attacks": int(r["n_attacks"])})
                        for r in robustness.RobustnessScore.Norm.to_dicts()])


def query_curves(base: pd.DataFrame) -> pd.DataFrame:
    from schemas import robustness

    query = robustness.Adversarial * robustness.AttackConfig.proj("attack_name", "norm")
    return _join(base, [(r, {"attack": r["attack_name"], "norm": r["norm"], "queries": float(queries),
                             "median": float(median)})
                        for r in query.to_dicts()
                        for queries, median in np.asarray(r["queries_curve"]).reshape(-1, 2)
                        if queries > 0 and np.isfinite(median)])


def layer_weights(base: pd.DataFrame) -> pd.DataFrame:
    from schemas import classifier

    return _join(base, [(r, {"layer": r["layer"], "gamma": float(r["gamma"])})
                        for r in classifier.TrainedClassifier.LayerWeight.to_dicts()])


def corruptions(base: pd.DataFrame) -> pd.DataFrame:
    from schemas import robustness

    return _join(base, [(r, {"corruption": r["corruption"], "severity": int(r["severity"]),
                             "accuracy": float(r["accuracy"])})
                        for r in robustness.CorruptionRobustness.Score.to_dicts()])


def brain_likeness(base: pd.DataFrame) -> pd.DataFrame:
    from schemas import robustness, target

    query = robustness.BrainLikeness * target.TargetConfig.proj("target_name", "kind")
    return _join(base, [(r, {"target_name": r["target_name"], "target_kind": r["kind"],
                             "correlation": float(r["correlation"])}) for r in query.to_dicts()])


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
