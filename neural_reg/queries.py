"""The result tables as tidy pandas DataFrames, one row per observation, labelled by condition and seed.

An "experiment" is one (task, arch, train config): regularisers are compared within it, seeds paired. A
condition is (regulariser, alpha): ``regulariser`` is the label of the target's kind ('None', 'Neural',
'Shuffle', 'Pixel', ...; see pipeline.report.conditions) and never carries the alpha, which is a column of its
own (None has alpha 0). A condition is told apart by its training too: a classifier whose TrainConfig has
``adversarial`` set is labelled 'Adversarial (PGD)' (no regulariser; pipeline.report.conditions.classifier_label)
and belongs to the experiment of the schedule it equals without ``adversarial`` (so it is compared with None
trained on that schedule). Every frame derived from :func:`classifiers` carries the experiment columns and
regulariser, kind, alpha, seed. Each function names the table(s) it reads; the figure functions of
pipeline.report.figures name the function here that feeds them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

import json

from pipeline.report.conditions import BASELINE_KIND, KIND_LABELS, classifier_label

EXPERIMENT = ["task", "arch", "train_name"]
CONDITION = ["regulariser", "kind", "alpha", "seed"]  # what every derived frame carries besides EXPERIMENT
CLASSIFIER_COLUMNS = ["key"] + EXPERIMENT + ["regulariser", "kind", "alpha", "regulariser_name", "seed",
                      "test_accuracy", "wall_time", "train_config", "adversarial"]

__all__ = ["EXPERIMENT", "CONDITION", "KIND_LABELS", "classifiers", "schedules", "noise", "scores", "score_samples",
           "target_diagnostics", "label_conditions", "query_curves",
           "layer_weights", "corruptions", "brain_likeness", "similarity_scans", "oracle_comparison",
           "oracle_statistics", "stability", "experiments", "restrict"]


def _canonical(params: dict) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def schedules(train_configs: list[tuple[str, str, dict]]) -> dict:
    """{train_hash: (schedule name, adversarial)} of TrainConfig rows (train_hash, train_name, params).

    adversarial: params['adversarial'] (None or {} when absent: a plain schedule). The schedule of a plain
    config is its own name; of an adversarial one, the name of the plain config with the same params apart from
    'adversarial' (its own name when there is none), so the adversarially trained classifier is compared within
    the experiment of that schedule.
    """
    def without(params):
        return _canonical({k: v for k, v in dict(params).items() if k != "adversarial"})

    plain = {without(p): name for _, name, p in train_configs if not dict(p).get("adversarial")}
    out = {}
    for h, name, p in train_configs:
        adversarial = dict(p).get("adversarial") or None
        out[h] = (plain.get(without(p), name) if adversarial else name, adversarial)
    return out


def classifiers() -> pd.DataFrame:
    """One row per trained classifier: its key, experiment, condition, seed, clean accuracy and training time.

    Source: classifier.TrainedClassifier x classifier.Regulariser x classifier.TrainConfig, the kind from
    target.TargetConfig (through the regulariser's target_hash; no target = kind 'none', label 'None').
    ``train_name`` is the experiment's schedule (:func:`schedules`), ``train_config`` the classifier's own
    TrainConfig name, ``adversarial`` its adversarial-training params (None: standard training); the label is
    pipeline.report.conditions.classifier_label (detailed, e.g. 'Adversarial (PGD, Linf ε=0.03)', only when an
    experiment has several adversarial configs). Columns: CLASSIFIER_COLUMNS.
    """
    from schemas import classifier, target

    query = (classifier.TrainedClassifier.proj("test_accuracy", "wall_time")
             * classifier.Regulariser.proj("regulariser_name", "alpha", "target_hash")
             * classifier.TrainConfig.proj("train_name"))
    rows = query.to_dicts()
    kinds = dict(zip(*target.TargetConfig.to_arrays("target_hash", "kind"))) if len(target.TargetConfig()) else {}
    trains = schedules(list(zip(*classifier.TrainConfig.to_arrays("train_hash", "train_name", "params")))) \
        if len(classifier.TrainConfig()) else {}
    key_names = classifier.TrainedClassifier.primary_key
    out = []
    for r in rows:
        kind = kinds.get(r["target_hash"], BASELINE_KIND) if r["target_hash"] else BASELINE_KIND
        schedule, adversarial = trains.get(r["train_hash"], (r["train_name"], None))
        out.append({"key": {k: r[k] for k in key_names}, "task": r["task"], "arch": r["arch"],
                    "train_name": schedule, "kind": kind, "alpha": float(r["alpha"]),
                    "regulariser_name": r["regulariser_name"], "seed": int(r["classifier_seed"]),
                    "test_accuracy": float(r["test_accuracy"]), "wall_time": float(r["wall_time"]),
                    "train_config": r["train_name"], "adversarial": adversarial})
    df = pd.DataFrame(out, columns=[c for c in CLASSIFIER_COLUMNS if c != "regulariser"])
    df.insert(4, "regulariser", label_conditions(df))
    return df[CLASSIFIER_COLUMNS]


def label_conditions(df: pd.DataFrame) -> list[str]:
    """The regulariser label of each row of a classifiers frame (kind, adversarial, task, arch, train_name):
    classifier_label, with the adversarial config's details where an experiment has several of them."""
    if df.empty:
        return []
    adv = [_canonical(a) if a else "" for a in df["adversarial"]]
    experiment = list(zip(*(df[c] for c in EXPERIMENT)))
    several = {e for e in set(experiment) if len({a for a, x in zip(adv, experiment) if x == e and a}) > 1}
    return [classifier_label(k, a, detail=e in several)
            for k, a, e in zip(df["kind"], df["adversarial"], experiment)]


def _join(base: pd.DataFrame, rows: list[tuple[dict, dict]]) -> pd.DataFrame:
    """Result rows labelled with their classifier's experiment, condition and seed (classifiers not in base
    are dropped).

    rows: (database row carrying a classifier key, the values to keep) pairs.
    """
    if not rows or base.empty:
        return pd.DataFrame()
    key_names = list(base["key"].iloc[0])
    index = {tuple(k[n] for n in key_names): i for i, k in enumerate(base["key"])}
    labels = base[EXPERIMENT + CONDITION].to_dict("records")
    out = []
    for row, values in rows:
        i = index.get(tuple(row[n] for n in key_names))
        if i is not None:
            out.append({**labels[i], **values})
    return pd.DataFrame(out)


def noise(base: pd.DataFrame) -> pd.DataFrame:
    """Accuracy under Gaussian noise, one row per (classifier, noise config, std), with the n_samples it is over.

    Source: robustness.NoiseRobustness x robustness.NoiseConfig (noise_name). Feeds figures.fig4_noise.
    """
    from schemas import robustness

    query = (robustness.NoiseRobustness.proj("stds", "accuracy", "n_samples")
             * robustness.NoiseConfig.proj("noise_name"))
    return _join(base, [(r, {"noise_name": r["noise_name"], "std": float(std), "accuracy": float(acc),
                             "n_samples": int(r["n_samples"])})
                        for r in query.to_dicts() for std, acc in zip(r["stds"], r["accuracy"])])


def scores(base: pd.DataFrame) -> pd.DataFrame:
    """Minimal-perturbation scores, one row per (classifier, attack set, norm); ``attack_set`` is the set's name;
    n_samples the attacked test samples the median is over.

    Source: robustness.RobustnessScore.Norm x robustness.AttackSet (attack_set_name). Feeds figures.fig6_alpha
    and the paired comparisons; never mix two attack sets in one figure or comparison (group by attack_set).
    """
    from schemas import robustness

    query = (robustness.RobustnessScore.Norm.proj("median", "robust_accuracy", "threshold", "n_attacks",
                                                  "sample_idx")
             * robustness.AttackSet.proj("attack_set_name"))
    return _join(base, [(r, {"attack_set": r["attack_set_name"], "norm": r["norm"], "median": float(r["median"]),
                             "robust_accuracy": float(r["robust_accuracy"]), "threshold": float(r["threshold"]),
                             "n_attacks": int(r["n_attacks"]), "n_samples": int(np.size(r["sample_idx"]))})
                        for r in query.to_dicts()])


def score_samples(base: pd.DataFrame) -> pd.DataFrame:
    """The per-sample minimal perturbations behind the scores, one row per (classifier, attack set, norm):
    ``sample_idx`` (n,) test-set indices and ``distances`` (n,) the per-sample minimum over the set's attacks
    (0: misclassified, inf: not found), the same samples for every classifier of an attack set.

    Source: robustness.RobustnessScore.Norm (sample_idx, distances) x robustness.AttackSet (attack_set_name).
    Feeds pipeline.report.stats.robustness_metrics (the bootstrap CIs, effects and verdicts).
    """
    from schemas import robustness

    query = (robustness.RobustnessScore.Norm.proj("sample_idx", "distances")
             * robustness.AttackSet.proj("attack_set_name"))
    return _join(base, [(r, {"attack_set": r["attack_set_name"], "norm": r["norm"],
                             "sample_idx": np.asarray(r["sample_idx"], np.int64).ravel(),
                             "distances": np.asarray(r["distances"], np.float64).ravel()})
                        for r in query.to_dicts()])


def query_curves(base: pd.DataFrame) -> pd.DataFrame:
    """Best perturbation so far vs model queries, one row per (classifier, attack, point of its curve), with the
    n_samples the median is over.

    Source: robustness.Adversarial (queries_curve) x robustness.AttackConfig (attack_name, norm). Feeds
    figures.fig5_queries.
    """
    from schemas import robustness

    query = (robustness.Adversarial.proj("queries_curve", "sample_idx")
             * robustness.AttackConfig.proj("attack_name", "norm"))
    return _join(base, [(r, {"attack": r["attack_name"], "norm": r["norm"], "queries": float(queries),
                             "median": float(median), "n_samples": int(np.size(r["sample_idx"]))})
                        for r in query.to_dicts()
                        for queries, median in np.asarray(r["queries_curve"]).reshape(-1, 2)
                        if queries > 0 and np.isfinite(median)])


def layer_weights(base: pd.DataFrame) -> pd.DataFrame:
    """Final layer weights gamma (Eq 10), one row per (classifier, layer).

    Source: classifier.TrainedClassifier.LayerWeight. Feeds figures.table1_layer_weights.
    """
    from schemas import classifier

    return _join(base, [(r, {"layer": r["layer"], "gamma": float(r["gamma"])})
                        for r in classifier.TrainedClassifier.LayerWeight.to_dicts()])


def corruptions(base: pd.DataFrame) -> pd.DataFrame:
    """Accuracy under common corruptions, one row per (classifier, corruption config, corruption, severity).

    Source: robustness.CorruptionRobustness.Score x CorruptionRobustness (n_samples: the corrupted test images)
    x robustness.CorruptionConfig (corruption_name). Feeds figures.corruption_table and
    figures.uninformative_corruptions.
    """
    from schemas import robustness

    query = (robustness.CorruptionRobustness.Score * robustness.CorruptionRobustness.proj("n_samples")
             * robustness.CorruptionConfig.proj("corruption_name"))
    return _join(base, [(r, {"corruption_name": r["corruption_name"], "corruption": r["corruption"],
                             "severity": int(r["severity"]), "accuracy": float(r["accuracy"]),
                             "n_samples": int(r["n_samples"])})
                        for r in query.to_dicts()])


def brain_likeness(base: pd.DataFrame) -> pd.DataFrame:
    """The classifier's similarity vs a neural target on held-out images, one row per (classifier, target).

    Source: robustness.BrainLikeness x target.TargetConfig (target_name; its kind as ``target_kind``, apart from
    the regulariser's ``kind``). ``correlation``: as trained (the regulariser's own centring and BN mode);
    ``correlation_eval`` (where BrainLikeness has that column; NaN otherwise): eval-mode BN with per-element
    centring.
    """
    from schemas import robustness, target

    has_eval = "correlation_eval" in robustness.BrainLikeness.heading.names
    attrs = ("correlation", "correlation_eval") if has_eval else ("correlation",)
    query = robustness.BrainLikeness.proj(*attrs) * target.TargetConfig.proj("target_name", "kind")

    def value(r, name):
        v = r.get(name)
        return np.nan if v is None else float(v)

    return _join(base, [(r, {"target_name": r["target_name"], "target_kind": r["kind"],
                             "correlation": float(r["correlation"]),
                             "correlation_eval": value(r, "correlation_eval")}) for r in query.to_dicts()])


DIAGNOSTIC_COLUMNS = ["n_images", "top1_share", "top5_share", "spectrum_exponent", "r_rank1", "r_pixel",
                      "r_contrast", "r_luminance", "r_activity"]


def target_diagnostics() -> pd.DataFrame:
    """One row per computed target: target_name, kind, regulariser (its label), the diagnostics and
    ``eigenvalue_shares`` (the leading 50 eigenvalues over the trace, an array).

    Source: target.TargetDiagnostics x target.TargetConfig (an empty frame when the schema has no
    TargetDiagnostics table yet). Feeds figures.target_spectrum and the report's target diagnostics section.
    """
    from pipeline.report.conditions import regulariser_label
    from schemas import target

    table = getattr(target, "TargetDiagnostics", None)
    if table is None:
        return pd.DataFrame()
    names = [c for c in DIAGNOSTIC_COLUMNS + ["eigenvalue_shares"] if c in table.heading.names]
    rows = (table.proj(*names) * target.TargetConfig.proj("target_name", "kind")).to_dicts(order_by="target_name")
    out = []
    for r in rows:
        row = {"target_name": r["target_name"], "kind": r["kind"], "regulariser": regulariser_label(r["kind"])}
        for c in names:
            v = r.get(c)
            row[c] = (np.asarray(v, np.float64).ravel() if c == "eigenvalue_shares" else
                      np.nan if v is None else int(v) if c == "n_images" else float(v))
        out.append(row)
    return pd.DataFrame(out)


def similarity_scans(limit: int | None = None) -> list[dict]:
    """Fig 1's input: per scan {label, data, model, oracle (if any)}, data and model on the images both share.

    Source: oracle.DataSimilarity (data), predictor.ModelSimilarity (model: the scan's first predictor in key
    order), oracle.OracleSimilarity (oracle). Scans in key order, at most ``limit``. Feeds
    figures.fig1_similarity.
    """
    from schemas import oracle, predictor

    scans = []
    for scan_key in (oracle.DataSimilarity.proj() & predictor.ModelSimilarity.proj()).keys(order_by="KEY",
                                                                                           limit=limit):
        data_ids, S_data = (oracle.DataSimilarity & scan_key).fetch1("image_ids", "similarity")
        model_key = (predictor.ModelSimilarity & scan_key).keys(order_by="KEY", limit=1)[0]
        model_ids, S_model = (predictor.ModelSimilarity & model_key).fetch1("image_ids", "similarity")
        common = np.intersect1d(data_ids, model_ids)
        d, m = np.searchsorted(data_ids, common), np.searchsorted(model_ids, common)
        entry = {"label": "{animal_id}-{session}-{scan_idx}".format(**scan_key),
                 "data": S_data[np.ix_(d, d)], "model": S_model[np.ix_(m, m)]}
        if oracle.OracleSimilarity & scan_key:
            entry["oracle"] = (oracle.OracleSimilarity & scan_key).fetch1("similarity")
        scans.append(entry)
    return scans


def oracle_comparison(limit: int | None = None) -> list[dict]:
    """Fig 1D's input: per scan, the single-trial and the model similarity on the ORACLE images beside the oracle
    similarity, and the noise-free truth where the scan is simulated.

    Sources: oracle.OracleSimilarity (``oracle``: Eq 3 over the oracle images, and their ids), the oracle trials
    of recording.Trial / recording.Responses (``trial``: Eq 2 on the first repeat of each oracle image, SNR
    weights of oracle.OracleStats.Unit; pipeline.oracle.similarity.single_repeat_similarity), the scan's first
    predictor.TrainedPredictor in key order (``model``: Eq 6 on its predictions for the oracle images, computed
    here: ModelSimilarity stores the non-oracle images only), oracle.DataSimilarity and predictor.ModelSimilarity
    (``data_rest``, ``model_rest``: the non-oracle images both share). For a scan with source_format
    'simulator', ``truth`` and ``truth_rest``: Eq 2 with the same SNR weights on the noise-free rates
    regenerated by pipeline.report.truth.simulator_truth (None otherwise, ``truth_note`` saying why), and
    ``exponent``: the power-law exponent of the PCA spectrum of those rates on the non-oracle images
    (pipeline.recording.calibration; absent for a recorded scan). Also: label, predictor (the predictor's key),
    n_repeats (of the oracle images, min). Scans with an oracle similarity and a trained predictor, in key
    order, at most ``limit``.
    """
    from pipeline.oracle import similarity as sim
    from pipeline.predictor import train as predictor_train
    from pipeline.recording import calibration
    from pipeline.report.stats import ReportInputError
    from pipeline.report.truth import simulator_truth
    from schemas import oracle, predictor, recording

    out = []
    scans = (oracle.OracleSimilarity.proj() & predictor.TrainedPredictor.proj()).keys(order_by="KEY", limit=limit)
    for scan_key in scans:
        scan = (recording.Scan & scan_key).fetch1()
        oracle_ids, S_oracle = (oracle.OracleSimilarity & scan_key).fetch1("image_ids", "similarity")
        trials = recording.load_trials(scan_key)
        is_oracle = trials["tier"] == "oracle"
        responses = recording.load_responses(scan_key)
        w = oracle.snr_weights(scan_key)
        S_trial, trial_ids = sim.single_repeat_similarity(responses[is_oracle], trials["image_id"][is_oracle], w)
        assert np.array_equal(trial_ids, oracle_ids)
        model_key = (predictor.TrainedPredictor & scan_key).keys(order_by="KEY", limit=1)[0]
        all_ids, pixels = recording.load_images(scan["image_set"], np.unique(trials["image_id"]))
        at = np.searchsorted(all_ids, oracle_ids)
        v = (predictor.TrainedPredictor.Unit * recording.Scan.Unit & model_key).to_arrays(
            "correlation", order_by="unit_index")
        S_model = sim.model_similarity(predictor_train.predict(predictor.load_trained(model_key), pixels[at]), w, v)
        entry = {"label": "{animal_id}-{session}-{scan_idx}".format(**scan_key), "predictor": model_key,
                 "n_repeats": int(np.bincount(np.unique(trials["image_id"][is_oracle], return_inverse=True)[1])
                                  .min()),
                 "oracle": S_oracle, "trial": S_trial, "model": S_model, "truth": None, "truth_rest": None,
                 "data_rest": None, "model_rest": None, "truth_note": ""}
        rest_ids = None
        if (oracle.DataSimilarity & scan_key) and (predictor.ModelSimilarity & model_key):
            data_ids, S_data = (oracle.DataSimilarity & scan_key).fetch1("image_ids", "similarity")
            m_ids, S_m = (predictor.ModelSimilarity & model_key).fetch1("image_ids", "similarity")
            rest_ids = np.intersect1d(data_ids, m_ids)
            d, m = np.searchsorted(data_ids, rest_ids), np.searchsorted(m_ids, rest_ids)
            entry["data_rest"], entry["model_rest"] = S_data[np.ix_(d, d)], S_m[np.ix_(m, m)]
        if scan["source_format"] != "simulator":
            entry["truth_note"] = (f"source_format {scan['source_format']!r}: a recorded scan has no noise-free "
                                   "truth")
        else:
            positions = (recording.Scan.Unit & scan_key).to_arrays("position", order_by="unit_index")
            positions = None if any(p is None for p in positions) else np.stack(positions)
            try:
                rates = simulator_truth(scan["source"], scan["n_neurons"], pixels,
                                        trials["behavior"].mean(0), positions)
            except ReportInputError as err:
                entry["truth_note"] = str(err)
            else:
                entry["truth"] = sim.population_similarity(rates[at], w)
                shown_once = np.setdiff1d(np.arange(len(all_ids)), at)
                try:  # the population's power law (Stringer et al. 2019): PCA of the noise-free rates
                    entry["exponent"] = calibration.powerlaw_exponent(calibration.eigenspectrum(rates[shown_once]))
                except sim.NeuralDataError:  # too few images or neurons for the fit's rank range
                    entry["exponent"] = float("nan")
                if rest_ids is not None:
                    entry["truth_rest"] = sim.population_similarity(rates[np.searchsorted(all_ids, rest_ids)], w)
        out.append(entry)
    return out


def oracle_statistics() -> pd.DataFrame:
    """Per scan and predictor: oracle images, mean oracle r, mean SNR weight, degenerate neurons, predictor v.

    Source: oracle.OracleStats x predictor.TrainedPredictor (mean_correlation).
    """
    from schemas import oracle, predictor

    rows = (oracle.OracleStats * predictor.TrainedPredictor.proj("mean_correlation")).to_dicts()
    return pd.DataFrame([{"scan": f"{r['animal_id']}-{r['session']}-{r['scan_idx']}",
                          "oracle images": r["n_oracle_images"], "mean oracle r": r["mean_oracle_correlation"],
                          "mean SNR weight": r["mean_snr_weight"], "degenerate": r["n_degenerate"],
                          "predictor mean v": r["mean_correlation"]} for r in rows])


def stability() -> list[dict]:
    """Fig 1C's input: the rows of oracle.Stability (one per scan group). Feeds figures.fig1_stability."""
    from schemas import oracle

    return oracle.Stability.to_dicts(order_by="KEY")


def experiments(base: pd.DataFrame) -> list[dict]:
    """The distinct (task, arch, train_name) settings, most classifiers first."""
    if base.empty:
        return []
    counts = base.groupby(EXPERIMENT).size().sort_values(ascending=False, kind="stable")
    return [dict(zip(EXPERIMENT, idx)) for idx in counts.index]


def restrict(df: pd.DataFrame, experiment: dict) -> pd.DataFrame:
    """The rows of ``df`` of one experiment ({column: value}); an empty frame stays empty."""
    if df.empty:
        return df
    mask = np.ones(len(df), bool)
    for k, v in experiment.items():
        mask &= (df[k] == v).to_numpy()
    return df[mask]
