"""The paper's figures and tables from plain arrays and DataFrames (no database).

Every figure function returns a :class:`matplotlib.figure.Figure` built with the object-oriented API
(``Figure()``, never ``pyplot``): nothing global changes, no backend needs selecting (``savefig`` renders
PNG with Agg by itself), no GUI window opens, and nothing stays registered in pyplot to leak memory. So it
is safe on a headless worker and inside a notebook whose backend must not be switched. :func:`save` writes
the PNG.

Figure -> table in one hop: each function names its source table in its docstring and takes that table's rows,
as the ``neural_reg.queries`` function named there returns them (or the arrays of one row of it); nothing is
assembled from several tables inside a figure function.

Conditions (:mod:`pipeline.report.conditions`). ``regulariser`` is the label of the target's kind ('None',
'Shuffle', 'Pixel', 'Random', 'VGG', 'Neural (data)', 'Neural' get fixed colours and this order, any other
label a colour from a cycle after them) and ``alpha`` its strength, a column of its own: a condition is the
pair (regulariser, alpha), the baseline None has alpha 0. Legends show both ('Neural (α=10)'), built at draw
time. ``alpha`` is optional in the frames (without it, one condition per regulariser). ``seed`` is any
hashable. One row per key:

===========================  ====================================  =========================================
function                     source table (via neural_reg.queries)  DataFrame columns (key columns first)
===========================  ====================================  =========================================
fig4_noise                   robustness.NoiseRobustness (noise)    regulariser, [alpha], seed, std, accuracy
                                                                   (fraction correct, in [0, 1])
fig5_queries                 robustness.Adversarial                regulariser, [alpha], seed, attack, norm,
                             (query_curves)                        queries (> 0), median (pixels in [0, 1])
fig6_alpha                   robustness.RobustnessScore.Norm       regulariser, alpha, seed, norm, median
                             (scores)
table1_layer_weights         classifier.TrainedClassifier          regulariser, [alpha], seed, layer, gamma
                             .LayerWeight (layer_weights)          (softmax layer weight, >= 0)
corruption_table             robustness.CorruptionRobustness       regulariser, [alpha], seed, corruption,
                             .Score (corruptions)                  severity, accuracy (in [0, 1])
target_spectrum,             target.TargetDiagnostics              target_name, regulariser, eigenvalue_shares
target_diagnostics_table     (target_diagnostics)                  (leading eigenvalues / trace), diagnostics
fig_effects                  the effect table of                   metric, regulariser, alpha, reference,
                             pipeline.report.stats.effect_table    effect, ci_adj_low, ci_adj_high, verdict
brain_likeness_table         robustness.BrainLikeness              target_name, regulariser, [alpha], seed,
                             (brain_likeness)                      correlation, [correlation_eval]
===========================  ====================================  =========================================

A frame of one configuration only: a ``noise_name``, ``attack_set`` or ``corruption_name`` column, where
present, must hold one value (choose one per figure; the report draws one per configuration).
Fig 1 takes numpy arrays: see :func:`fig1_similarity` and :func:`fig1_stability`.
Bad input raises :class:`ReportInputError` (a ValueError) naming the field and the fix.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.colors import to_hex, to_rgb
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter
from scipy.sparse.linalg import eigsh

from pipeline.oracle.similarity import offdiagonal_correlation

from .conditions import BASELINE, REGULARISER_ORDER, condition_columns, condition_label, conditions, \
    order_regularisers
from .stats import ReportInputError, require_columns, require_unique, summary_with_spread

__all__ = ["REGULARISER_COLORS", "REGULARISER_ORDER", "regulariser_colors", "order_regularisers",
           "condition_colors", "leading_eigenvector_order", "mean_step_curve", "curve_by_setting", "fig1_similarity",
           "fig1_stability", "stability_xlim", "fig1d_oracle_scatter", "oracle_comparison_table", "fig4_noise",
           "fig5_queries", "fig6_alpha", "table1_layer_weights", "corruption_table", "target_spectrum",
           "target_diagnostics_table", "fig_effects", "interval_table", "brain_likeness_table",
           "BRAIN_LIKENESS_NAMES", "save"]

REGULARISER_COLORS = {
    "None": "#404040",
    "Shuffle": "#9467bd",
    "Pixel": "#8c564b",
    "Random": "#bcbd22",
    "VGG": "#2ca02c",
    "Neural (data)": "#1f77b4",
    "Neural": "#d62728",
    "Neural (model)": "#d62728",  # the paper's other name for 'Neural'
    "Adversarial (PGD)": "#ff7f0e",
    "Contrast energy": "#e377c2",
    "Robust net": "#7f7f7f",
    "Deflated": "#ff9896",
    "Neural (truth)": "#17becf",
}
# colours for any other regulariser name, cycled in order of appearance
_OTHER_COLORS = ("#aec7e8", "#ffbb78", "#98df8a", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5")
NORM_ORDER = ("L0", "L1", "L2", "Linf")
_LINESTYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")
SIMILARITY_CMAP = "RdBu_r"
# one configuration per figure: these columns, where a frame has them, must hold a single value
_CONFIG_COLUMNS = ("noise_name", "attack_set", "corruption_name")


# --------------------------------------------------------------------------------------------- helpers

def regulariser_colors(names) -> dict:
    """{name: colour}: fixed colours for the known names, others cycled over a second palette."""
    out, k = {}, 0
    for n in order_regularisers(names):
        if n in REGULARISER_COLORS:
            out[n] = REGULARISER_COLORS[n]
        else:
            out[n] = _OTHER_COLORS[k % len(_OTHER_COLORS)]
            k += 1
    return out


def condition_colors(df: pd.DataFrame) -> dict:
    """{(regulariser, alpha): colour} in canonical order: the regulariser's colour, paler for its weaker alphas.

    A regulariser at a single alpha gets its own colour unchanged; with several, the strongest alpha gets the
    full colour and the weaker ones blend towards white (down to 40 % of the colour). alpha is None without
    an alpha column.
    """
    conds = conditions(df)
    base = regulariser_colors(r for r, _ in conds)
    out = {}
    for reg in base:
        mine = [c for c in conds if c[0] == reg]
        for k, cond in enumerate(mine):
            t = 1.0 if len(mine) == 1 else 0.4 + 0.6 * k / (len(mine) - 1)
            rgb = np.asarray(to_rgb(base[reg]))
            out[cond] = to_hex(t * rgb + (1 - t) * np.ones(3))
    return out


def _natural_key(value):
    """Sort key putting 'conv5' before 'conv13' and numbers in numeric order."""
    if isinstance(value, (int, float, np.integer, np.floating)):
        return (0, float(value), ())
    parts = re.split(r"(\d+)", str(value))
    return (1, 0.0, tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts))


def _order_norms(norms) -> list:
    distinct = list(dict.fromkeys(norms))
    return [n for n in NORM_ORDER if n in distinct] + sorted((n for n in distinct if n not in NORM_ORDER), key=str)


def _check_range(df: pd.DataFrame, column: str, lo: float, hi: float, name: str, fix: str) -> None:
    v = pd.to_numeric(df[column]).to_numpy(dtype=np.float64)
    bad = (v < lo) | (v > hi)
    if bad.any():
        raise ReportInputError(f"'{name}': column '{column}' has {int(bad.sum())} value(s) outside "
                               f"[{lo}, {hi}] (e.g. {v[bad][0]!r}). Fix: {fix}")


def _check_frame(df: pd.DataFrame, columns: Sequence[str], unique: Sequence[str], numeric: Sequence[str],
                 name: str = "df") -> list[str]:
    """The checks every frame input shares; returns the condition columns ([regulariser] + [alpha] if present).

    ``columns`` must be present (``numeric`` ones finite); one row per ``unique`` key plus alpha where df has
    it; a configuration column (noise_name, attack_set, corruption_name) must hold one value.
    """
    require_columns(df, columns, name, numeric=list(numeric))
    cond = condition_columns(df)
    if "alpha" in cond:
        require_columns(df, ["alpha"], name, numeric=["alpha"])
        _check_range(df, "alpha", 0.0, np.inf, name, "alpha is a loss weight >= 0")
    for column in _CONFIG_COLUMNS:
        if column in df.columns and df[column].nunique(dropna=False) > 1:
            raise ReportInputError(f"'{name}': column '{column}' holds {df[column].nunique(dropna=False)} "
                                   f"configurations {sorted(map(str, pd.unique(df[column])))}; one figure shows "
                                   f"one. Fix: filter to one {column} (or group by it, one figure each)")
    keys = list(unique)
    require_unique(df, keys[:1] + cond[1:] + keys[1:], name)
    return cond


def _condition_mask(df: pd.DataFrame, cond: tuple) -> np.ndarray:
    reg, alpha = cond
    mask = (df["regulariser"] == reg).to_numpy()
    if alpha is not None:
        mask = mask & (df["alpha"] == alpha).to_numpy()
    return mask


def _n_seeds(n) -> str:
    """'n = 5 seeds', or 'n = 3-5 seeds' when points rest on different numbers of seeds."""
    lo, hi = int(np.min(n)), int(np.max(n))
    return f"n = {lo} seeds" if lo == hi else f"n = {lo}-{hi} seeds"


def _errorbar(ax, x, mean, sem, color, label, gid):
    """Mean line with +-SEM bars (no caps, so ax.lines holds exactly one line per call)."""
    container = ax.errorbar(x, mean, yerr=sem, color=color, marker="o", markersize=4, capsize=0,
                            elinewidth=1.2, linewidth=1.6, label=label)
    container.lines[0].set_gid(gid)
    return container


def _mean_sem_lines(ax, df: pd.DataFrame, series: Sequence[str], x: str, value: str, styles: dict,
                    gid_prefix: str = "") -> None:
    """One mean +- SEM (over seeds) line of ``value`` against ``x`` per series, in the order of ``styles``.

    series: the columns naming a series; styles: {series values (tuple): (colour, label)}. Each line's gid is
    gid_prefix + label and its legend entry the label with the number of seeds.
    """
    summ = summary_with_spread(df, value, list(series) + [x])
    for key, (color, label) in styles.items():
        mask = np.ones(len(summ), bool)
        for column, v in zip(series, key):
            mask &= (summ[column] == v).to_numpy()
        s = summ[mask].sort_values(x)
        if s.empty:
            continue
        _errorbar(ax, s[x].to_numpy(), s["mean"].to_numpy(), s["sem"].to_numpy(), color,
                  f"{label} ({_n_seeds(s['n'])})", gid_prefix + label)


def _config_note(df: pd.DataFrame) -> str:
    """' (attack set X)' style note naming the frame's configuration, '' when it has none."""
    names = {"noise_name": "noise config", "attack_set": "attack set", "corruption_name": "corruption config"}
    parts = [f"{names[c]} {df[c].iloc[0]}" for c in _CONFIG_COLUMNS if c in df.columns]
    return f" ({', '.join(parts)})" if parts else ""


# ------------------------------------------------------------------------------------- Fig 1: similarity

def _as_similarity(x, name: str) -> np.ndarray:
    S = np.asarray(x)
    if S.ndim != 2 or S.shape[0] != S.shape[1] or S.shape[0] < 3:
        raise ReportInputError(f"'{name}': expected a square (n, n) similarity matrix with n >= 3, got shape "
                               f"{S.shape}. Fix: pass the full matrix over the images")
    if not np.issubdtype(S.dtype, np.number) or not np.isfinite(S).all():
        raise ReportInputError(f"'{name}': non-numeric, NaN or infinite entries. Fix: recompute the matrix")
    return S


def _check_scans(scans) -> list[dict]:
    if not isinstance(scans, (list, tuple)) or not scans:
        raise ReportInputError("'scans': expected a non-empty list of dicts {label, data, model, oracle?}")
    out = []
    for k, s in enumerate(scans):
        if not isinstance(s, dict) or not {"label", "data", "model"} <= set(s):
            raise ReportInputError(f"'scans[{k}]': expected a dict with keys 'label', 'data', 'model' "
                                   f"(and optionally 'oracle'), got {type(s).__name__} "
                                   f"{sorted(s) if isinstance(s, dict) else ''}")
        unknown = set(s) - {"label", "data", "model", "oracle"}
        if unknown:
            raise ReportInputError(f"'scans[{k}]': unknown key(s) {sorted(unknown)}. Fix: use label, data, "
                                   "model, oracle")
        data = _as_similarity(s["data"], f"scans[{k}].data")
        model = _as_similarity(s["model"], f"scans[{k}].model")
        if data.shape != model.shape:
            raise ReportInputError(f"'scans[{k}]': data {data.shape} and model {model.shape} differ in shape. "
                                   "Fix: compute both over the same images in the same order")
        oracle = s.get("oracle")
        oracle = None if oracle is None else _as_similarity(oracle, f"scans[{k}].oracle")
        out.append({"label": str(s["label"]), "data": data, "model": model, "oracle": oracle})
    return out


def leading_eigenvector_order(S: np.ndarray) -> np.ndarray:
    """Permutation (n,) sorting images by the leading eigenvector of the symmetric matrix S (n, n).

    Images with similar loadings on the dominant mode end up next to each other, so block structure shows.
    Sign fixed so the eigenvector sums to >= 0 (deterministic order). Lanczos (eigsh) for large n: a full
    eigendecomposition of a 5000 x 5000 matrix costs seconds, one eigenvector milliseconds.
    """
    A = np.asarray(S, dtype=np.float64)
    A = 0.5 * (A + A.T)
    n = A.shape[0]
    if n <= 200:
        v = np.linalg.eigh(A)[1][:, -1]
    else:
        v = eigsh(A, k=1, which="LA", v0=np.ones(n))[1][:, 0]
    if v.sum() < 0:
        v = -v
    return np.argsort(v, kind="stable")


def _pool(S: np.ndarray, max_display: int) -> np.ndarray:
    """Block means of S (n, n) on a grid of at most max_display x max_display, NaN entries ignored.

    Drawing a 5000 x 5000 image at screen size would alias; averaging blocks is a faithful downsample.
    """
    n = S.shape[0]
    if n <= max_display:
        return S
    starts = np.linspace(0, n, max_display + 1).round().astype(int)[:-1]
    finite = np.isfinite(S)
    sums = np.add.reduceat(np.add.reduceat(np.where(finite, S, 0.0), starts, axis=0), starts, axis=1)
    counts = np.add.reduceat(np.add.reduceat(finite.astype(np.float64), starts, axis=0), starts, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _display(S: np.ndarray, order: np.ndarray, max_display: int) -> np.ndarray:
    """S reordered, diagonal masked (NaN: it is 1 or a reliability, not a pair similarity), pooled."""
    D = S[np.ix_(order, order)].astype(np.float64)
    np.fill_diagonal(D, np.nan)
    return _pool(D, max_display)


def _sample_pairs(n: int, max_points: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays (i, j), i < j: all pairs if few, else max_points drawn uniformly (with replacement)."""
    if n * (n - 1) // 2 <= max_points:
        return np.triu_indices(n, 1)
    i = rng.integers(0, n, size=2 * max_points)
    j = rng.integers(0, n, size=2 * max_points)
    keep = i != j
    i, j = i[keep][:max_points], j[keep][:max_points]
    return np.minimum(i, j), np.maximum(i, j)


def fig1_similarity(scans: Sequence[dict], *, max_display: int = 400, max_points: int = 4000,
                    quantile: float = 0.99, seed: int = 0) -> Figure:
    """Fig 1: data and model similarity matrices of each scan and how well they agree.

    Source: oracle.DataSimilarity (``data``), predictor.ModelSimilarity (``model``, the scan's first predictor)
    and oracle.OracleSimilarity (``oracle``), one dict per scan as ``neural_reg.queries.similarity_scans``
    returns them (restricted there to the images both matrices share).

    scans: list of dicts, one per scan (a row of the figure):
      ``label`` (str), ``data`` (n, n) Eq 2 single-trial similarity, ``model`` (n, n) Eq 6 model similarity
      over the same n images in the same order, ``oracle`` (m, m) Eq 3 oracle similarity (optional).
    Columns: S^data, S^model (one shared, symmetric colour scale over every matrix panel: +- the ``quantile``
    of |off-diagonal| entries; diagonal masked), scatter of model vs data off-diagonal entries with Pearson r
    (pipeline.oracle.similarity.offdiagonal_correlation; NaN if a matrix is constant) over ALL pairs (at most
    ``max_points`` pairs drawn, seeded by ``seed``), and S^oracle if any scan has one.
    Images are sorted by the leading eigenvector of the first scan's model matrix; a scan with a different
    n (other images) uses its own model matrix's order. Matrices larger than ``max_display`` are shown as
    block means. Axes: n_scans x (3 or 4) panels plus one colour bar.
    """
    scans = _check_scans(scans)
    rng = np.random.default_rng(seed)
    has_oracle = any(s["oracle"] is not None for s in scans)
    ncols = 4 if has_oracle else 3
    shared = leading_eigenvector_order(scans[0]["model"])
    n0 = scans[0]["model"].shape[0]

    shown = []  # per scan: (data image, model image, oracle image or None, own_order?)
    for s in scans:
        n = s["model"].shape[0]
        order = shared if n == n0 else leading_eigenvector_order(s["model"])
        oracle = None
        if s["oracle"] is not None:
            oracle = _display(s["oracle"], leading_eigenvector_order(s["oracle"]), max_display)
        shown.append((_display(s["data"], order, max_display), _display(s["model"], order, max_display),
                      oracle, n != n0))
    values = np.concatenate([np.abs(a[np.isfinite(a)]) for row in shown for a in row[:3] if a is not None])
    vmax = float(np.quantile(values, quantile)) if values.size else 1.0
    vmax = vmax if vmax > 0 else 1.0

    fig = Figure(figsize=(3.6 * ncols, 3.3 * len(scans) + 0.6), layout="constrained")
    axes = fig.subplots(len(scans), ncols, squeeze=False)
    image = None
    for row, (s, (d_img, m_img, o_img, own)) in enumerate(zip(scans, shown)):
        n = s["data"].shape[0]
        pooled = f", {d_img.shape[0]}x{d_img.shape[0]} block means" if d_img.shape[0] < n else ""
        order_note = "own order" if own else "shared order"
        for col, (img, name) in enumerate(((d_img, r"$S^{\mathrm{data}}$ (single trials)"),
                                           (m_img, r"$S^{\mathrm{model}}$ (predicted)"))):
            ax = axes[row, col]
            image = ax.imshow(img, cmap=SIMILARITY_CMAP, vmin=-vmax, vmax=vmax, interpolation="nearest",
                              extent=(-0.5, n - 0.5, n - 0.5, -0.5))
            ax.set_title(f"{s['label']}: {name}\n{n} images{pooled}", fontsize=9)
            ax.set_xlabel(f"image rank (leading eigenvector, {order_note})", fontsize=8)
            ax.set_ylabel("image rank", fontsize=8)
        ax = axes[row, 2]
        i, j = _sample_pairs(n, max_points, rng)
        ax.scatter(s["data"][i, j], s["model"][i, j], s=3, alpha=0.35, color="#1f77b4", rasterized=True,
                   label=f"{len(i)} of {n * (n - 1) // 2} pairs")
        r = offdiagonal_correlation(s["data"], s["model"])  # NaN if either is constant
        ax.text(0.04, 0.95, f"Pearson r = {r:.3f}\n(all {n * (n - 1) // 2} pairs)", transform=ax.transAxes,
                va="top", fontsize=9, bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"})
        ax.set_title(f"{s['label']}: model vs data similarity", fontsize=9)
        ax.set_xlabel(r"$S^{\mathrm{data}}_{ij}$ (cosine, dimensionless)", fontsize=8)
        ax.set_ylabel(r"$S^{\mathrm{model}}_{ij}$ (cosine)", fontsize=8)
        ax.legend(loc="lower right", fontsize=7, markerscale=3)
        if has_oracle:
            ax = axes[row, 3]
            if o_img is None:
                ax.axis("off")
                ax.text(0.5, 0.5, "no oracle images", ha="center", va="center", transform=ax.transAxes)
            else:
                m = s["oracle"].shape[0]
                image = ax.imshow(o_img, cmap=SIMILARITY_CMAP, vmin=-vmax, vmax=vmax, interpolation="nearest",
                                  extent=(-0.5, m - 0.5, m - 0.5, -0.5))
                rel = float(np.mean(np.diag(s["oracle"])))
                ax.set_title(f"{s['label']}: " r"$S^{\mathrm{oracle}}$" f" ({m} repeated images)\n"
                             f"mean diagonal (repeat reliability) = {rel:.3f}", fontsize=9)
                ax.set_xlabel("oracle image rank (own leading eigenvector)", fontsize=8)
                ax.set_ylabel("oracle image rank", fontsize=8)
    matrix_axes = [a for a in axes[:, [0, 1] + ([3] if has_oracle else [])].ravel() if a.images]
    fig.colorbar(image, ax=matrix_axes, shrink=0.8,
                 label="similarity (cosine, dimensionless; diagonal masked)")
    fig.suptitle("Fig 1: representational similarity of single-trial data vs the predictive model, per scan")
    return fig


# -------------------------------------------------------------------------------------- Fig 1C: stability

def _density(hist, edges: np.ndarray, name: str) -> np.ndarray:
    h = np.asarray(hist, dtype=np.float64)
    if h.shape != (edges.size - 1,) or not np.isfinite(h).all() or (h < 0).any():
        raise ReportInputError(f"'{name}': expected {edges.size - 1} finite non-negative values (one per bin), "
                               f"got shape {h.shape}. Fix: histogram over bin_edges")
    area = float((h * np.diff(edges)).sum())
    if area <= 0:
        raise ReportInputError(f"'{name}': the histogram is empty. Fix: pass fluctuations inside bin_edges")
    return h / area


def stability_xlim(edges: np.ndarray, *densities, tail: float = 1e-3, margin: float = 0.15) -> tuple[float, float]:
    """x range of Fig 1C from the data: from the ``tail`` to the 1 - ``tail`` quantile of the widest of the
    densities (over ``edges``), widened by ``margin`` of that span on each side, never beyond the edges.

    The stored bins span every possible fluctuation ([-1, 1] or more), most of it empty; the axis shows where
    the mass is.
    """
    lo, hi = float(edges[-1]), float(edges[0])
    for d in densities:
        cdf = np.concatenate([[0.0], np.cumsum(d * np.diff(edges))])
        cdf /= cdf[-1]
        lo = min(lo, float(np.interp(tail, cdf, edges)))
        hi = max(hi, float(np.interp(1 - tail, cdf, edges)))
    pad = margin * (hi - lo) if hi > lo else float(np.diff(edges).max())
    return max(float(edges[0]), lo - pad), min(float(edges[-1]), hi + pad)


def fig1_stability(bin_edges, scan_hist, repeat_hist, scan_width: float, repeat_width: float, *,
                   width_name: str = "sd") -> Figure:
    """Fig 1C: distribution of dS^scan (Eq 4, across scans) vs dS^rep (Eq 5, across repeats).

    Source: one row of oracle.Stability (its bin_edges, scan_histogram, repeat_histogram, scan_width,
    repeat_width), e.g. from ``neural_reg.queries.stability``.

    bin_edges: (k + 1,) increasing; scan_hist, repeat_hist: (k,) counts or densities over those bins (both
    are normalised to unit area, so densities pass unchanged); scan_width, repeat_width: the widths (e.g.
    sd; named by ``width_name``) shown in the legend. One axes, two step patches (scan, repeat); the x range is
    where the data are (:func:`stability_xlim`), not the whole span of the bins.
    """
    edges = np.asarray(bin_edges, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or not np.isfinite(edges).all() or (np.diff(edges) <= 0).any():
        raise ReportInputError("'bin_edges': expected a 1-D strictly increasing array of >= 2 finite edges. "
                               "Fix: pass the edges used for both histograms")
    ws = {}
    for w, name in ((scan_width, "scan_width"), (repeat_width, "repeat_width")):
        ws[name] = float(w)
        if not np.isfinite(ws[name]) or ws[name] < 0:
            raise ReportInputError(f"'{name}': expected a finite width >= 0, got {w!r}")
    scan_d = _density(scan_hist, edges, "scan_hist")
    rep_d = _density(repeat_hist, edges, "repeat_hist")

    fig = Figure(figsize=(6.0, 4.2), layout="constrained")
    ax = fig.add_subplot()
    ax.stairs(rep_d, edges, color="#7f7f7f", fill=True, alpha=0.45,
              label=r"$\Delta S^{\mathrm{rep}}$ across repeats, " f"{width_name} = {ws['repeat_width']:.3g}")
    ax.stairs(scan_d, edges, color="#d62728", linewidth=2.0,
              label=r"$\Delta S^{\mathrm{scan}}$ across scans, " f"{width_name} = {ws['scan_width']:.3g}")
    ax.set_xlim(*stability_xlim(edges, scan_d, rep_d))
    ax.set_xlabel(r"similarity fluctuation $\Delta S$ (cosine, dimensionless)")
    ax.set_ylabel(r"probability density (per unit $\Delta S$)")
    ratio = ws["repeat_width"] / ws["scan_width"] if ws["scan_width"] > 0 else float("inf")
    ax.set_title("Fig 1C: oracle similarity fluctuation across scans vs across repeats\n"
                 f"width ratio repeats / scans = {ratio:.3g}", fontsize=10)
    ax.legend(fontsize=8)
    return fig


# ------------------------------------------------------------------------------------ Fig 1D: vs oracle

FIG1D_COLORS = {"trial": "#7f7f7f", "model": "#d62728", "oracle": "#1f77b4"}
_FIG1D_NAMES = {"trial": r"$S^{\mathrm{trial}}$ (one repeat)", "model": r"$S^{\mathrm{model}}$ (predicted)",
                "oracle": r"$S^{\mathrm{oracle}}$ (all repeats)", "truth": r"$S^{\mathrm{truth}}$ (noise-free)"}


def _check_oracle_scans(scans) -> list[dict]:
    if not isinstance(scans, (list, tuple)) or not scans:
        raise ReportInputError("'scans': expected a non-empty list of dicts {label, oracle, trial, model, truth?}")
    out = []
    for k, s in enumerate(scans):
        if not isinstance(s, dict) or not {"label", "oracle", "trial", "model"} <= set(s):
            raise ReportInputError(f"'scans[{k}]': expected a dict with keys 'label', 'oracle', 'trial', 'model' "
                                   "(and optionally 'truth'), as neural_reg.queries.oracle_comparison returns")
        entry = {"label": str(s["label"])}
        for name in ("oracle", "trial", "model", "truth"):
            entry[name] = None if s.get(name) is None else _as_similarity(s[name], f"scans[{k}].{name}")
        shapes = {entry[n].shape for n in ("oracle", "trial", "model", "truth") if entry[n] is not None}
        if len(shapes) > 1:
            raise ReportInputError(f"'scans[{k}]': oracle, trial, model (and truth) differ in shape {sorted(shapes)}. "
                                   "Fix: compute all over the same oracle images in the same order")
        out.append(entry)
    return out


def fig1d_oracle_scatter(scans: Sequence[dict], *, max_points: int = 3000, seed: int = 0) -> Figure:
    """Fig 1D: single-trial and model similarity against the oracle similarity (and the noise-free truth).

    Source: per scan, ``neural_reg.queries.oracle_comparison``: oracle.OracleSimilarity (``oracle``, Eq 3), the
    oracle trials (``trial``: Eq 2 on one repeat of each oracle image), the scan's first
    predictor.TrainedPredictor (``model``: Eq 6 on the oracle images), and for simulated scans ``truth`` (Eq 2
    on the simulator's noise-free rates); all (m, m) over the same m oracle images.
    One row per scan; column 1: S^trial and S^model (y) against S^oracle (x); column 2, where any scan has a
    truth: S^trial, S^model and S^oracle against S^truth. Off-diagonal pairs (at most ``max_points`` drawn);
    Pearson r over all pairs in the legend (:func:`pipeline.oracle.similarity.offdiagonal_correlation`); the
    identity dashed. Scatter gids 'label|y|x', e.g. 'scan A|model|oracle'. Legends sit below the axes.
    """
    scans = _check_oracle_scans(scans)
    rng = np.random.default_rng(seed)
    has_truth = any(s["truth"] is not None for s in scans)
    ncols = 2 if has_truth else 1
    fig = Figure(figsize=(4.6 * ncols, 4.6 * len(scans) + 0.5), layout="constrained")
    axes = fig.subplots(len(scans), ncols, squeeze=False)
    for row, s in enumerate(scans):
        m = s["oracle"].shape[0]
        i, j = _sample_pairs(m, max_points, rng)
        panels = [("oracle", ("trial", "model"))] + ([("truth", ("trial", "model", "oracle"))] if has_truth else [])
        for col, (x_name, y_names) in enumerate(panels):
            ax = axes[row, col]
            if s[x_name] is None:
                ax.axis("off")
                ax.text(0.5, 0.5, "no noise-free truth\n(not a simulated scan)", ha="center", va="center",
                        transform=ax.transAxes)
                continue
            x = s[x_name]
            for y_name in y_names:
                r = offdiagonal_correlation(x, s[y_name])
                ax.scatter(x[i, j], s[y_name][i, j], s=5, alpha=0.45, color=FIG1D_COLORS[y_name], rasterized=True,
                           gid=f"{s['label']}|{y_name}|{x_name}", label=f"{_FIG1D_NAMES[y_name]}: r = {r:.3f}")
            lim = [min(ax.get_xlim()[0], ax.get_ylim()[0]), max(ax.get_xlim()[1], ax.get_ylim()[1])]
            ax.plot(lim, lim, color="#444444", linestyle="--", linewidth=0.8)
            ax.set_xlabel(f"{_FIG1D_NAMES[x_name]} of the pair (i, j) (cosine)", fontsize=8)
            ax.set_ylabel("similarity of the same pair (cosine)", fontsize=8)
            ax.set_title(f"{s['label']}: against {_FIG1D_NAMES[x_name]}\n{m} oracle images, "
                         f"{len(i)} of {m * (m - 1) // 2} pairs shown", fontsize=9)
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize=8, markerscale=2.5, frameon=False)
    fig.suptitle("Fig 1D: single-trial vs model similarity on the oracle images", fontsize=11)
    return fig


def oracle_comparison_table(scans: Sequence[dict]) -> pd.DataFrame:
    """Fig 1D's numbers: one row per scan, Pearson r of off-diagonal entries (NaN where a matrix is missing).

    Source: ``neural_reg.queries.oracle_comparison`` (the dicts of :func:`fig1d_oracle_scatter`, plus optional
    ``data_rest``, ``model_rest``, ``truth_rest`` over the non-oracle images: oracle.DataSimilarity,
    predictor.ModelSimilarity and the truth there). Columns: scan, oracle images, r(trial, oracle),
    r(model, oracle), r(trial, truth), r(model, truth), r(oracle, truth), non-oracle images, r(data, truth) and
    r(model, truth) on them (the training targets Neural (data) and Neural against the truth).
    """
    def r(a, b):
        return np.nan if a is None or b is None else offdiagonal_correlation(a, b)

    rows = []
    for s in scans:
        rest = s.get("data_rest")
        rows.append({"scan": str(s["label"]), "oracle images": int(np.shape(s["oracle"])[0]),
                     "r(trial, oracle)": r(s["trial"], s["oracle"]), "r(model, oracle)": r(s["model"], s["oracle"]),
                     "r(trial, truth)": r(s["trial"], s.get("truth")), "r(model, truth)": r(s["model"], s.get("truth")),
                     "r(oracle, truth)": r(s["oracle"], s.get("truth")),
                     "non-oracle images": int(np.shape(rest)[0]) if rest is not None else 0,
                     "r(data, truth) non-oracle": r(rest, s.get("truth_rest")),
                     "r(model, truth) non-oracle": r(s.get("model_rest"), s.get("truth_rest"))})
    return pd.DataFrame(rows)


CALIBRATION_TRIAL = "Fig 1D: r(single-trial, oracle similarity)"
CALIBRATION_MODEL = "Fig 1D: r(model, oracle similarity)"
CALIBRATION_EXPONENT = "power-law exponent of the population's spectrum"
CALIBRATION_ORACLE_R = "mean oracle correlation of a neuron"


def calibration_table(scans: Sequence[dict], oracle_stats: pd.DataFrame | None = None) -> pd.DataFrame:
    """This data beside mouse V1: one row per quantity, the mean over scans (min-max) and the reference value.

    scans: the dicts of :func:`oracle_comparison_table` (``exponent`` where the scan is simulated);
    oracle_stats: neural_reg.queries.oracle_statistics (its 'mean oracle r'). References: the paper's Fig 1D
    (r = 0.39 single-trial, 0.73 model, against the oracle similarity) and Stringer et al. 2019 (exponent 1.04)
    (pipeline.recording.calibration).
    """
    from pipeline.recording import calibration

    def summary(values) -> str:
        v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
        if len(v) == 0:
            return "-"
        return f"{v.mean():.2f}" + (f" ({v.min():.2f}-{v.max():.2f})" if len(v) > 1 else "")

    def r(a, b):
        return None if a is None or b is None else offdiagonal_correlation(a, b)

    rows = [(CALIBRATION_TRIAL, summary(r(s["trial"], s["oracle"]) for s in scans),
             f"{calibration.PAPER_TRIAL_VS_ORACLE_R:.2f} (paper, Fig 1D)"),
            (CALIBRATION_MODEL, summary(r(s["model"], s["oracle"]) for s in scans),
             f"{calibration.PAPER_MODEL_VS_DATA_R:.2f} (paper, Fig 1D)"),
            (CALIBRATION_EXPONENT, summary(s.get("exponent") for s in scans),
             f"{calibration.STRINGER_2019_EXPONENT:.2f} (mouse V1, Stringer et al. 2019)")]
    if oracle_stats is not None and not oracle_stats.empty:
        rows.append((CALIBRATION_ORACLE_R, summary(oracle_stats["mean oracle r"]),
                     "about 0.3-0.5 median, wide spread (the paper's lab)"))
    return pd.DataFrame(rows, columns=["quantity", "this data: mean over scans (min-max)", "mouse V1"])


# ------------------------------------------------------------------------------------------ Fig 4: noise

def _condition_styles(df: pd.DataFrame) -> tuple[list[str], dict]:
    """(series columns, {series key: (colour, condition label)}) for one line per condition."""
    cond = condition_columns(df)
    styles = {}
    for (reg, alpha), color in condition_colors(df).items():
        styles[(reg, alpha) if len(cond) == 2 else (reg,)] = (color, condition_label(reg, alpha))
    return cond, styles


def fig4_noise(df: pd.DataFrame) -> Figure:
    """Fig 4: test accuracy vs Gaussian noise std, one line per condition, mean +- SEM over seeds.

    Source: robustness.NoiseRobustness via ``neural_reg.queries.noise`` (one noise_name).
    df columns: regulariser, alpha (optional), seed, std (noise std, pixels in [0, 1]), accuracy (fraction
    correct, [0, 1]); one row per (regulariser, alpha, seed, std). One axes; ax.lines holds one line per
    condition (gid = its label, e.g. 'None', 'Neural (α=10)', or the bare regulariser without an alpha column;
    data = the means), the SEM bars are LineCollections in ax.collections (none where n = 1).
    """
    _check_frame(df, ["regulariser", "seed", "std", "accuracy"], ["regulariser", "seed", "std"],
                 ["std", "accuracy"])
    _check_range(df, "accuracy", 0.0, 1.0, "df", "pass the fraction correct (divide percentages by 100)")
    series, styles = _condition_styles(df)

    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.add_subplot()
    _mean_sem_lines(ax, df, series, "std", "accuracy", styles)
    ax.set_xlabel("Gaussian noise std (pixel intensity, images in [0, 1])")
    ax.set_ylabel("test accuracy (fraction correct)")
    ax.set_title(f"Fig 4: accuracy under additive Gaussian noise{_config_note(df)}\n(mean ± SEM over seeds)",
                 fontsize=10)
    ax.legend(fontsize=8)
    return fig


# ---------------------------------------------------------------------------------------- Fig 5: queries

def mean_step_curve(df: pd.DataFrame, x: str = "queries", y: str = "median", by: str = "seed"):
    """Mean over ``by`` groups (seeds) of best-so-far curves sampled at different x (queries).

    Each group's curve is a step function: its value at q is the y of its last point with x <= q (the best
    found within q queries). The mean is taken on the union of all x from the largest first x on (where
    every group is defined). Returns (x (k,), mean y (k,)) float64.
    """
    curves = [(g[x].to_numpy(np.float64), g[y].to_numpy(np.float64))
              for _, g in df.sort_values(x).groupby(by, sort=False)]
    start = max(c[0][0] for c in curves)
    grid = np.unique(np.concatenate([c[0] for c in curves]))
    grid = grid[grid >= start]
    values = [yy[np.searchsorted(xx, grid, side="right") - 1] for xx, yy in curves]  # one per seed
    return grid, np.mean(values, axis=0)


def _log_queries_axis(ax, queries: np.ndarray, max_ticks: int = 6) -> None:
    """Log x; a range under a factor 3 widened to one around its centre (a single point would otherwise get an
    axis spanning its rounding noise); with few distinct points, ticks labelled at the points themselves."""
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks collide on short ranges
    q = queries[np.isfinite(queries) & (queries > 0)]
    if q.size == 0:
        return
    lo, hi = float(q.min()), float(q.max())
    if hi / lo < 3:
        centre = np.sqrt(lo * hi)
        ax.set_xlim(centre / 3, centre * 3)
    else:
        ax.set_xlim(lo / 1.4, hi * 1.4)
    ticks = np.unique(np.round(q, 0 if hi >= 10 else 2))
    if len(ticks) <= max_ticks:
        keep = [ticks[0]]
        for t in ticks[1:]:  # points closer than 10 % share one tick
            if t / keep[-1] > 1.1:
                keep.append(t)
        ax.set_xticks(keep, labels=[f"{t:.4g}" for t in keep])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.tick_params(axis="x", which="minor", length=2)


def curve_by_setting(df: pd.DataFrame) -> pd.DataFrame:
    """Fig 5's curves aligned over seeds: one row per (condition, attack, norm, step).

    df: as :func:`fig5_queries` takes it. Every classifier's curve of one attack holds one point per setting of
    the attack's sweep, in sweep order (cumulative queries increase), so the k-th point of every seed's curve is
    after the same k settings: ``step`` k (0-based, the rank of queries within its curve). Per step: queries
    (mean over seeds of the cumulative queries per sample), mean, sem (ddof 1; NaN for one seed), lo and hi
    (min and max over seeds) of the median perturbation, n (seeds). Condition columns as in df.
    """
    cond = condition_columns(df)
    curve = cond + ["seed", "attack", "norm"]
    d = df.sort_values(curve + ["queries"], kind="stable").copy()
    d["step"] = d.groupby(curve, sort=False, dropna=False).cumcount()
    d["median"] = pd.to_numeric(d["median"]).astype(np.float64)
    d["queries"] = pd.to_numeric(d["queries"]).astype(np.float64)
    g = d.groupby(cond + ["attack", "norm", "step"], sort=True, dropna=False)
    out = pd.DataFrame({"queries": g["queries"].mean(), "mean": g["median"].mean(), "sd": g["median"].std(ddof=1),
                        "lo": g["median"].min(), "hi": g["median"].max(), "n": g["median"].size()})
    out["sem"] = out["sd"] / np.sqrt(out["n"])
    return out.drop(columns="sd").reset_index()


def fig5_queries(df: pd.DataFrame) -> Figure:
    """Fig 5: median minimal perturbation vs model queries per sample, one panel per attack.

    Source: robustness.Adversarial (its queries_curve, with AttackConfig's attack_name and norm) via
    ``neural_reg.queries.query_curves``.
    df columns: regulariser, alpha (optional), seed, attack, norm, queries (> 0, cumulative model queries per
    attacked sample), median (median over samples of the best perturbation found so far; pixels in [0, 1]);
    one row per (regulariser, alpha, seed, attack, norm, queries). Panels: one per attack (ordered by norm,
    then name; title 'attack (norm)'), log x. In each, one line per condition: the mean over seeds at each
    point of the attack's sweep (:func:`curve_by_setting`), with +- SEM bars over seeds and a shaded +- SEM band
    (ax.lines: one line per condition, gid 'attack|condition label', data = the means). One legend for the
    whole figure, outside the axes (right), naming the conditions with their number of seeds.
    """
    cols = ["regulariser", "seed", "attack", "norm", "queries", "median"]
    _check_frame(df, cols, cols[:5], ["queries", "median"])
    _check_range(df, "queries", np.nextafter(0, 1), np.inf, "df", "queries must be > 0 (log axis)")
    _check_range(df, "median", 0.0, np.inf, "df", "perturbation sizes are >= 0")
    colors = condition_colors(df)
    summ = curve_by_setting(df)
    panels = sorted({(a, n) for a, n in zip(df["attack"], df["norm"])},
                    key=lambda an: (_order_norms(df["norm"]).index(an[1]), str(an[0])))
    ncols = 2 if len(panels) == 4 else min(len(panels), 3)
    nrows = int(np.ceil(len(panels) / ncols))
    fig = Figure(figsize=(4.2 * ncols + 2.6, 3.8 * nrows + 0.4), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    handles = {}
    for ax, (attack, norm) in zip(axes, panels):
        d = summ[(summ["attack"] == attack) & (summ["norm"] == norm)]
        for cond, color in colors.items():
            g = d[_condition_mask(d, cond)]
            if g.empty:
                continue
            g = g.sort_values("step")
            q, m, sem = g["queries"].to_numpy(), g["mean"].to_numpy(), g["sem"].to_numpy()
            label = condition_label(*cond)
            container = _errorbar(ax, q, m, np.nan_to_num(sem), color, label, f"{attack}|{label}")
            if len(q) > 1 and np.isfinite(sem).all():
                ax.fill_between(q, m - sem, m + sem, color=color, alpha=0.15, linewidth=0)
            handles.setdefault(label, (container, _n_seeds(g["n"])))
        _log_queries_axis(ax, d["queries"].to_numpy(np.float64))
        ax.set_xlabel("model queries per attacked sample (log scale)", fontsize=8)
        ax.set_ylabel(f"median minimal {norm} perturbation\n(pixel intensity, images in [0, 1])", fontsize=8)
        points = int(d["step"].max()) + 1 if not d.empty else 0
        ax.set_title(f"{attack} ({norm}), {points} point{'s' if points != 1 else ''} per curve", fontsize=9)
    for ax in axes[len(panels):]:
        ax.axis("off")
    fig.legend([h for h, _ in handles.values()], [f"{k} ({n})" for k, (_, n) in handles.items()],
               loc="outside right upper", fontsize=8, title="condition (seeds)", title_fontsize=8)
    fig.suptitle("Fig 5: median minimal adversarial perturbation vs model queries\n(mean ± SEM over seeds at each "
                 "point of the attack's sweep; higher = more robust)" + _config_note(df), fontsize=10)
    return fig


# ------------------------------------------------------------------------------------------ Fig 6: alpha

def _alpha_scale(ax, alphas: np.ndarray) -> None:
    """log if every alpha > 0 and they span >= a decade; symlog if 0 is among widely spread alphas."""
    pos = alphas[alphas > 0]
    if pos.size >= 2 and pos.max() / pos.min() >= 10:
        if (alphas <= 0).any():
            ax.set_xscale("symlog", linthresh=float(pos.min()))
        else:
            ax.set_xscale("log")


def fig6_alpha(df: pd.DataFrame) -> Figure | None:
    """Fig 6: median minimal perturbation vs the similarity-loss weight alpha, one panel per norm.

    Source: robustness.RobustnessScore.Norm via ``neural_reg.queries.scores`` (one attack_set).
    df columns: regulariser, alpha (>= 0), seed, norm, median; one row per (regulariser, alpha, seed, norm).
    One line per regulariser across its alphas, mean +- SEM over seeds (gid 'norm|regulariser'); the baseline
    None (alpha 0) is a horizontal dashed line at its mean (gid 'norm|None') with its +- SEM band. Returns None
    when the regularisers other than None hold fewer than 2 distinct alphas (no sweep to show).
    """
    _check_frame(df, ["regulariser", "alpha", "seed", "norm", "median"], ["regulariser", "seed", "norm"],
                 ["alpha", "median"])
    is_base = (df["regulariser"] == BASELINE).to_numpy()
    swept, base = df[~is_base], df[is_base]
    alphas = np.unique(pd.to_numeric(swept["alpha"]).to_numpy(np.float64))
    if (alphas > 0).sum() < 2:  # a sweep needs two regularised strengths; alpha 0 (None) alone is no sweep
        return None
    styles = {(reg,): (color, reg) for reg, color in regulariser_colors(swept["regulariser"]).items()}
    norms = _order_norms(df["norm"])

    fig = Figure(figsize=(4.8 * len(norms), 4.2), layout="constrained")
    axes = fig.subplots(1, len(norms), squeeze=False)[0]
    for ax, norm in zip(axes, norms):
        _mean_sem_lines(ax, swept[swept["norm"] == norm], ["regulariser"], "alpha", "median", styles,
                        gid_prefix=f"{norm}|")
        b = base[base["norm"] == norm]
        if not b.empty:
            v = pd.to_numeric(b["median"]).to_numpy(np.float64)
            mean, color = float(v.mean()), REGULARISER_COLORS[BASELINE]
            ax.axhline(mean, color=color, linestyle="--", linewidth=1.4, gid=f"{norm}|{BASELINE}",
                       label=f"{BASELINE} (α=0, {_n_seeds([len(v)])})")
            if len(v) > 1:
                sem = float(v.std(ddof=1) / np.sqrt(len(v)))
                ax.axhspan(mean - sem, mean + sem, color=color, alpha=0.12, linewidth=0)
        _alpha_scale(ax, alphas)
        ax.set_xlabel(r"similarity loss weight $\alpha$ (Eq 7, dimensionless)")
        ax.set_ylabel(f"median minimal {norm} perturbation\n(pixel intensity, images in [0, 1])")
        ax.set_title(f"{norm}", fontsize=10)
        ax.legend(fontsize=7)
    fig.suptitle(r"Fig 6: robustness vs regularisation strength $\alpha$ (mean ± SEM over seeds)"
                 + _config_note(df), fontsize=10)
    return fig


# ------------------------------------------------------------------------------------------------ tables

def _condition_table(df: pd.DataFrame, column: str, value: str, column_order: list) -> pd.DataFrame:
    """Mean of ``value`` per condition x ``column``: index the condition (regulariser, or (regulariser, alpha)
    where df has alpha) in canonical order, columns ``column_order``; NaN where a condition lacks a column."""
    cond = condition_columns(df)
    x = df.assign(**{value: pd.to_numeric(df[value]).astype(np.float64)})
    table = x.pivot_table(index=cond, columns=column, values=value, aggfunc="mean")
    conds = conditions(df)
    index = pd.MultiIndex.from_tuples(conds, names=cond) if len(cond) == 2 else \
        pd.Index([r for r, _ in conds], name=cond[0])
    table = table.reindex(index=index, columns=column_order)
    table.columns.name = column
    return table


def table1_layer_weights(df: pd.DataFrame) -> pd.DataFrame:
    """Table 1: mean over seeds of the final layer weight gamma (Eq 10), condition x layer.

    Source: classifier.TrainedClassifier.LayerWeight via ``neural_reg.queries.layer_weights``.
    df columns: regulariser, alpha (optional), seed, layer, gamma (>= 0); one row per (regulariser, alpha,
    seed, layer). Returns a DataFrame: index 'regulariser' (or 'regulariser', 'alpha' where df has alpha;
    canonical order), columns the layers (natural order, so 'conv5' before 'conv13'), values mean gamma (NaN
    where a condition has no such layer).
    """
    _check_frame(df, ["regulariser", "seed", "layer", "gamma"], ["regulariser", "seed", "layer"], ["gamma"])
    _check_range(df, "gamma", 0.0, np.inf, "df", "gamma is a softmax weight >= 0")
    return _condition_table(df, "layer", "gamma", sorted(pd.unique(df["layer"]), key=_natural_key))


def corruption_table(df: pd.DataFrame) -> pd.DataFrame:
    """Mean accuracy under common corruptions: rows the condition, columns corruption (+ 'mean').

    Source: robustness.CorruptionRobustness.Score via ``neural_reg.queries.corruptions`` (one corruption_name).
    df columns: regulariser, alpha (optional), seed, corruption, severity, accuracy ([0, 1]); one row per
    (regulariser, alpha, seed, corruption, severity). Index as :func:`table1_layer_weights`. Each corruption
    column is the mean over seeds and severities; 'mean' is the mean of the corruption columns (each
    corruption weighted equally). Corruption columns in order of first appearance.
    """
    _check_frame(df, ["regulariser", "seed", "corruption", "severity", "accuracy"],
                 ["regulariser", "seed", "corruption", "severity"], ["accuracy"])
    _check_range(df, "accuracy", 0.0, 1.0, "df", "pass the fraction correct (divide percentages by 100)")
    table = _condition_table(df, "corruption", "accuracy", list(pd.unique(df["corruption"])))
    table["mean"] = table.mean(axis=1, skipna=False)
    return table


def uninformative_corruptions(df: pd.DataFrame, n_classes: int, n_samples: int) -> pd.DataFrame:
    """The (corruption, severity) rows at which EVERY classifier is at chance: they cannot separate models.

    df as :func:`corruption_table` takes it (one corruption_name); n_classes: the task's classes (chance =
    1 / n_classes); n_samples: the corrupted test images per row (robustness.CorruptionRobustness.n_samples),
    for the binomial noise of chance. A row is uninformative when the best classifier's accuracy is below
    chance + 3 binomial standard errors. Returns columns corruption, severity, best accuracy, chance bound
    (empty when every row separates).
    """
    chance = 1.0 / n_classes
    bound = chance + 3.0 * np.sqrt(chance * (1 - chance) / n_samples)
    best = df.groupby(["corruption", "severity"], sort=False)["accuracy"].max().reset_index(name="best accuracy")
    out = best[best["best accuracy"] < bound].copy()
    out["chance bound"] = bound
    return out.reset_index(drop=True)


# --------------------------------------------------------------------------------- targets, effects

def target_spectrum(df: pd.DataFrame) -> Figure:
    """The eigenvalue spectrum of each target: eigenvalue / trace against rank, log-log, one line per target.

    Source: target.TargetDiagnostics via ``neural_reg.queries.target_diagnostics``.
    df columns: target_name, regulariser (the kind's label, for the colour), eigenvalue_shares (array of the
    leading eigenvalues over the trace, largest first), optionally spectrum_exponent (shown in the legend).
    Left: shares against rank (non-positive shares are not drawn on the log axis); right: the cumulative share
    of the leading k. ax.lines: one line per target per panel, gid = target_name.
    """
    require_columns(df, ["target_name", "regulariser", "eigenvalue_shares"], "df")
    colors = regulariser_colors(df["regulariser"])
    fig = Figure(figsize=(9.6, 4.0), layout="constrained")
    ax, cum = fig.subplots(1, 2)
    for row in df.sort_values("target_name", kind="stable").to_dict("records"):
        shares = np.asarray(row["eigenvalue_shares"], np.float64).ravel()
        if shares.size == 0:
            raise ReportInputError(f"'eigenvalue_shares' of target {row['target_name']!r} is empty. Fix: store "
                                   "the leading eigenvalues over the trace (TargetDiagnostics)")
        rank = np.arange(1, shares.size + 1)
        label = str(row["target_name"])
        exponent = row.get("spectrum_exponent")
        if exponent is not None and np.isfinite(exponent):
            label += f" (exponent {float(exponent):.2f})"
        shown = shares > 0
        ax.plot(rank[shown], shares[shown], color=colors[row["regulariser"]], marker=".", linewidth=1.3,
                label=label, gid=str(row["target_name"]))
        cum.plot(rank, np.cumsum(shares), color=colors[row["regulariser"]], linewidth=1.3,
                 gid=str(row["target_name"]))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("rank k of the eigenvalue")
    ax.set_ylabel("eigenvalue k / trace")
    ax.set_title("target spectra (leading eigenvalues)", fontsize=10)
    ax.legend(fontsize=7)
    cum.set_xscale("log")
    cum.set_ylim(0, 1)
    cum.set_xlabel("k")
    cum.set_ylabel("share of the trace in the leading k")
    cum.set_title("cumulative share", fontsize=10)
    return fig


def target_diagnostics_table(df: pd.DataFrame) -> pd.DataFrame:
    """TargetDiagnostics per target for the page: target_name, regulariser, kind and every scalar diagnostic
    present (the eigenvalue_shares array is the figure's, left out). Rows in target_name order."""
    require_columns(df, ["target_name"], "df")
    scalar = [c for c in df.columns if c != "eigenvalue_shares"]
    return df[scalar].sort_values("target_name", kind="stable").reset_index(drop=True)


_VERDICT_COLORS = {"yes": "#2ca02c", "no": "#d62728", "unresolved": "#7f7f7f"}


def fig_effects(effects: pd.DataFrame) -> Figure:
    """Forest plot of an effect table: one panel per metric, one row per comparison ('Neural vs Pixel'), the
    effect (percent change for log-ratios, percentage points for differences) with its corrected CI, coloured by
    verdict (yes green, no red, unresolved grey), 0 dashed.

    Source: pipeline.report.stats.effect_table / claim_effects (columns metric, regulariser, alpha, reference,
    scale, effect, ci_adj_low, ci_adj_high, verdict). ax.lines of a panel: the 0 line, then one line per
    comparison (its CI; gid '<regulariser> vs <reference>').
    """
    require_columns(effects, ["metric", "regulariser", "reference", "scale", "effect", "ci_adj_low",
                              "ci_adj_high", "verdict"], "effects")
    metrics = list(dict.fromkeys(effects["metric"]))
    n_rows = int(effects.groupby("metric").size().max())
    fig = Figure(figsize=(3.4 * len(metrics), 0.9 + 0.32 * n_rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(metrics), sharey=True, squeeze=False)[0])
    labels = list(dict.fromkeys(f"{r} vs {c}" for r, c in zip(effects["regulariser"], effects["reference"])))
    y = {lab: k for k, lab in enumerate(labels)}
    for ax, metric in zip(axes, metrics):
        rows = effects[effects["metric"] == metric]
        log = (rows["scale"] == "log-ratio").all()
        scale = (lambda v: 100 * np.expm1(v)) if log else (lambda v: 100 * np.asarray(v))
        ax.axvline(0, color="#999999", linestyle="--", linewidth=1)
        for row in rows.to_dict("records"):
            lab = f"{row['regulariser']} vs {row['reference']}"
            color = _VERDICT_COLORS.get(row["verdict"], "#7f7f7f")
            ax.plot(scale([row["ci_adj_low"], row["ci_adj_high"]]), [y[lab]] * 2, color=color, linewidth=2,
                    gid=lab)
            ax.plot(scale(row["effect"]), y[lab], "o", color=color, markersize=4)
        ax.set_title(metric, fontsize=10)
        ax.set_xlabel("change (%)" if log else "difference (pp)")
    axes[0].set_yticks(range(len(labels)), labels, fontsize=8)
    axes[0].invert_yaxis()
    return fig


def interval_table(intervals: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """Conditions x metrics, each cell 'estimate [ci_low, ci_high]' ('estimate [no CI: 1 seed]' without a CI;
    from pipeline.report.stats.condition_intervals); index (regulariser, alpha) in canonical order, plus a
    column 'seeds'."""
    require_columns(intervals, ["metric", "regulariser", "alpha", "n_seeds", "estimate", "ci_low", "ci_high"],
                    "intervals")
    x = intervals.assign(cell=[f"{e:.{digits}g} [{lo:.{digits}g}, {hi:.{digits}g}]" if np.isfinite(lo) and
                               np.isfinite(hi) else f"{e:.{digits}g} [no CI: {n} seed]"
                               for e, lo, hi, n in zip(intervals["estimate"], intervals["ci_low"],
                                                       intervals["ci_high"], intervals["n_seeds"])])
    table = x.pivot_table(index=["regulariser", "alpha"], columns="metric", values="cell", aggfunc="first")
    table = table.reindex(columns=list(dict.fromkeys(intervals["metric"])))
    seeds = x.groupby(["regulariser", "alpha"])["n_seeds"].max()
    table.insert(0, "seeds", seeds.reindex(table.index).astype(int))
    order = pd.MultiIndex.from_tuples(conditions(intervals), names=["regulariser", "alpha"])
    table = table.reindex(order)
    table.columns.name = None
    return table.fillna("-")


# the two definitions of brain-likeness, named (robustness.BrainLikeness)
BRAIN_LIKENESS_NAMES = {
    "correlation": "r as trained (the regulariser's centring and BN mode)",
    "correlation_eval": "r eval-mode (eval BN, per-element centring)",
}


def brain_likeness_table(df: pd.DataFrame) -> pd.DataFrame:
    """Brain-likeness per target and condition, both definitions named: mean ± SEM over seeds of
    ``correlation`` (as trained) and, where present and not all NaN, ``correlation_eval`` (eval-mode BN,
    per-element centring); columns BRAIN_LIKENESS_NAMES, 'n' the seeds.

    Source: robustness.BrainLikeness via ``neural_reg.queries.brain_likeness``. df columns: target_name,
    regulariser, alpha (optional), seed, correlation, optionally correlation_eval.
    """
    require_columns(df, ["target_name", "regulariser", "seed", "correlation"], "df", numeric=["correlation"])
    keys = ["target_name"] + condition_columns(df)
    out = None
    for column, name in BRAIN_LIKENESS_NAMES.items():
        if column not in df.columns or pd.to_numeric(df[column], errors="coerce").isna().all():
            continue
        s = summary_with_spread(df.dropna(subset=[column]), column, keys)
        cell = [f"{m:.3f}" + (f" ± {e:.3f}" if np.isfinite(e) else "") for m, e in zip(s["mean"], s["sem"])]
        part = s[keys].assign(**{name: cell, "n": s["n"]})
        out = part if out is None else out.merge(part.drop(columns="n"), on=keys, how="outer")
    rank = {r: k for k, r in enumerate(order_regularisers(out["regulariser"]))}
    out = out.sort_values(keys, key=lambda c: c.map(rank) if c.name == "regulariser" else c, kind="stable")
    return out[[c for c in out.columns if c != "n"] + ["n"]].reset_index(drop=True)


# -------------------------------------------------------------------------------------------------- save

def save(fig: Figure, path, dpi: int = 110) -> Path:
    """Write ``fig`` as PNG to ``path`` (parents created) at ``dpi``, then close it. Returns the Path."""
    if not isinstance(fig, Figure):
        raise ReportInputError(f"'fig': expected a matplotlib Figure, got {type(fig).__name__}")
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ReportInputError(f"'path': {path} does not end in .png. Fix: name the file *.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png")
    pyplot = sys.modules.get("matplotlib.pyplot")  # only a pyplot-made figure is registered anywhere
    if pyplot is not None:
        pyplot.close(fig)
    fig.clear()
    return path
