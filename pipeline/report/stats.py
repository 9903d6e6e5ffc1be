"""Paired statistics for the report: is a regulariser's gain real, and is it a gain of *neural* data?

Every classifier condition is trained with several seeds (5 in the paper). Two conditions trained with the same
seed share the data order and initialisation noise that the seed fixes, so they are compared *paired on the
seed*: the difference per seed, its mean, its paired effect size (Cohen's d_z = mean diff / sd of diffs) and a
paired t test (scipy.stats.ttest_rel).

The point of the controls: a gain that a Pixel or a Shuffle target also gives is not a gain of neural data
(Attias et al. 2024 report that a pixel-similarity target gives similar robustness gains). So every regulariser
is compared against None (alpha = 0) AND against the controls (Shuffle, Pixel; VGG where trained):
:func:`paired_comparisons` does all of them in one table. Only a gain over the controls is evidence for the
paper's claim.

Inputs are long ("tidy") pandas DataFrames, one row per (condition, seed) and metric, e.g.

    regulariser  seed  accuracy
    'None'       0     0.21
    'Neural'     0     0.48
    ...

Bad input raises :class:`ReportInputError` (a ValueError) naming the column and the fix.
"""

from __future__ import annotations

from pipeline.errors import NeuralRegError

from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

__all__ = ["ReportInputError", "require_columns", "summary_with_spread", "paired_comparison",
           "paired_comparisons", "CONTROL_REFERENCES"]

# The references a neural regulariser must beat: no regulariser, then the controls without neural content.
CONTROL_REFERENCES = ("None", "Shuffle", "Pixel")

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

def _paired_row(diff: np.ndarray, x: np.ndarray, x_ref: np.ndarray) -> dict:
    """Statistics of one paired comparison; diff = x - x_ref, one entry per shared seed."""
    n = int(diff.size)
    row = {"n_pairs": n,
           "mean": float(x.mean()) if n else np.nan,
           "mean_reference": float(x_ref.mean()) if n else np.nan,
           "mean_diff": float(diff.mean()) if n else np.nan,
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
    row.update(d_z=row["mean_diff"] / row["sd_diff"], t=float(res.statistic), p_value=float(res.pvalue))
    return row


def paired_comparison(df: pd.DataFrame, metric: str, reference: str, by: str = "regulariser",
                      pair_on: str = "seed") -> pd.DataFrame:
    """Compare each condition with ``reference``, paired on ``pair_on`` (the seed).

    df: columns ``by`` (condition name, e.g. 'Neural'), ``pair_on`` (e.g. seed), ``metric`` (finite numbers);
    one row per (by, pair_on). For each condition other than the reference, only the seeds both have are used.

    Returns one row per condition (in order of first appearance) with columns:
      ``by``, reference, n_pairs, n_unpaired (the condition's seeds the reference lacks), mean (the condition,
      over the paired seeds), mean_reference, mean_diff (condition - reference), sd_diff (ddof = 1),
      d_z (= mean_diff / sd_diff, Cohen's paired effect size), t and p_value (two-sided, scipy.stats.ttest_rel),
      note (why a value is NaN, or which seeds were dropped; '' when nothing to say).
    With n_pairs < 2 no test is possible: d_z, t and p_value are NaN and the note says so.
    """
    require_columns(df, [by, pair_on, metric], "df", numeric=[metric])
    require_unique(df, [by, pair_on], "df")
    conditions = list(pd.unique(df[by]))
    if reference not in conditions:
        raise ReportInputError(f"reference {reference!r} is not a value of column '{by}' (values: {conditions}). "
                               "Fix: pass one of them, or add the reference condition's results")
    table = df.pivot(index=pair_on, columns=by, values=metric).astype(np.float64)
    ref = table[reference]
    rows = []
    for cond in conditions:  # a handful of conditions; the per-seed work is vectorised
        if cond == reference:
            continue
        both = table[cond].notna() & ref.notna()
        x, x_ref = table.loc[both, cond].to_numpy(), ref[both].to_numpy()
        row = {by: cond, "reference": reference}
        row.update(_paired_row(x - x_ref, x, x_ref))
        row["n_unpaired"] = int((table[cond].notna() & ~both).sum())
        if row["n_unpaired"]:
            extra = f"{row['n_unpaired']} seed(s) without a {reference} result left out"
            row["note"] = f"{row['note']}; {extra}" if row["note"] else extra
        rows.append(row)
    columns = [by, "reference", "n_pairs", "n_unpaired", "mean", "mean_reference", "mean_diff", "sd_diff",
               "d_z", "t", "p_value", "note"]
    return pd.DataFrame(rows, columns=columns)


def paired_comparisons(df: pd.DataFrame, metric: str, references: Sequence[str] = CONTROL_REFERENCES,
                       by: str = "regulariser", pair_on: str = "seed") -> pd.DataFrame:
    """:func:`paired_comparison` against every reference in ``references`` present in ``df``, stacked.

    The default compares against None and the controls (Shuffle, Pixel): a gain that a control also gives is
    not a gain of neural data. References absent from ``df`` are skipped; if none is present, raises.
    """
    require_columns(df, [by, pair_on, metric], "df", numeric=[metric])
    present = [r for r in references if r in set(df[by])]
    if not present:
        raise ReportInputError(f"none of the references {list(references)} is a value of column '{by}'. "
                               "Fix: add their results, or pass references=[...] that exist")
    return pd.concat([paired_comparison(df, metric, r, by, pair_on) for r in present], ignore_index=True)
