"""Statistics for the report: is a regulariser's gain real, and is it a gain of *neural* data?

Every classifier condition is trained with several seeds (5 in the paper). Two parts:

1. Paired t tests on the seed (:func:`paired_comparison`, :func:`paired_comparisons`). Two conditions trained
   with the same seed share the data order and initialisation noise that the seed fixes, so they are compared
   *paired on the seed*: the difference per seed, its mean, its paired effect size (Cohen's d_z = mean diff / sd
   of diffs) and a paired t test (scipy.stats.ttest_rel), with Benjamini-Hochberg adjusted p values.

2. Hierarchical bootstrap effects and verdicts (:func:`robustness_metrics`, :func:`condition_intervals`,
   :func:`effect_table`, :func:`claim_effects`, :func:`verdict_table`), on the per-sample data: every classifier
   is attacked on the same test samples (robustness.RobustnessScore.Norm ``sample_idx``), so conditions are paired
   *by test sample*.

The point of the controls: a gain that a Pixel or a Shuffle target also gives is not a gain of neural data
(Attias et al. 2024 report that a pixel-similarity target gives similar robustness gains). So every regulariser
is compared against None (alpha = 0) AND against the controls (:data:`CONTROL_REFERENCES`; see
:mod:`pipeline.report.conditions`) *at the same alpha*. Only a gain over the controls is evidence for the
paper's claim; the positive control (an adversarially trained classifier, 'Adversarial (PGD)', against None)
shows whether the evaluation can see a gain at all.

The bootstrap procedure, exactly (all four metrics are "higher is better")
-------------------------------------------------------------------------
Metrics (:func:`robustness_metrics`), per classifier k (a condition = (regulariser, alpha), one row per seed):

- ``median L2`` / ``median Linf``: m_k = median over the N attacked test samples of the minimal perturbation
  (RobustnessScore.Norm ``distances``, aligned on ``sample_idx``; 0 = misclassified, inf = not found). Effects
  are log-ratios, shown as a percent change.
- ``noise acc``: mean over the noise config's non-zero stds of the accuracy (NoiseRobustness). Effects are
  differences, shown in percentage points.
- ``corruption acc``: mean over every corruption and severity of the accuracy (CorruptionRobustness.Score).
  Differences, in percentage points.

Only the perturbation metrics have per-sample data; the accuracies are stored per classifier, so for them the
sample level below is skipped (their sample noise is shared by every classifier: same samples, same noise draw).

Condition value: V_c = mean over its seeds of m_k. One bootstrap replicate b (B = :data:`N_BOOT`, generator
``numpy.random.default_rng(seed)``, so the result is deterministic):

1. samples: draw N test-sample indices with replacement, ONE draw shared by every classifier of every condition
   (the pairing by sample), and recompute every m_k on them: m_k^b;
2. seeds: independently per condition, draw its n_c seeds with replacement; let u_c^b be the mean of their m_k^b
   and w_c^b the mean of m_k^b over all its seeds. The replicate is
   V_c^b = w_c^b + f(n_c) (u_c^b - w_c^b), on the log scale for the log-ratio metrics (so V_c^b > 0), where
   f(n) = t_{n-1, (1+conf)/2} / z_{(1+conf)/2} * sqrt(n / (n - 1)) (:func:`seed_inflation`): the plain bootstrap
   of a mean over n seeds has (n-1)/n of its variance and normal tails; f makes the seed level's percentile
   interval the t interval (e.g. f(2) = 9.2, f(4) = 1.9, f(10) = 1.2). A condition with one seed has no seed
   level (f undefined): its comparisons get no p value (verdict 'unresolved', note says so).

Both levels are resampled, so the classifier-specific sample noise enters twice (the known conservatism of the
hierarchical bootstrap): the procedure errs towards 'unresolved'. On synthetic identical conditions
(tests/unit/test_stats.py) a verdict other than 'unresolved' comes out for about 2-4 % of data sets when the
seed variation dominates (4-8 seeds), and for about none when the per-sample noise dominates; a plain bootstrap
over 2 seeds would give one for about a quarter.

Per condition, the CI of V_c is the percentile interval of V_c^b (:func:`condition_intervals`). Per comparison
(condition c against reference r, both from the same replicates, so the shared samples cancel):
effect E = log V_c - log V_r (or V_c - V_r), its replicates E^b, the percentile CI at ``confidence``, and the
two-sided bootstrap p = min(1, 2 min((1 + #{E^b <= 0}) / (B + 1), (1 + #{E^b >= 0}) / (B + 1))).
The family (all rows of one :func:`effect_table` call, e.g. the cells of the verdict table) is corrected with
Benjamini-Hochberg at q = 1 - confidence (:func:`benjamini_hochberg`): R of the m finite p values are rejected,
and every comparison gets the false-coverage-rate adjusted interval at level 1 - max(R, 1) q / m (Benjamini &
Yekutieli 2005; ``ci_adj_low``/``ci_adj_high``). Verdict: 'yes' (beats, at 95 % after correction) when
rejected and the adjusted CI lies above 0; 'no' (worse) when rejected and it lies below 0; else 'unresolved'.

Inputs are long ("tidy") pandas DataFrames, one row per (condition, seed) and metric, e.g.

    regulariser  alpha  seed  accuracy
    'None'       0.0    0     0.21
    'Neural'     10.0   0     0.48
    ...

Bad input raises :class:`ReportInputError` (a ValueError) naming the column and the fix.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from pipeline.errors import NeuralRegError

from .conditions import ADVERSARIAL, BASELINE, CONTROLS, NEURAL, condition_label, is_adversarial, order_regularisers

__all__ = ["ReportInputError", "require_columns", "require_unique", "summary_with_spread", "paired_comparison",
           "paired_comparisons", "CONTROL_REFERENCES", "COMPARISON_COLUMNS", "N_BOOT", "BOOT_SEED", "METRICS",
           "benjamini_hochberg", "seed_inflation", "median_ci", "hierarchical_bootstrap", "Metric",
           "robustness_metrics", "condition_intervals", "effect_table", "claim_pairs", "claim_effects",
           "verdict_table", "format_effect"]

# The references a neural regulariser must beat: no regulariser, then the controls without neural content.
CONTROL_REFERENCES = (BASELINE,) + CONTROLS
CONFIDENCE = 0.95
# the statistics of one paired comparison, in table order (after the condition and reference columns)
COMPARISON_COLUMNS = ["n_pairs", "n_unpaired", "mean", "mean_reference", "mean_diff", "ci_low", "ci_high",
                      "sd_diff", "d_z", "t", "p_value"]

NOTE_TOO_FEW = "fewer than 2 paired seeds: no test possible (d_z, t, p are NaN)"
NOTE_ZERO_SD = "all paired differences are equal (sd 0): d_z and the t test are undefined (NaN)"


class ReportInputError(NeuralRegError):
    """Bad input to the report layer: the message names the field and the fix."""


# ------------------------------------------------------------------------------------------------- checks

def require_columns(df, columns: Iterable[str], name: str = "df", numeric: Iterable[str] = ()) -> pd.DataFrame:
    """Check that ``df`` is a non-empty DataFrame with ``columns``; those in ``numeric`` must be finite numbers.

    Returns ``df`` unchanged. Raises ReportInputError naming the missing / bad column.
    """
    if not isinstance(df, pd.DataFrame):
        raise ReportInputError(f"'{name}': expected a pandas DataFrame, got {type(df).__name__}. "
                               f"Fix: pass a DataFrame with columns {list(columns)}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ReportInputError(f"'{name}': missing column(s) {missing}; it has {list(df.columns)}. "
                               f"Fix: rename or add them (expected {list(columns)})")
    if len(df) == 0:
        raise ReportInputError(f"'{name}': no rows. Fix: pass at least one result row")
    for c in numeric:
        values = pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            raise ReportInputError(f"'{name}': column '{c}' has {int(bad.sum())} missing, non-numeric or "
                                   f"infinite value(s). Fix: drop or repair those rows first")
    return df


def require_unique(df: pd.DataFrame, keys: Sequence[str], name: str = "df") -> None:
    """Raise if two rows share ``keys`` (e.g. two results for one regulariser and seed)."""
    dup = df.duplicated(list(keys), keep=False)
    if dup.any():
        example = df.loc[dup, list(keys)].iloc[0].to_dict()
        raise ReportInputError(f"'{name}': {int(dup.sum())} rows share the key {list(keys)} (e.g. {example}). "
                               "Fix: keep one row per key (filter to one configuration, or average first)")


def _as_list(by) -> list[str]:
    return [by] if isinstance(by, str) else list(by)


# --------------------------------------------------------------------------------------------- summaries

def summary_with_spread(df: pd.DataFrame, value: str, by) -> pd.DataFrame:
    """Mean, SEM and n of ``value`` per group.

    df: one row per observation (e.g. per seed). value: numeric column. by: a column name or a list of them.
    Returns a DataFrame with the ``by`` columns, then ``mean``, ``sem`` (sample sd with ddof = 1 over sqrt(n);
    NaN when n = 1) and ``n``, one row per group in sorted group order.
    """
    keys = _as_list(by)
    require_columns(df, keys + [value], "df", numeric=[value])
    x = df[keys].copy()
    x["_v"] = pd.to_numeric(df[value]).astype(np.float64)
    g = x.groupby(keys, sort=True, dropna=False)["_v"]
    out = pd.DataFrame({"mean": g.mean(), "sd": g.std(ddof=1), "n": g.size()})
    out["sem"] = out["sd"] / np.sqrt(out["n"])
    return out[["mean", "sem", "n"]].reset_index()


# ---------------------------------------------------------------------------------------------- pairing

def _paired_row(x: np.ndarray, x_ref: np.ndarray, confidence: float) -> dict:
    """Statistics of one paired comparison: x and x_ref hold one entry per shared seed, diff = x - x_ref."""
    diff = x - x_ref
    n = int(diff.size)
    row = {"n_pairs": n,
           "mean": float(x.mean()) if n else np.nan,
           "mean_reference": float(x_ref.mean()) if n else np.nan,
           "mean_diff": float(diff.mean()) if n else np.nan,
           "ci_low": np.nan, "ci_high": np.nan,
           "sd_diff": float(diff.std(ddof=1)) if n >= 2 else np.nan,
           "d_z": np.nan, "t": np.nan, "p_value": np.nan, "note": ""}
    if n < 2:
        row["note"] = NOTE_TOO_FEW
        return row
    # sd 0 (e.g. identical results): scipy would warn and return NaN/inf; say it plainly instead.
    if row["sd_diff"] <= 1e-12 * max(1.0, float(np.abs(diff).max())):
        row["note"] = NOTE_ZERO_SD
        return row
    res = sps.ttest_rel(x, x_ref)
    ci = res.confidence_interval(confidence_level=confidence)
    row.update(d_z=row["mean_diff"] / row["sd_diff"], t=float(res.statistic), p_value=float(res.pvalue),
               ci_low=float(ci.low), ci_high=float(ci.high))
    return row


def _compare(table: pd.DataFrame, cond, reference, confidence: float) -> dict:
    """One comparison from a (pair_on x condition) table: cond against reference on the seeds both have."""
    both = table[cond].notna() & table[reference].notna()
    row = _paired_row(table.loc[both, cond].to_numpy(), table.loc[both, reference].to_numpy(), confidence)
    row["n_unpaired"] = int((table[cond].notna() & ~both).sum())
    if row["n_unpaired"]:
        extra = f"{row['n_unpaired']} seed(s) without a {reference} result left out"
        row["note"] = f"{row['note']}; {extra}" if row["note"] else extra
    return row


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ReportInputError(f"'confidence': expected a level in (0, 1), got {confidence!r}. Fix: e.g. 0.95")


def paired_comparison(df: pd.DataFrame, metric: str, reference: str, by: str = "regulariser",
                      pair_on: str = "seed", confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Compare each condition with ``reference``, paired on ``pair_on`` (the seed).

    df: columns ``by`` (condition name, e.g. 'Neural'), ``pair_on`` (e.g. seed), ``metric`` (finite numbers);
    one row per (by, pair_on), so one strength per condition (for an alpha sweep use :func:`paired_comparisons`).
    For each condition other than the reference, only the seeds both have are used.

    Returns one row per condition (in order of first appearance) with columns:
      ``by``, reference, n_pairs, n_unpaired (the condition's seeds the reference lacks), mean (the condition,
      over the paired seeds), mean_reference, mean_diff (condition - reference), ci_low and ci_high (the
      ``confidence`` t interval of mean_diff), sd_diff (ddof = 1), d_z (= mean_diff / sd_diff, Cohen's paired
      effect size), t and p_value (two-sided, scipy.stats.ttest_rel), note (why a value is NaN, or which seeds
      were dropped; '' when nothing to say).
    With n_pairs < 2 no test is possible: ci, d_z, t and p_value are NaN and the note says so.
    """
    _check_confidence(confidence)
    require_columns(df, [by, pair_on, metric], "df", numeric=[metric])
    require_unique(df, [by, pair_on], "df")
    conditions = list(pd.unique(df[by]))
    if reference not in conditions:
        raise ReportInputError(f"reference {reference!r} is not a value of column '{by}' (values: {conditions}). "
                               "Fix: pass one of them, or add the reference condition's results")
    table = df.pivot(index=pair_on, columns=by, values=metric).astype(np.float64)
    rows = [{by: cond, "reference": reference, **_compare(table, cond, reference, confidence)}
            for cond in conditions if cond != reference]
    return pd.DataFrame(rows, columns=[by, "reference"] + COMPARISON_COLUMNS + ["note"])


def paired_comparisons(df: pd.DataFrame, metric: str, references: Sequence[str] = CONTROL_REFERENCES,
                       by: str = "regulariser", pair_on: str = "seed", alpha: str = "alpha",
                       within: Sequence[str] = (), baseline: str = BASELINE, confidence: float = CONFIDENCE,
                       fdr_method: str = "bh") -> pd.DataFrame:
    """Every condition against None and against each control at the same alpha, paired on the seed, once per pair.

    df: columns ``by`` (regulariser label), ``pair_on`` (seed), ``metric`` (finite numbers), optionally
    ``alpha`` (the strength; without it every row is one strength) and the ``within`` columns (e.g.
    ['attack_set', 'norm']: compared only inside each of their groups, never across); one row per
    (within, by, alpha, pair_on).

    Inside each ``within`` group and for each alpha of the regularised conditions, the conditions at that alpha
    plus the ``baseline`` (None, alpha 0, the same rows for every alpha) are compared pairwise with each
    reference present: first every condition against the first reference (None), then every remaining one
    against the next (Shuffle), and so on; a pair of two references appears once (the later against the
    earlier). References absent from ``df`` are skipped; if none is present, raises.

    Returns one row per comparison: the ``within`` columns, ``alpha`` (the compared condition's) and
    ``reference_alpha`` when df has alpha, ``by``, reference, the columns of :func:`paired_comparison`, and
    p_adjusted: the p values adjusted over this whole table for the false discovery rate
    (scipy.stats.false_discovery_control, ``fdr_method`` 'bh' Benjamini-Hochberg or 'by'; NaN where p is).
    """
    _check_confidence(confidence)
    within = list(within)
    has_alpha = alpha is not None and alpha in df.columns
    alpha_cols = [alpha] if has_alpha else []
    require_columns(df, within + [by, pair_on, metric] + alpha_cols, "df", numeric=[metric] + alpha_cols)
    require_unique(df, within + [by] + alpha_cols + [pair_on], "df")
    present = [r for r in references if r in set(df[by])]
    if not present:
        raise ReportInputError(f"none of the references {list(references)} is a value of column '{by}'. "
                               "Fix: add their results, or pass references=[...] that exist")
    rows = []
    for group_key, group in (df.groupby(within, sort=True, dropna=False) if within else [((), df)]):
        group_values = dict(zip(within, group_key if isinstance(group_key, tuple) else (group_key,)))
        is_base = (group[by] == baseline).to_numpy()
        base = group[is_base]
        if has_alpha and base[alpha].nunique() > 1:
            raise ReportInputError(f"'df': the baseline {baseline!r} has several alphas "
                                   f"{sorted(base[alpha].unique())} in {group_values or 'the table'}. "
                                   "Fix: keep its alpha-0 rows only")
        others = group[~is_base]
        levels = sorted(others[alpha].unique()) if has_alpha else [None]
        for level in levels:
            at = others if level is None else others[others[alpha] == level]
            sub = pd.concat([base, at])
            table = sub.pivot(index=pair_on, columns=by, values=metric).astype(np.float64)
            alpha_of = dict(zip(sub[by], sub[alpha])) if has_alpha else {}
            conds = order_regularisers(sub[by])
            refs = [r for r in present if r in conds]
            for k, ref in enumerate(refs):
                for cond in conds:
                    if cond == ref or cond in refs[:k]:  # itself, or a pair already compared
                        continue
                    row = dict(group_values)
                    if has_alpha:
                        row.update({alpha: float(alpha_of[cond]), "reference_alpha": float(alpha_of[ref])})
                    row.update({by: cond, "reference": ref, **_compare(table, cond, ref, confidence)})
                    rows.append(row)
    columns = (within + ([alpha, "reference_alpha"] if has_alpha else []) + [by, "reference"]
               + COMPARISON_COLUMNS + ["p_adjusted", "note"])
    out = pd.DataFrame(rows, columns=columns)
    p = out["p_value"].to_numpy(np.float64)
    finite = np.isfinite(p)
    adjusted = np.full(len(out), np.nan)
    if finite.any():
        adjusted[finite] = sps.false_discovery_control(p[finite], method=fdr_method)
    out["p_adjusted"] = adjusted
    return out


# ---------------------------------------------------------------------------- bootstrap effects and verdicts

N_BOOT = 2000        # bootstrap replicates
BOOT_SEED = 0        # numpy.random.default_rng seed: every table is reproducible
VERDICT_YES, VERDICT_NO, VERDICT_UNRESOLVED = "yes", "no", "unresolved"


class Metric:
    """One robustness metric of one configuration, per classifier: the input of the bootstrap.

    name : str, e.g. 'median L2' (with ' [config]' when an experiment has several configs of its source)
    rows : DataFrame (K rows): regulariser, alpha, seed of each classifier
    values : (K, N) float64: per classifier and test sample (columns: the same samples for every row); N = 1 for
        a per-classifier scalar (``per_sample`` False)
    statistic : 'median' or 'mean' over the samples; scale : 'log' (effects are log-ratios) or 'linear'
    config : the configuration's name (attack set, noise or corruption config) or None
    note : what was dropped while aligning ('' when nothing)
    """

    def __init__(self, name, rows, values, statistic="median", scale="log", per_sample=True, config=None,
                 note=""):
        values = np.asarray(values, np.float64)
        if values.ndim == 1:
            values = values[:, None]
        if values.ndim != 2 or len(rows) != values.shape[0]:
            raise ReportInputError(f"metric {name!r}: values must be (classifiers, samples) with one row per "
                                   f"classifier; got {values.shape} for {len(rows)} rows. Fix: align them")
        if statistic not in ("median", "mean") or scale not in ("log", "linear"):
            raise ReportInputError(f"metric {name!r}: statistic {statistic!r} / scale {scale!r}. Fix: statistic "
                                   "'median' or 'mean', scale 'log' or 'linear'")
        self.name, self.values, self.statistic, self.scale = name, values, statistic, scale
        self.rows = rows.reset_index(drop=True)
        self.per_sample, self.config, self.note = bool(per_sample and values.shape[1] > 1), config, note
        self.cache: dict = {}

    @property
    def n_samples(self) -> int:
        return int(self.values.shape[1]) if self.per_sample else 0

    def __repr__(self):
        return f"Metric({self.name!r}, {self.values.shape[0]} classifiers, {self.n_samples} samples)"


def benjamini_hochberg(p, q: float = 1 - CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """Benjamini-Hochberg step-up over a family of p values.

    p : (m,) p values; NaN entries are not part of the family (NaN adjusted, never rejected).
    Returns (adjusted (m,), rejected (m,) bool): adjusted_(i) = min over j >= i of p_(j) m / j (capped at 1), in
    the sorted order, mapped back; rejected = adjusted <= q (the same as rejecting p_(1..k), k the largest i with
    p_(i) <= i q / m).
    """
    p = np.asarray(p, np.float64)
    adjusted, rejected = np.full(p.shape, np.nan), np.zeros(p.shape, bool)
    ok = np.isfinite(p)
    m = int(ok.sum())
    if m:
        pv = p[ok]
        order = np.argsort(pv, kind="stable")
        ranked = pv[order] * m / np.arange(1, m + 1)
        adj = np.empty(m)
        adj[order] = np.minimum(np.minimum.accumulate(ranked[::-1])[::-1], 1.0)
        adjusted[ok], rejected[ok] = adj, adj <= q
    return adjusted, rejected


def seed_inflation(n: int, confidence: float = CONFIDENCE) -> float:
    """f(n) = t_{n-1, (1+c)/2} / z_{(1+c)/2} * sqrt(n / (n-1)): the factor on a seed-level bootstrap deviation
    that turns the percentile interval of a mean over n seeds into its t interval (NaN for n < 2)."""
    if n < 2:
        return np.nan
    level = (1 + confidence) / 2
    return float(sps.t.ppf(level, n - 1) / sps.norm.ppf(level) * np.sqrt(n / (n - 1)))


def _statistic(values: np.ndarray, statistic: str, axis: int = -1) -> np.ndarray:
    return np.median(values, axis=axis) if statistic == "median" else values.mean(axis=axis)


def _resampled(values: np.ndarray, idx: np.ndarray, statistic: str) -> np.ndarray:
    """(K, b) statistic of each row of values (K, N) on each row of sample indices idx (b, N).

    Exact and vectorised without materialising (K, b, N): a draw is its counts per sample (b, N); the mean is
    counts @ values.T / N, the median the middle order statistic(s) read off the cumulative counts in each row's
    sorted order (the average of the two middle ones for even N, as numpy.median).
    """
    K, N = values.shape
    b = len(idx)
    counts = np.bincount((np.arange(b)[:, None] * N + idx).ravel(), minlength=b * N).reshape(b, N)
    if statistic == "mean":
        if not np.isfinite(values).all():  # 0 x inf in a product: average the drawn values themselves
            return np.stack([values[k][idx].mean(axis=1) for k in range(K)])
        return (counts @ values.T).T / N
    order = np.argsort(values, axis=1, kind="stable")
    ordered = np.take_along_axis(values, order, axis=1)
    out = np.empty((K, b))
    lower, upper = (N - 1) // 2, N // 2
    for k in range(K):
        cum = np.cumsum(counts[:, order[k]], axis=1)
        a, c = ordered[k, (cum > lower).argmax(axis=1)], ordered[k, (cum > upper).argmax(axis=1)]
        with np.errstate(invalid="ignore"):
            out[k] = np.where(a == c, a, (a + c) / 2)  # inf stays inf
    return out


def median_ci(distances, confidence: float = CONFIDENCE, n_boot: int = N_BOOT, seed: int = BOOT_SEED):
    """Per classifier: the median over its samples and its bootstrap percentile CI (samples resampled with
    replacement, one draw shared by all rows).

    distances : (K, N) or (N,) minimal perturbations (inf allowed). Returns (median, ci_low, ci_high), each (K,).
    """
    _check_confidence(confidence)
    d = np.atleast_2d(np.asarray(distances, np.float64))
    if d.shape[1] == 0:
        raise ReportInputError("'distances': no samples. Fix: pass at least one attacked sample per classifier")
    idx = np.random.default_rng(seed).integers(0, d.shape[1], size=(n_boot, d.shape[1]))
    boot = _resampled(d, idx, "median")
    tail = 100 * (1 - confidence) / 2
    with np.errstate(invalid="ignore"):
        lo, hi = np.percentile(boot, [tail, 100 - tail], axis=1)
    return np.median(d, axis=1), lo, hi


def hierarchical_bootstrap(values, condition, statistic: str = "median", scale: str = "linear",
                           per_sample: bool = True, n_boot: int = N_BOOT, seed: int = BOOT_SEED,
                           confidence: float = CONFIDENCE):
    """Condition values V_c and their bootstrap replicates V_c^b (module docstring, steps 1-2).

    values : (K, N) per classifier and test sample, the same samples in every row (N = 1, or ``per_sample``
        False, for one value per classifier: no sample level).
    condition : (K,) condition of each row (any hashable labels; seeds are the rows of one label).
    statistic : 'median' or 'mean' over the samples. scale : 'log' (seed level on log V) or 'linear'.
    Returns (labels (G,) in order of first appearance, point (G,) = mean over seeds of the statistic on all
    samples, boot (G, n_boot) replicates, n_seeds (G,)).
    """
    _check_confidence(confidence)
    values = np.asarray(values, np.float64)
    values = values[:, None] if values.ndim == 1 else values
    codes, labels = pd.factorize(pd.Series(list(condition), dtype=object), sort=False)
    if len(codes) != values.shape[0]:
        raise ReportInputError(f"'condition': {len(codes)} labels for {values.shape[0]} rows of values. Fix: one "
                               "label per classifier")
    rng = np.random.default_rng(seed)
    K, N = values.shape
    full = _statistic(values, statistic)
    if per_sample and N > 1:
        per = _resampled(values, rng.integers(0, N, size=(n_boot, N)), statistic)
    else:
        per = np.repeat(full[:, None], n_boot, axis=1)
    G = len(labels)
    point, boot, n_seeds = np.empty(G), np.empty((G, n_boot)), np.zeros(G, int)
    log = scale == "log"
    cols = np.arange(n_boot)[:, None]
    for g in range(G):
        rows = np.flatnonzero(codes == g)
        n = n_seeds[g] = len(rows)
        point[g] = full[rows].mean()
        M = per[rows]                                    # (n, B)
        if n == 1:
            boot[g] = M[0]
            continue
        picked = M[rng.integers(0, n, size=(n_boot, n)), cols].mean(axis=1)  # (B,)
        centre = M.mean(axis=0)
        f = seed_inflation(n, confidence)
        if log:
            with np.errstate(divide="ignore", invalid="ignore"):
                boot[g] = np.exp(np.log(centre) + f * (np.log(picked) - np.log(centre)))
        else:
            boot[g] = centre + f * (picked - centre)
    return np.asarray(labels, dtype=object), point, boot, n_seeds


# ------------------------------------------------------------------------------------------ metrics

METRICS = ("median L2", "median Linf", "noise acc", "corruption acc")


def _config_suffix(df: pd.DataFrame, column: str, value) -> str:
    return f" [{value}]" if column in df.columns and df[column].nunique() > 1 else ""


def _groups_of(df: pd.DataFrame, column: str):
    """(value, rows) per distinct value of ``column`` (sorted); one (None, df) when df lacks the column."""
    if column not in df.columns:
        return [(None, df)]
    return list(df.groupby(column, sort=True, dropna=False))


def _align(ids: np.ndarray, x: np.ndarray, common: np.ndarray) -> np.ndarray:
    """x's entries at the sample ids ``common`` (sorted, all in ids)."""
    order = np.argsort(ids, kind="stable")
    return x[order[np.searchsorted(ids[order], common)]]


def _sample_metrics(distances: pd.DataFrame) -> list[Metric]:
    """'median L2' / 'median Linf' per attack set: per-sample distances aligned on sample_idx."""
    require_columns(distances, ["regulariser", "alpha", "seed", "norm", "sample_idx", "distances"], "distances")
    out = []
    for name, rows in _groups_of(distances, "attack_set"):
        for norm in [n for n in ("L2", "Linf") if n in set(rows["norm"])]:
            part = rows[rows["norm"] == norm].reset_index(drop=True)
            require_unique(part, ["regulariser", "alpha", "seed"], "distances")
            ids = [np.asarray(i, np.int64).ravel() for i in part["sample_idx"]]
            d = [np.asarray(x, np.float64).ravel() for x in part["distances"]]
            for k, (i, x) in enumerate(zip(ids, d)):
                if i.shape != x.shape:
                    raise ReportInputError(f"'distances': row {k} has {i.size} sample_idx but {x.size} distances. "
                                           "Fix: one distance per attacked sample")
            common = ids[0]
            for i in ids[1:]:
                common = np.intersect1d(common, i)
            if common.size == 0:
                raise ReportInputError(f"'distances' ({norm}{'' if name is None else ', ' + str(name)}): the "
                                       "classifiers share no attacked sample. Fix: attack every classifier on the "
                                       "same samples (one attack config seed and n_samples)")
            values = np.stack([_align(i, x, common) for i, x in zip(ids, d)])
            dropped = max(i.size for i in ids) - common.size
            note = f"{dropped} sample(s) not attacked on every classifier left out" if dropped else ""
            out.append(Metric(f"median {norm}{_config_suffix(distances, 'attack_set', name)}",
                              part[["regulariser", "alpha", "seed"]], values, "median", "log", True, name, note))
    return out


def _scalar_metric(df: pd.DataFrame, name: str, value_rows, config, fix: str) -> Metric:
    """One value per classifier: the mean of accuracy over ``value_rows`` (a boolean mask of df)."""
    part = df[value_rows]
    if part.empty:
        raise ReportInputError(f"{name}: no rows to average. Fix: {fix}")
    g = part.groupby(["regulariser", "alpha", "seed"], sort=False)["accuracy"].mean().reset_index()
    return Metric(name, g[["regulariser", "alpha", "seed"]], g["accuracy"].to_numpy(np.float64), "mean", "linear",
                  False, config)


def robustness_metrics(distances: pd.DataFrame | None = None, noise: pd.DataFrame | None = None,
                       corruptions: pd.DataFrame | None = None) -> list[Metric]:
    """The metrics of the effects and verdict tables (module docstring), from the frames of neural_reg.queries.

    distances : queries.score_samples (regulariser, alpha, seed, [attack_set], norm, sample_idx (n,),
        distances (n,)); -> 'median L2', 'median Linf' per attack set.
    noise : queries.noise (regulariser, alpha, seed, [noise_name], std, accuracy); -> 'noise acc': the mean over
        the non-zero stds, per noise config.
    corruptions : queries.corruptions (regulariser, alpha, seed, [corruption_name], corruption, severity,
        accuracy); -> 'corruption acc': the mean over corruptions and severities, per corruption config.
    None or empty frames are skipped. Without alpha columns every condition gets alpha 0.
    """
    out = []
    frames = [None if f is None or len(f) == 0 else (f if "alpha" in f.columns else f.assign(alpha=0.0))
              for f in (distances, noise, corruptions)]
    distances, noise, corruptions = frames
    if distances is not None:
        out += _sample_metrics(distances)
    if noise is not None:
        require_columns(noise, ["regulariser", "alpha", "seed", "std", "accuracy"], "noise",
                        numeric=["std", "accuracy"])
        for name, rows in _groups_of(noise, "noise_name"):
            out.append(_scalar_metric(rows, f"noise acc{_config_suffix(noise, 'noise_name', name)}",
                                      rows["std"] > 0, name, "give the noise config at least one std > 0"))
    if corruptions is not None:
        require_columns(corruptions, ["regulariser", "alpha", "seed", "accuracy"], "corruptions",
                        numeric=["accuracy"])
        for name, rows in _groups_of(corruptions, "corruption_name"):
            out.append(_scalar_metric(rows, f"corruption acc{_config_suffix(corruptions, 'corruption_name', name)}",
                                      np.ones(len(rows), bool), name, "populate CorruptionRobustness"))
    return out


def _condition_keys(rows: pd.DataFrame) -> list[tuple]:
    return [(r, float(a)) for r, a in zip(rows["regulariser"], rows["alpha"])]


def _bootstrap(metric: Metric, n_boot: int, seed: int, confidence: float):
    """The metric's hierarchical bootstrap, computed once per (n_boot, seed, confidence) and kept on it (so the
    condition and effect tables of one metric share their replicates)."""
    key = (n_boot, seed, confidence)
    if key not in metric.cache:
        labels, point, boot, n_seeds = hierarchical_bootstrap(
            metric.values, _condition_keys(metric.rows), metric.statistic, metric.scale, metric.per_sample,
            n_boot, seed, confidence)
        metric.cache[key] = ({tuple(lab): k for k, lab in enumerate(labels)}, point, boot, n_seeds)
    return metric.cache[key]


def condition_intervals(metrics: Sequence[Metric], confidence: float = CONFIDENCE, n_boot: int = N_BOOT,
                        seed: int = BOOT_SEED) -> pd.DataFrame:
    """Per metric and condition: the condition value V_c (mean over seeds of the per-classifier median or
    accuracy) and its hierarchical-bootstrap percentile CI (module docstring).

    Returns one row per (metric, condition), in metric then canonical condition order: metric, regulariser,
    alpha, n_seeds, n_samples (0: no sample level), estimate, ci_low, ci_high (NaN with one seed and no sample
    level: nothing to resample). With one seed and per-sample data the CI is the sample level's alone.
    """
    _check_confidence(confidence)
    rows = []
    tail = 100 * (1 - confidence) / 2
    for metric in metrics:
        index, point, boot, n_seeds = _bootstrap(metric, n_boot, seed, confidence)
        with np.errstate(invalid="ignore"):
            lo, hi = np.percentile(boot, [tail, 100 - tail], axis=1)
        rank = {r: k for k, r in enumerate(order_regularisers(c[0] for c in index))}
        for cond in sorted(index, key=lambda c: (rank[c[0]], c[1])):
            g = index[cond]
            none = n_seeds[g] < 2 and not metric.per_sample  # nothing to resample: no CI
            rows.append({"metric": metric.name, "regulariser": cond[0], "alpha": cond[1],
                         "n_seeds": int(n_seeds[g]), "n_samples": metric.n_samples, "estimate": float(point[g]),
                         "ci_low": np.nan if none else float(lo[g]), "ci_high": np.nan if none else float(hi[g])})
    return pd.DataFrame(rows, columns=["metric", "regulariser", "alpha", "n_seeds", "n_samples", "estimate",
                                       "ci_low", "ci_high"])


def _reference_pairs(conds: list[tuple], references: Sequence[str], baseline: str) -> list[tuple]:
    """(condition, reference) pairs as paired_comparisons makes them: per alpha of the non-baseline conditions,
    every condition against each present reference (the baseline at its own alpha, the others at the same
    alpha), a pair of two references once (the later against the earlier)."""
    base = [c for c in conds if c[0] == baseline]
    others = [c for c in conds if c[0] != baseline]
    pairs = []
    for level in sorted({c[1] for c in others}):
        at = base + [c for c in others if c[1] == level]
        names = order_regularisers(c[0] for c in at)
        by_name = {c[0]: c for c in at}
        refs = [r for r in references if r in by_name]
        for k, ref in enumerate(refs):
            for name in names:
                if name == ref or name in refs[:k]:
                    continue
                pairs.append((by_name[name], by_name[ref]))
    return pairs


EFFECT_COLUMNS = ["metric", "regulariser", "alpha", "reference", "reference_alpha", "n_seeds", "n_seeds_reference",
                  "n_samples", "estimate", "estimate_reference", "scale", "effect", "ci_low", "ci_high", "p_value",
                  "p_adjusted", "ci_adj_low", "ci_adj_high", "verdict", "note"]


def effect_table(metrics: Sequence[Metric], pairs=None, references: Sequence[str] = CONTROL_REFERENCES,
                 baseline: str = BASELINE, confidence: float = CONFIDENCE, n_boot: int = N_BOOT,
                 seed: int = BOOT_SEED) -> pd.DataFrame:
    """Effects with CIs of conditions against references, BH-corrected over the whole table, with verdicts.

    metrics : from :func:`robustness_metrics`.
    pairs : None (every condition against None and against each control at the same alpha, as
        :func:`paired_comparisons` pairs them), or a list of ((regulariser, alpha), (reference, alpha)) to compare
        in every metric that has both (a list of claims: :func:`claim_pairs`).
    Returns one row per (metric, pair) with EFFECT_COLUMNS: ``scale`` 'log-ratio' (effect = log V_c - log V_r)
    or 'difference' (V_c - V_r); ci_low/ci_high the marginal percentile CI at ``confidence``; p_value the
    two-sided bootstrap p; p_adjusted Benjamini-Hochberg over the table's finite p values; ci_adj_low/high the
    FCR-adjusted CI; verdict 'yes' / 'no' / 'unresolved' (module docstring); note why a value is NaN.
    """
    _check_confidence(confidence)
    q = 1 - confidence
    tail = 100 * (1 - confidence) / 2
    rows, replicates = [], []
    for metric in metrics:
        index, point, boot, n_seeds = _bootstrap(metric, n_boot, seed, confidence)
        wanted = _reference_pairs(list(index), references, baseline) if pairs is None else \
            [(tuple(c), tuple(r)) for c, r in pairs]
        log = metric.scale == "log"
        for cond, ref in wanted:
            cond, ref = (cond[0], float(cond[1])), (ref[0], float(ref[1]))
            if cond not in index or ref not in index:
                continue
            g, r = index[cond], index[ref]
            with np.errstate(divide="ignore", invalid="ignore"):
                if log:
                    effect = np.log(point[g]) - np.log(point[r])
                    e = np.log(boot[g]) - np.log(boot[r])
                else:
                    effect, e = point[g] - point[r], boot[g] - boot[r]
            notes = [metric.note] if metric.note else []
            p = np.nan
            finite = np.isfinite(e)
            if min(n_seeds[g], n_seeds[r]) < 2:
                notes.append("1 seed: the between-seed variation is unknown, no p value")
            elif not finite.all() or not np.isfinite(effect):
                notes.append("a condition value is 0 or infinite (log-ratio undefined), no p value")
            else:
                p = min(1.0, 2 * min((1 + np.sum(e <= 0)) / (n_boot + 1), (1 + np.sum(e >= 0)) / (n_boot + 1)))
            lo, hi = np.percentile(e[finite], [tail, 100 - tail]) if finite.any() else (np.nan, np.nan)
            rows.append({"metric": metric.name, "regulariser": cond[0], "alpha": cond[1], "reference": ref[0],
                         "reference_alpha": ref[1], "n_seeds": int(n_seeds[g]), "n_seeds_reference": int(n_seeds[r]),
                         "n_samples": metric.n_samples, "estimate": float(point[g]),
                         "estimate_reference": float(point[r]), "scale": "log-ratio" if log else "difference",
                         "effect": float(effect), "ci_low": float(lo), "ci_high": float(hi), "p_value": p,
                         "note": "; ".join(notes)})
            replicates.append(e)
    out = pd.DataFrame(rows, columns=[c for c in EFFECT_COLUMNS if c not in
                                      ("p_adjusted", "ci_adj_low", "ci_adj_high", "verdict")] + ["p_adjusted"])
    adjusted, rejected = benjamini_hochberg(out["p_value"].to_numpy(np.float64), q)
    m, R = int(np.isfinite(adjusted).sum()), int(rejected.sum())
    level = max(R, 1) * q / max(m, 1)  # the FCR-adjusted miscoverage
    adj_lo, adj_hi, verdicts = np.full(len(out), np.nan), np.full(len(out), np.nan), []
    for k, e in enumerate(replicates):
        e = e[np.isfinite(e)]
        if e.size:
            adj_lo[k], adj_hi[k] = np.percentile(e, [100 * level / 2, 100 * (1 - level / 2)])
        verdicts.append(VERDICT_YES if rejected[k] and adj_lo[k] > 0 else
                        VERDICT_NO if rejected[k] and adj_hi[k] < 0 else VERDICT_UNRESOLVED)
    out["p_adjusted"], out["ci_adj_low"], out["ci_adj_high"], out["verdict"] = adjusted, adj_lo, adj_hi, verdicts
    return out[EFFECT_COLUMNS]


# ------------------------------------------------------------------------------------------ claims, verdicts

def claim_pairs(conds, subject: str = NEURAL, references: Sequence[str] = CONTROL_REFERENCES,
                baseline: str = BASELINE, positive: str = ADVERSARIAL) -> list[tuple]:
    """The claims of the verdict table as (condition, reference) pairs over the present conditions ``conds``
    ((regulariser, alpha) pairs): per alpha of ``subject``, subject against the baseline, then against each
    present reference at the same alpha (in ``references`` order); last, each positive control (``positive``, or
    its detailed labels when an experiment has several adversarial configs) against the baseline."""
    conds = [(r, float(a)) for r, a in conds]
    base = [c for c in conds if c[0] == baseline]
    pairs = []
    for cond in sorted(c for c in conds if c[0] == subject):
        for ref in references:
            match = base if ref == baseline else [c for c in conds if c[0] == ref and c[1] == cond[1]]
            pairs += [(cond, m) for m in match[:1]]
    def positive_control(label):
        return label == positive or (positive == ADVERSARIAL and is_adversarial(label))

    pairs += [(c, base[0]) for c in conds if positive_control(c[0]) and base]
    return pairs


def claim_effects(metrics: Sequence[Metric], subject: str = NEURAL, references: Sequence[str] = CONTROL_REFERENCES,
                  baseline: str = BASELINE, positive: str = ADVERSARIAL, confidence: float = CONFIDENCE,
                  n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> pd.DataFrame:
    """The verdict table's comparisons (:func:`claim_pairs`) as an :func:`effect_table`: BH-corrected over
    exactly these claims x metrics (its family), so a claim is not diluted by comparisons of the controls among
    themselves."""
    conds = {c for m in metrics for c in _condition_keys(m.rows)}
    return effect_table(metrics, claim_pairs(sorted(conds), subject, references, baseline, positive),
                        references, baseline, confidence, n_boot, seed)


def _short_note(row) -> str:
    note = str(row.get("note") or "")
    return "1 seed" if "1 seed" in note else "median 0 or inf" if "log-ratio undefined" in note else ""


def format_effect(row) -> str:
    """'yes: +31% [+12%, +52%]' (log-ratio, as a percent change) or 'no: -4.1 pp [-7.0, -1.2]' (a difference of
    accuracies in percentage points), with the FCR-adjusted CI; 'unresolved: ...' likewise. Without a p value
    (a condition with 1 seed, or a median of 0 / inf): 'unresolved (1 seed): -5.4 pp, no CI', or the verdict and
    the reason alone when the effect is undefined."""
    reason = _short_note(row) if not np.isfinite(row.get("p_value", 0.0)) else ""
    if not np.isfinite(row["effect"]):
        return f"{row['verdict']} ({reason})" if reason else str(row["verdict"])
    if row["scale"] == "log-ratio":
        def f(v):
            return f"{100 * np.expm1(v):+.0f}%" if np.isfinite(v) else "NaN"
    else:
        def f(v):
            return f"{100 * v:+.1f} pp" if np.isfinite(v) else "NaN"
    if reason:
        return f"{row['verdict']} ({reason}): {f(row['effect'])}, no CI"
    return f"{row['verdict']}: {f(row['effect'])} [{f(row['ci_adj_low'])}, {f(row['ci_adj_high'])}]"


def _claim_label(cond: tuple, ref: tuple, several_alphas: bool) -> str:
    def lab(c):
        return condition_label(*c) if several_alphas else str(c[0])
    return f"{lab(cond)} beats {lab(ref)}"


def verdict_table(claims: pd.DataFrame, positive: str = ADVERSARIAL, baseline: str = BASELINE,
                  metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """The verdict table: rows = claims ('Neural beats None', 'Neural beats Pixel', ..., and last
    'Adversarial (PGD) beats None'), columns = metrics, cells :func:`format_effect` ('yes' / 'no' / 'unresolved'
    with the effect and its corrected CI; 'n/a' where a metric lacks the pair).

    claims : :func:`claim_effects`. The positive control's row is always there: 'not trained' in every cell
    when no adversarially trained classifier is in ``claims`` (enter a TrainConfig with 'adversarial' set).
    metrics : column order (default: as they appear). Returns a DataFrame indexed by 'claim'.
    """
    if len(claims):
        require_columns(claims, ["metric", "regulariser", "alpha", "reference", "reference_alpha", "effect",
                                 "ci_adj_low", "ci_adj_high", "verdict", "scale"], "claims")
    columns = list(metrics) if metrics is not None else list(dict.fromkeys(claims["metric"])) if len(claims) \
        else list(METRICS)

    def positive_control(label):
        return label == positive or (positive == ADVERSARIAL and is_adversarial(label))

    subjects = claims[~claims["regulariser"].map(positive_control)] if len(claims) else claims
    several = len(subjects) > 0 and subjects["alpha"].nunique() > 1
    table: dict[str, dict] = {}
    for row in claims.to_dict("records") if len(claims) else []:
        label = _claim_label((row["regulariser"], row["alpha"]), (row["reference"], row["reference_alpha"]),
                             several and not positive_control(row["regulariser"]))
        table.setdefault(label, {})[row["metric"]] = format_effect(row)
    positive_label = f"{positive} beats {baseline}"
    if not any(positive_control(k.split(" beats ")[0]) for k in table):
        table[positive_label] = {m: "not trained" for m in columns}
    out = pd.DataFrame.from_dict(table, orient="index").reindex(columns=columns).fillna("n/a")
    out.index.name = "claim"
    return out
