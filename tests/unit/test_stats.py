"""The bootstrap statistics of the report (pipeline.report.stats): medians, hierarchical bootstrap, effects, BH,
verdicts. Synthetic data where the answer is known; no database."""

import time

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from neural_reg import queries
from pipeline.report import conditions as C
from pipeline.report import stats as S


def _distances(conds, n_seeds=4, n=200, seed_sd=0.05, sample_sd=0.3, effects=None, rng=None):
    """queries.score_samples-shaped frame: per classifier the L2 distances of n shared samples (a shared
    per-sample difficulty times the condition's effect, a seed factor and per-sample noise; Linf = L2 / 20)."""
    rng = rng if rng is not None else np.random.default_rng(1)
    effects = effects or {}
    difficulty = rng.lognormal(0, 0.5, n)
    rows = []
    for reg, alpha in conds:
        for s in range(n_seeds):
            d = difficulty * np.exp(effects.get(reg, 0.0) + rng.normal(0, seed_sd)) * rng.lognormal(0, sample_sd, n)
            for norm, scale in (("L2", 1.0), ("Linf", 1 / 20)):
                rows.append(dict(regulariser=reg, alpha=alpha, seed=s, attack_set="set", norm=norm,
                                 sample_idx=np.arange(n), distances=d * scale))
    return pd.DataFrame(rows)


def _pair_metric(rng, n_seeds, n, seed_sd, sample_sd, effect=0.0):
    """One 'median L2' Metric of None and Neural with a true log-ratio ``effect``."""
    frame = _distances([("None", 0.0), ("Neural", 10.0)], n_seeds, n, seed_sd, sample_sd, {"Neural": effect}, rng)
    return S.robustness_metrics(frame[frame["norm"] == "L2"])[0]


CONDS = [("None", 0.0), ("Shuffle", 10.0), ("Pixel", 10.0), ("Neural", 10.0)]


# --------------------------------------------------------------------------------------------- pieces

def test_resampled_median_and_mean_equal_numpy_on_the_same_draws():
    rng = np.random.default_rng(0)
    for n in (7, 8):  # odd and even: the even median averages the two middle values
        values = rng.normal(size=(3, n))
        values[1, 2] = np.inf  # 'not found' stays in the order statistics
        idx = rng.integers(0, n, size=(50, n))
        expected = np.median(values[:, idx], axis=2)
        np.testing.assert_array_equal(S._resampled(values, idx, "median"), expected)
        np.testing.assert_allclose(S._resampled(values, idx, "mean"), values[:, idx].mean(axis=2))


def test_median_ci_contains_the_median_and_narrows_with_more_samples():
    rng = np.random.default_rng(2)
    small, large = rng.exponential(1.0, (1, 50)), rng.exponential(1.0, (1, 2000))
    m, lo, hi = S.median_ci(small)
    assert m[0] == np.median(small) and lo[0] < m[0] < hi[0]
    m2, lo2, hi2 = S.median_ci(large)
    assert (hi2 - lo2)[0] < 0.4 * (hi - lo)[0]  # ~ 1/sqrt(40) as wide
    assert abs(m2[0] - np.log(2)) < hi2[0] - lo2[0]  # the true median of Exp(1) is inside (or near) the CI
    np.testing.assert_array_equal(S.median_ci(small, seed=3)[1], S.median_ci(small, seed=3)[1])  # seeded


def test_benjamini_hochberg_against_a_hand_computation_and_scipy():
    p = np.array([0.01, 0.04, 0.03, 0.005, 0.2])
    # sorted 0.005, 0.01, 0.03, 0.04, 0.2; p m / rank = 0.025, 0.025, 0.05, 0.05, 0.2; running min from the top
    adjusted, rejected = S.benjamini_hochberg(p, 0.05)
    np.testing.assert_allclose(adjusted, [0.025, 0.05, 0.05, 0.025, 0.2])
    assert rejected.tolist() == [True, True, True, True, False]  # k = 4: p_(4) = 0.04 <= 4 x 0.05 / 5
    np.testing.assert_allclose(adjusted, sps.false_discovery_control(p, method="bh"))
    adjusted, rejected = S.benjamini_hochberg([0.01, np.nan, 0.02], 0.05)  # NaN: not in the family (m = 2)
    np.testing.assert_allclose(adjusted, [0.02, np.nan, 0.02])
    assert rejected.tolist() == [True, False, True]


def test_seed_inflation_turns_the_percentile_interval_into_the_t_interval():
    assert np.isclose(S.seed_inflation(2), 12.7062 / 1.95996 * np.sqrt(2), rtol=1e-4)  # 9.17
    assert np.isclose(S.seed_inflation(4), 3.18245 / 1.95996 * np.sqrt(4 / 3), rtol=1e-4)  # 1.87
    assert np.isnan(S.seed_inflation(1))
    # seed level only (no samples): the 95 % CI of a mean over 6 values matches the t interval
    x = np.array([1.0, 1.3, 0.8, 1.1, 1.25, 0.9])
    _, point, boot, _ = S.hierarchical_bootstrap(x, ["a"] * 6, "mean", per_sample=False, n_boot=20000)
    t_half = sps.t.ppf(0.975, 5) * x.std(ddof=1) / np.sqrt(6)
    lo, hi = np.percentile(boot[0], [2.5, 97.5])
    assert point[0] == x.mean() and np.isclose(hi - lo, 2 * t_half, rtol=0.1)


# ------------------------------------------------------------------------------------- known answers

def test_a_clear_effect_is_yes_with_a_ci_excluding_zero():
    metric = _pair_metric(np.random.default_rng(3), 4, 200, 0.05, 0.3, effect=0.3)
    row = S.effect_table([metric]).iloc[0]
    assert (row["regulariser"], row["reference"], row["scale"]) == ("Neural", "None", "log-ratio")
    assert row["verdict"] == "yes" and row["ci_low"] > 0 and row["ci_adj_low"] > 0
    assert abs(row["effect"] - 0.3) < 0.1 and row["ci_low"] < 0.3 < row["ci_high"]
    assert row["p_value"] < 0.01 and row["n_seeds"] == 4 and row["n_samples"] == 200
    worse = S.effect_table([_pair_metric(np.random.default_rng(3), 4, 200, 0.05, 0.3, effect=-0.3)]).iloc[0]
    assert worse["verdict"] == "no" and worse["ci_adj_high"] < 0


@pytest.mark.parametrize("seed_sd, sample_sd, n_seeds, lo, hi", [
    (0.2, 0.05, 8, 0.005, 0.10),   # seeds dominate: near the nominal 5 % (measured 4 %)
    (0.02, 0.4, 4, 0.0, 0.05),     # per-sample noise dominates: conservative (measured 0 %)
])
def test_identical_conditions_are_unresolved_at_about_the_nominal_rate(seed_sd, sample_sd, n_seeds, lo, hi):
    rng = np.random.default_rng(5)
    verdicts = [S.effect_table([_pair_metric(rng, n_seeds, 100, seed_sd, sample_sd)], n_boot=400, seed=r)
                ["verdict"].iloc[0] for r in range(200)]
    decided = np.mean([v != "unresolved" for v in verdicts])
    assert lo <= decided <= hi, decided


def test_the_hierarchical_ci_narrows_with_more_seeds():
    widths = []
    for n_seeds in (2, 4, 8, 16):
        metric = _pair_metric(np.random.default_rng(7), n_seeds, 200, 0.1, 0.3)
        row = S.condition_intervals([metric]).iloc[0]
        assert row["ci_low"] < row["estimate"] < row["ci_high"] and row["n_seeds"] == n_seeds
        widths.append(np.log(row["ci_high"] / row["ci_low"]))
    assert widths[0] > widths[1] > widths[2] > widths[3], widths
    assert widths[0] > 3 * widths[1]  # 2 seeds: the t correction (t_1 = 12.7) makes it very wide


def test_one_seed_gets_no_p_value_and_is_unresolved():
    metric = _pair_metric(np.random.default_rng(3), 1, 200, 0.05, 0.3, effect=1.0)
    row = S.effect_table([metric]).iloc[0]
    assert np.isnan(row["p_value"]) and row["verdict"] == "unresolved" and "1 seed" in row["note"]


def test_bootstrap_is_deterministic_and_seeded():
    metric = _pair_metric(np.random.default_rng(3), 4, 200, 0.05, 0.3)
    a = S.effect_table([metric], seed=1)
    b = S.effect_table([_pair_metric(np.random.default_rng(3), 4, 200, 0.05, 0.3)], seed=1)
    pd.testing.assert_frame_equal(a, b)
    assert S.effect_table([metric], seed=2)["ci_low"].iloc[0] != a["ci_low"].iloc[0]


# ------------------------------------------------------------------------------------------ metrics

def test_robustness_metrics_align_samples_and_average_the_accuracies():
    frame = _distances(CONDS, n_seeds=2, n=20)
    original = frame.at[2, "distances"].copy()  # None, seed 1, L2
    # this classifier lists its samples in another order and lacks sample 19: aligned, 19 left out for all
    perm = np.random.default_rng(0).permutation(19)
    frame.at[2, "sample_idx"], frame.at[2, "distances"] = perm, original[perm]
    noise = pd.DataFrame([dict(regulariser=r, alpha=a, seed=s, std=std, accuracy=acc)
                          for r, a in CONDS for s in range(2) for std, acc in ((0.0, 0.99), (0.1, 0.8), (0.3, 0.4))])
    corr = pd.DataFrame([dict(regulariser=r, alpha=a, seed=s, corruption=c, severity=v, accuracy=0.5 + 0.1 * v)
                         for r, a in CONDS for s in range(2) for c in ("fog", "blur") for v in (1, 3)])
    metrics = S.robustness_metrics(frame, noise, corr)
    assert [m.name for m in metrics] == ["median L2", "median Linf", "noise acc", "corruption acc"]
    l2 = metrics[0]
    assert l2.values.shape == (8, 19) and l2.note == "1 sample(s) not attacked on every classifier left out"
    np.testing.assert_array_equal(l2.values[1], original[:19])  # row 1 of L2 = None seed 1, in sample order
    np.testing.assert_allclose(metrics[2].values[:, 0], 0.6)  # the non-zero stds: (0.8 + 0.4) / 2
    np.testing.assert_allclose(metrics[3].values[:, 0], 0.7)  # (0.6 + 0.8) / 2 over corruptions x severities
    assert metrics[2].scale == "linear" and metrics[2].n_samples == 0


def test_robustness_metrics_reject_unshared_samples():
    frame = _distances(CONDS[:2], n_seeds=1, n=5)
    frame.at[0, "sample_idx"] = np.arange(5) + 100
    with pytest.raises(S.ReportInputError, match="share no attacked sample"):
        S.robustness_metrics(frame)


def test_effect_table_pairs_each_condition_with_none_and_the_controls_at_the_same_alpha():
    conds = CONDS + [("Neural", 1.0), ("Pixel", 1.0), (C.ADVERSARIAL, 0.0)]
    metrics = S.robustness_metrics(_distances(conds, n_seeds=3, n=50))
    table = S.effect_table(metrics[:1])
    pairs = set(zip(table["regulariser"], table["alpha"], table["reference"], table["reference_alpha"]))
    assert ("Neural", 10.0, "Pixel", 10.0) in pairs and ("Neural", 1.0, "Pixel", 1.0) in pairs
    assert ("Neural", 10.0, "Pixel", 1.0) not in pairs  # never across alphas
    assert (C.ADVERSARIAL, 0.0, "None", 0.0) in pairs and not table["reference"].eq(C.ADVERSARIAL).any()
    assert ("Pixel", 10.0, "Shuffle", 10.0) in pairs and ("Shuffle", 10.0, "Pixel", 10.0) not in pairs
    # alpha 0: Adv-None; alpha 1: Pixel, Neural vs None + Neural vs Pixel; alpha 10: 3 vs None, 2 vs Shuffle, 1
    assert len(table) == len(pairs) == 1 + 3 + 6
    # FCR-adjusted CIs (level 1 - R q / m >= 1 - q) are at least as wide as the marginal ones; p_adjusted >= p
    assert (table["ci_adj_high"] - table["ci_adj_low"] >= table["ci_high"] - table["ci_low"] - 1e-12).all()
    assert (table["p_adjusted"] >= table["p_value"] - 1e-12).all()


# ----------------------------------------------------------------------------------------- verdicts

def test_verdict_table_rows_columns_and_cells():
    conds = [("None", 0.0), ("Shuffle", 10.0), ("Pixel", 10.0), ("Deflated", 10.0), ("Neural", 10.0),
             (C.ADVERSARIAL, 0.0)]
    metrics = S.robustness_metrics(_distances(conds, effects={"Neural": 0.4, C.ADVERSARIAL: 0.8}))
    claims = S.claim_effects(metrics)
    table = S.verdict_table(claims)
    assert list(table.index) == ["Neural beats None", "Neural beats Shuffle", "Neural beats Pixel",
                                 "Neural beats Deflated", "Adversarial (PGD) beats None"]
    assert list(table.columns) == ["median L2", "median Linf"] and table.index.name == "claim"
    assert len(claims) == 10  # the family: 5 claims x 2 metrics, nothing else
    cell = table.loc["Adversarial (PGD) beats None", "median L2"]
    row = claims[(claims["regulariser"] == C.ADVERSARIAL) & (claims["metric"] == "median L2")].iloc[0]
    assert cell == f"yes: {100 * np.expm1(row['effect']):+.0f}% [{100 * np.expm1(row['ci_adj_low']):+.0f}%, " \
                   f"{100 * np.expm1(row['ci_adj_high']):+.0f}%]"
    assert abs(row["effect"] - 0.8) < 0.1
    assert table.loc["Neural beats Pixel", "median Linf"].startswith("yes: +")


def test_verdict_table_without_a_positive_control_says_not_trained_and_alphas_when_several():
    conds = [("None", 0.0), ("Pixel", 1.0), ("Neural", 1.0), ("Pixel", 10.0), ("Neural", 10.0)]
    noise = pd.DataFrame([dict(regulariser=r, alpha=a, seed=s, std=std, accuracy=0.5 + 0.02 * s)
                          for r, a in conds for s in range(3) for std in (0.0, 0.2)])
    table = S.verdict_table(S.claim_effects(S.robustness_metrics(noise=noise)))
    assert list(table.index) == ["Neural (α=1) beats None", "Neural (α=1) beats Pixel (α=1)",
                                 "Neural (α=10) beats None", "Neural (α=10) beats Pixel (α=10)",
                                 "Adversarial (PGD) beats None"]
    assert (table.loc["Adversarial (PGD) beats None"] == "not trained").all()
    assert table.loc["Neural (α=1) beats None", "noise acc"].startswith("unresolved: +0.0 pp")  # identical


def test_format_effect_percent_and_points():
    row = dict(effect=np.log(1.31), ci_adj_low=np.log(1.12), ci_adj_high=np.log(1.52), verdict="yes",
               scale="log-ratio")
    assert S.format_effect(row) == "yes: +31% [+12%, +52%]"
    row = dict(effect=-0.041, ci_adj_low=-0.07, ci_adj_high=-0.012, verdict="no", scale="difference")
    assert S.format_effect(row) == "no: -4.1 pp [-7.0 pp, -1.2 pp]"
    assert S.format_effect(dict(row, effect=np.nan, verdict="unresolved")) == "unresolved"


def test_ten_conditions_four_seeds_two_hundred_samples_in_under_two_seconds():
    conds = [("None", 0.0), (C.ADVERSARIAL, 0.0)] + [(r, 10.0) for r in (
        "Shuffle", "Pixel", "Random", "VGG", "Contrast energy", "Deflated", "Neural (truth)", "Neural")]
    frame = _distances(conds, n_seeds=4, n=200)
    noise = pd.DataFrame([dict(regulariser=r, alpha=a, seed=s, std=std, accuracy=0.6)
                          for r, a in conds for s in range(4) for std in (0.0, 0.1)])
    start = time.perf_counter()
    metrics = S.robustness_metrics(frame, noise)
    S.condition_intervals(metrics), S.effect_table(metrics), S.verdict_table(S.claim_effects(metrics))
    assert time.perf_counter() - start < 2.0


# ---------------------------------------------------------------------------------- conditions, labels

def test_adversarial_training_is_its_own_condition():
    pgd = {"norm": "Linf", "eps": 0.03, "steps": 5, "rel_stepsize": 0.4}
    assert C.classifier_label("none", pgd) == "Adversarial (PGD)" == C.ADVERSARIAL
    assert C.classifier_label("none", None) == "None" and C.classifier_label("neural-model", {}) == "Neural"
    assert C.classifier_label("neural-model", pgd) == "Neural + Adversarial (PGD)"
    assert C.classifier_label("none", pgd, detail=True) == "Adversarial (PGD, Linf ε=0.03)"
    assert C.order_regularisers(["Neural", C.ADVERSARIAL, "Deflated", "None"]) == \
        ["None", C.ADVERSARIAL, "Deflated", "Neural"]
    assert {"Deflated", "Contrast energy", "Neural (truth)", "Robust net"} <= set(S.CONTROL_REFERENCES)


def test_schedules_put_the_adversarial_config_in_its_plain_twins_experiment():
    plain = {"epochs": 8, "lr": 0.1, "adversarial": None}
    configs = [("h1", "demo-cpu", plain), ("h2", "demo-cpu-pgd", {**plain, "adversarial": {"eps": 0.03}}),
               ("h3", "other-pgd", {"epochs": 9, "lr": 0.1, "adversarial": {"eps": 0.03}}),
               ("h4", "old", {"epochs": 8, "lr": 0.2})]  # stored before the key existed
    out = queries.schedules(configs)
    assert out["h1"] == ("demo-cpu", None) and out["h2"] == ("demo-cpu", {"eps": 0.03})
    assert out["h3"] == ("other-pgd", {"eps": 0.03})  # no plain twin: its own experiment
    assert out["h4"] == ("old", None)
    base = pd.DataFrame({"task": "t", "arch": "a", "train_name": "demo-cpu", "kind": ["none", "none", "none"],
                         "adversarial": [None, {"eps": 0.03, "norm": "Linf"}, {"eps": 0.1, "norm": "Linf"}]})
    assert queries.label_conditions(base) == ["None", "Adversarial (PGD, Linf ε=0.03)",
                                              "Adversarial (PGD, Linf ε=0.1)"]  # two configs: told apart


def test_two_adversarial_configs_are_two_positive_control_rows():
    small, large = "Adversarial (PGD, Linf ε=0.03)", "Adversarial (PGD, Linf ε=0.1)"
    assert C.is_adversarial(small) and C.is_adversarial(C.ADVERSARIAL) and not C.is_adversarial("Neural")
    conds = [("None", 0.0), ("Neural", 10.0), (small, 0.0), (large, 0.0)]
    metrics = S.robustness_metrics(_distances(conds, n_seeds=3, n=60, effects={small: 0.3, large: 0.9}))
    table = S.verdict_table(S.claim_effects(metrics))
    assert list(table.index) == ["Neural beats None", f"{small} beats None", f"{large} beats None"]
    assert "not trained" not in table.to_numpy()


def test_one_seed_cells_say_so_instead_of_a_zero_width_ci():
    noise = pd.DataFrame([dict(regulariser=r, alpha=a, seed=0, std=std, accuracy=acc)
                          for r, a, acc in (("None", 0.0, 0.5), ("Neural", 10.0, 0.45)) for std in (0.0, 0.2)])
    metrics = S.robustness_metrics(noise=noise)
    intervals = S.condition_intervals(metrics)
    assert intervals["ci_low"].isna().all() and intervals["estimate"].tolist() == [0.5, 0.45]
    assert S.verdict_table(S.claim_effects(metrics)).loc["Neural beats None", "noise acc"] == \
        "unresolved (1 seed): -5.0 pp, no CI"
