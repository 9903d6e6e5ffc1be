"""`neural-reg report OUTDIR`: the paper's figures and tables from the result tables, as PNGs and one HTML page.

The database is read once (:func:`experiment_frames`, :func:`neural_section`); :func:`experiment_sections` and
:func:`summary_frame` work on the frames of ``neural_reg.queries`` alone, so they run without a database.
Conditions are (regulariser, alpha): every table shows alpha in its own column, and scores of two attack sets
(or noise / corruption configurations) are never mixed: each gets its own figure, columns or table rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.oracle.similarity import offdiagonal_correlation
from pipeline.report import figures, stats
from pipeline.report.conditions import conditions, sort_conditions
from pipeline.report.html import write_report

from . import queries

# the frames one experiment's sections are drawn from: name -> the queries function that fetches it
FRAMES = {"noise": queries.noise, "scores": queries.scores, "curves": queries.query_curves,
          "gammas": queries.layer_weights, "corruptions": queries.corruptions, "brain": queries.brain_likeness}


def _groups(df: pd.DataFrame, column: str):
    """(value, rows) per distinct value of ``column`` (sorted); one (None, df) when df lacks the column."""
    if column not in df.columns:
        yield None, df
        return
    for value, rows in df.groupby(column, sort=True, dropna=False):
        yield value, rows


def _mean_sd(values: pd.Series, digits: int) -> str:
    v = pd.to_numeric(values, errors="coerce").dropna().to_numpy(float)
    if len(v) == 0:
        return "-"
    return f"{v.mean():.{digits}f}" + (f" ± {v.std(ddof=1):.{digits}f}" if len(v) > 1 else "")


def summary_frame(base: pd.DataFrame, noise: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """One row per condition: regulariser, alpha, seeds, clean accuracy, accuracy at each noise std > 0, median
    minimal L2 / Linf perturbation; each as mean ± sd over seeds.

    Sources: classifier.TrainedClassifier (queries.classifiers), robustness.NoiseRobustness (queries.noise),
    robustness.RobustnessScore.Norm (queries.scores). With several noise configurations or attack sets each has
    its own columns ('acc σ=0.1 [name]', 'median L2 [attack set]'), so none are mixed.
    """
    def mask(df: pd.DataFrame, cond: tuple) -> np.ndarray:
        reg, alpha = cond
        m = (df["regulariser"] == reg).to_numpy()
        return m & (df["alpha"] == alpha).to_numpy() if alpha is not None and "alpha" in df.columns else m

    def suffix(df: pd.DataFrame, column: str, value) -> str:
        return f" [{value}]" if column in df.columns and df[column].nunique() > 1 else ""

    rows = []
    for cond in conditions(base):
        mine = base[mask(base, cond)]
        row = {"regulariser": cond[0], "alpha": cond[1], "seeds": len(mine),
               "clean acc": _mean_sd(mine["test_accuracy"], 3)}
        if not noise.empty:
            for name, config in _groups(noise, "noise_name"):
                n = config[mask(config, cond)]
                for std in sorted(config["std"].unique()):
                    if std > 0:
                        row[f"acc σ={std:g}{suffix(noise, 'noise_name', name)}"] = \
                            _mean_sd(n[n["std"] == std]["accuracy"], 3)
        if not scores.empty:
            for name, attack_set in _groups(scores, "attack_set"):
                s = attack_set[mask(attack_set, cond)]
                for norm in ("L2", "Linf"):
                    row[f"median {norm}{suffix(scores, 'attack_set', name)}"] = \
                        _mean_sd(s[s["norm"] == norm]["median"], 4)
        rows.append(row)
    return pd.DataFrame(rows)


def summary_table() -> str:
    """The demo's printed table: for the experiment with the most classifiers."""
    base = queries.classifiers()
    if base.empty:
        return "no trained classifiers yet"
    experiment = queries.experiments(base)[0]
    base = queries.restrict(base, experiment)
    table = summary_frame(base, queries.noise(base), queries.scores(base))
    title = ", ".join(f"{k}={v}" for k, v in experiment.items())
    return f"{title}  (mean ± sd over seeds)\n" + table.to_string(index=False)


def neural_section(outdir: Path) -> list[dict]:
    """Fig 1 and Fig 1C sections (Sources: queries.similarity_scans, queries.oracle_statistics, queries.stability)."""
    sections = []
    scans = queries.similarity_scans()
    if scans:
        path = figures.save(figures.fig1_similarity(scans[:4]), outdir / "fig1_similarity.png")
        r = [offdiagonal_correlation(s["data"], s["model"]) for s in scans]
        sections.append({"title": "Fig 1: similarity of the data (Eq 2) and of the predictive model (Eq 6)",
                         "text": f"Per scan, single-trial and model similarity on the same non-oracle images; "
                                 f"r(data, model) = {', '.join(f'{x:.2f}' for x in r)}.",
                         "images": [path],
                         "tables": [("Oracle statistics and predictors", queries.oracle_statistics())]})
    for row in queries.stability():
        fig = figures.fig1_stability(row["bin_edges"], row["scan_histogram"], row["repeat_histogram"],
                                     row["scan_width"], row["repeat_width"])
        path = figures.save(fig, outdir / f"fig1c_stability_{row['scan_group']}.png")
        sections.append({"title": f"Fig 1C: fluctuations across scans vs across repeats ({row['scan_group']})",
                         "text": f"sd across scans {row['scan_width']:.3f}, across repeats "
                                 f"{row['repeat_width']:.3f} ({row['n_scans']} scans).", "images": [path]})
    return sections


def _tag(*parts) -> str:
    return "_".join(str(p) for p in parts if p is not None).replace("/", "-").replace(" ", "-")


def noise_comparisons(noise: pd.DataFrame) -> pd.DataFrame:
    """Paired comparisons of accuracy at each noise configuration's highest std (Source: queries.noise)."""
    within = ["noise_name"] if "noise_name" in noise.columns else []
    highest = noise.groupby(within)["std"].transform("max") if within else noise["std"].max()
    return stats.paired_comparisons(noise[noise["std"] == highest], "accuracy", within=within)


def score_comparisons(scores: pd.DataFrame) -> pd.DataFrame:
    """Paired comparisons of the median minimal perturbation per attack set and norm (Source: queries.scores)."""
    within = (["attack_set"] if "attack_set" in scores.columns else []) + ["norm"]
    return stats.paired_comparisons(scores, "median", within=within)


def _has_reference(df: pd.DataFrame) -> bool:
    return bool(set(stats.CONTROL_REFERENCES) & set(df["regulariser"]))


def experiment_frames(base: pd.DataFrame, experiment: dict, frames: dict | None = None) -> dict:
    """The frames of one experiment: base and FRAMES restricted to it (``frames``: fetched ones to reuse)."""
    frames = frames if frames is not None else {name: fetch(base) for name, fetch in FRAMES.items()}
    out = {name: queries.restrict(df, experiment) for name, df in frames.items()}
    out["base"] = queries.restrict(base, experiment)
    return out


def experiment_sections(outdir: Path, experiment: dict, frames: dict) -> list[dict]:
    """The sections of one experiment from its frames (:func:`experiment_frames`; missing ones count as empty)."""
    outdir = Path(outdir)
    get = {name: frames.get(name, pd.DataFrame()) for name in ["base", *FRAMES]}
    base, noise, scores = get["base"], get["noise"], get["scores"]
    tag = _tag(*experiment.values())
    title = ", ".join(f"{k}={v}" for k, v in experiment.items())
    sections = [{"title": f"Summary ({title})", "text": "Mean ± sd over seeds; a condition is (regulariser, alpha).",
                 "tables": [summary_frame(base, noise, scores)]}]
    compare_text = ("Paired by seed; each regulariser against None and against each control (Shuffle, Pixel, "
                    "Random, VGG) at the same alpha, once per pair, with the 95 % CI of the mean difference and "
                    "Benjamini-Hochberg adjusted p values (a gain a control also gives is not a gain of neural "
                    "data).")
    if not noise.empty:
        images = [figures.save(figures.fig4_noise(rows), outdir / f"fig4_noise_{_tag(tag, name)}.png")
                  for name, rows in _groups(noise, "noise_name")]
        tables = ([("Paired comparisons at the highest noise std", noise_comparisons(noise))]
                  if _has_reference(noise) else [])
        sections.append({"title": "Fig 4: accuracy under Gaussian noise", "text": compare_text,
                         "images": images, "tables": tables})
    curves = get["curves"]
    if not scores.empty or not curves.empty:
        images = [figures.save(figures.fig5_queries(curves), outdir / f"fig5_queries_{tag}.png")] \
            if not curves.empty else []
        tables = []
        for name, rows in ([] if scores.empty else _groups(scores, "attack_set")):
            sweep = figures.fig6_alpha(rows)
            if sweep is not None:
                images.append(figures.save(sweep, outdir / f"fig6_alpha_{_tag(tag, name)}.png"))
        if not scores.empty:
            if _has_reference(scores):
                tables.append(("Median minimal perturbation, paired comparisons", score_comparisons(scores)))
            shown = sort_conditions(scores, then=[c for c in ("attack_set", "norm") if c in scores.columns])
            tables.append(("Scores", shown.drop(columns=[c for c in ("kind",) if c in shown.columns])))
        sections.append({"title": "Fig 5-6: minimal adversarial perturbations",
                         "text": "Per sample the smallest perturbation over every attack of the attack set "
                                 "(Schott et al.); the score is the median over samples, one Fig 6 per attack "
                                 "set. Robust accuracy at the RobustBench thresholds is in the scores table. "
                                 + compare_text,
                         "images": images, "tables": tables})
    if not get["gammas"].empty:
        sections.append({"title": "Table 1: final layer weights gamma",
                         "tables": [figures.table1_layer_weights(get["gammas"])]})
    if not get["corruptions"].empty:
        sections.append({"title": "Common corruptions: mean accuracy over severities",
                         "tables": [(f"corruption config {name}" if name is not None else "",
                                     figures.corruption_table(rows))
                                    for name, rows in _groups(get["corruptions"], "corruption_name")]})
    brain = get["brain"]
    if not brain.empty:
        table = stats.summary_with_spread(brain, "correlation", ["target_name", "regulariser", "alpha"])
        sections.append({"title": "Brain-likeness: the classifier's similarity vs neural targets (held-out images)",
                         "text": "Mean ± SEM over seeds, per target and condition.",
                         "tables": [sort_conditions(table, then=["target_name"])]})
    return sections


def build_report(outdir) -> Path:
    """Write the figures and index.html under outdir; return the HTML's path."""
    import datajoint as dj

    from schemas import recording

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    sections = neural_section(outdir)
    base = queries.classifiers()
    frames = {name: fetch(base) for name, fetch in FRAMES.items()}  # each table read once
    for experiment in queries.experiments(base):
        sections += experiment_sections(outdir, experiment, experiment_frames(base, experiment, frames))
    conn = dj.conn()
    provenance = (f"database {conn.conn_info['host']}, schema {recording.schema.database}; "
                  f"{len(recording.Scan())} scans, {len(base)} classifiers")
    return write_report(outdir, "neural-reg: learning from brains how to regularise machines", sections,
                        provenance=provenance)
