"""Paired statistics for the report: is a regulariser's gain real, and is it a gain of *neural* data?

Every classifier condition is trained with several seeds (5 in the paper). Two conditions trained with the same
seed share the data order and initialisation noise that the seed fixes, so they are compared *paired on the
seed*: the difference per seed, its mean, its paired effect size (Cohen's d_z = mean diff / sd of diffs) and a
paired t test (scipy.stats.ttest_rel).

The point of the controls: a gain that a Pixel or a Shuffle target also gives is not a gain of neural data
(Attias et al. 2024 report that a pixel-similarity target gives similar robustness gains). So every regulariser
is compared against None (alpha = 0) AND against the controls (Shuffle, Pixel, Random, VGG; see
:mod:`pipeline.report.conditions`) *at the same alpha*: :func:`paired_comparisons` does all of them in one
table, once per pair, with a confidence interval of the mean difference and Benjamini-Hochberg adjusted p values
over the table. Only a gain over the controls is evidence for the paper's claim.

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

from .conditions import BASELINE, CONTROLS, order_regularisers

__all__ = ["ReportInputError", "require_columns", "require_unique", "summary_with_spread", "paired_comparison",
           "paired_comparisons", "CONTROL_REFERENCES", "COMPARISON_COLUMNS"]

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
