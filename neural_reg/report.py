"""`neural-reg report OUTDIR`: the paper's figures and tables from the result tables, as PNGs and one HTML page.

The database is read once (:func:`experiment_frames`, :func:`neural_section`); :func:`experiment_sections` and
:func:`summary_frame` work on the frames of ``neural_reg.queries`` alone, so they run without a database.
Conditions are (regulariser, alpha): every table shows alpha in its own column, and scores of two attack sets
(or noise / corruption configurations) are never mixed: each gets its own figure, columns or table rows. The
adversarially trained classifier (TrainConfig with ``adversarial``) is the condition 'Adversarial (PGD)' of the
experiment of its plain schedule (queries.classifiers).

Per experiment, :func:`robustness_statistics` gives the conditions with 95 % CIs, the effects of every condition
against None and each control, and the verdict table ('Neural beats <None / each control>', 'Adversarial (PGD)
beats None': yes / no / unresolved), by the hierarchical bootstrap of pipeline.report.stats; the demo prints the
first two (:func:`summary_table`). The target diagnostics section (target.TargetDiagnostics) and both definitions
of brain-likeness (as trained, eval-mode) are on the page too.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.oracle.similarity import offdiagonal_correlation
from pipeline.report import figures, provenance, stats
from pipeline.report.conditions import conditions, sort_conditions
from pipeline.report.html import write_report

from . import queries

# the frames one experiment's sections are drawn from: name -> the queries function that fetches it
FRAMES = {"noise": queries.noise, "scores": queries.scores, "curves": queries.query_curves,
          "gammas": queries.layer_weights, "corruptions": queries.corruptions, "brain": queries.brain_likeness,
          "samples": queries.score_samples}


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


def robustness_statistics(frames: dict, n_boot: int = stats.N_BOOT, seed: int = stats.BOOT_SEED) -> dict | None:
    """The bootstrap statistics of one experiment's frames (pipeline.report.stats, module docstring), or None
    when it has no robustness rows.

    frames: as :func:`experiment_frames` ('base', 'samples', 'noise', 'corruptions'; missing ones count as
    empty). Returns {'metrics', 'intervals' (condition_intervals, clean accuracy first), 'effects' (every
    condition against None and each control), 'claims' (claim_effects), 'verdicts' (verdict_table)}.
    """
    get = {name: frames.get(name) for name in ("base", "samples", "noise", "corruptions")}
    metrics = stats.robustness_metrics(get["samples"], get["noise"], get["corruptions"])
    if not metrics:
        return None
    base = get["base"]
    clean = []
    if base is not None and len(base) and "test_accuracy" in base.columns:
        base = base if "alpha" in base.columns else base.assign(alpha=0.0)
        clean = [stats.Metric("clean acc", base[["regulariser", "alpha", "seed"]],
                              base["test_accuracy"].to_numpy(np.float64), "mean", "linear", per_sample=False)]
    intervals = stats.condition_intervals(clean + metrics, n_boot=n_boot, seed=seed)
    claims = stats.claim_effects(metrics, n_boot=n_boot, seed=seed)
    return {"metrics": metrics, "intervals": intervals, "effects": stats.effect_table(metrics, n_boot=n_boot,
                                                                                       seed=seed),
            "claims": claims, "verdicts": stats.verdict_table(claims, metrics=[m.name for m in metrics])}


def _samples_note(metrics) -> str:
    n = sorted({m.n_samples for m in metrics if m.per_sample})
    return f"{'/'.join(map(str, n))} attacked test samples" if n else "no per-sample data"


def intervals_caption(result: dict) -> str:
    """What the conditions-with-CIs table shows, with its n."""
    return ("estimate [95 % CI] per condition: clean, noise (mean over the non-zero stds) and corruption accuracy: "
            "mean over seeds, CI from a bootstrap over seeds; median L2 / Linf: mean over seeds of each "
            "classifier's median minimal perturbation, CI from a hierarchical bootstrap over seeds and, within "
            f"seed, over the {_samples_note(result['metrics'])} (shared by all classifiers); "
            f"{stats.N_BOOT} replicates, seed-level t correction (pipeline.report.stats)")


def verdicts_caption(result: dict) -> str:
    """What the verdict table shows, with its family size."""
    claims = result["claims"]
    m = int(np.isfinite(claims["p_value"]).sum()) if len(claims) else 0
    return ("verdict per claim and metric: 'yes' = beats at 95 % after Benjamini-Hochberg over the "
            f"{m} cells with a p value, 'no' = significantly worse, 'unresolved' = neither; effect (median "
            "perturbation: % change of the condition-mean median; accuracy: difference in percentage points) "
            "[FCR-adjusted CI]; paired by test sample, hierarchical bootstrap over seeds and samples")


def demo_tables() -> dict | None:
    """The demo's tables for the experiment with the most classifiers: {'title', 'experiment', 'frames',
    'result' (:func:`robustness_statistics`, None without robustness rows), 'conditions' and 'verdicts' (text)};
    None without trained classifiers."""
    base = queries.classifiers()
    if base.empty:
        return None
    experiment = queries.experiments(base)[0]
    frames = experiment_frames(base, experiment, {name: FRAMES[name](base)
                                                  for name in ("noise", "samples", "corruptions", "scores", "brain")})
    result = robustness_statistics(frames)
    title = ", ".join(f"{k}={v}" for k, v in experiment.items())
    if result is None:
        conditions_text = (f"{title}  (mean ± sd over seeds)\n"
                           + summary_frame(frames["base"], frames["noise"], frames["scores"]).to_string(index=False))
        verdicts_text = "no robustness rows yet: no verdicts"
    else:
        conditions_text = (f"{title}\n{intervals_caption(result)}\n"
                           + figures.interval_table(result["intervals"]).to_string())
        verdicts_text = f"{verdicts_caption(result)}\n" + result["verdicts"].to_string()
    return {"title": title, "experiment": experiment, "frames": frames, "result": result,
            "conditions": conditions_text, "verdicts": verdicts_text}


def summary_table() -> str:
    """The demo's printed table: the conditions with CIs, then the verdict table (experiment with the most
    classifiers)."""
    tables = demo_tables()
    if tables is None:
        return "no trained classifiers yet"
    return f"{tables['conditions']}\n\n{tables['verdicts']}"


def target_section(outdir: Path, diagnostics: pd.DataFrame) -> dict:
    """Target diagnostics: a table of target.TargetDiagnostics per target and the spectrum figure (Source:
    queries.target_diagnostics); a 'missing' note when the table is absent or empty."""
    title = "Targets: how low-rank each target is and which image statistic it follows"
    if diagnostics is None or diagnostics.empty:
        return {"title": title, "missing": (
            "Not drawn: target.TargetDiagnostics has no rows (or the schema has no such table yet). Populate: "
            "neural-reg populate TargetDiagnostics.")}
    section = {"title": title,
               "text": ("Per target (target.TargetDiagnostics): top1/top5_share = the leading 1 / 5 eigenvalues over "
                        "the trace; spectrum_exponent = alpha of lambda_r ~ r^-alpha; r_* = Pearson r of the "
                        "off-diagonal entries with the rank-1 part and with the pixel, contrast-energy, "
                        "local-luminance and population-activity targets of the same images (NaN: undefined or "
                        "not available). A target that is mostly one component, or follows contrast, regularises "
                        "towards that image statistic rather than towards neural data."),
               "tables": [("target.TargetDiagnostics, one row per target", figures.target_diagnostics_table(
                   diagnostics))]}
    if "eigenvalue_shares" in diagnostics.columns:
        path = figures.save(figures.target_spectrum(diagnostics), Path(outdir) / "target_spectrum.png")
        n = int(max(np.size(v) for v in diagnostics["eigenvalue_shares"]))
        section["images"] = [(path, f"Target spectra: the leading {n} eigenvalues over the trace against rank "
                                    "(log-log) and their cumulative share, one line per target; from "
                                    f"target.TargetDiagnostics.eigenvalue_shares ({len(diagnostics)} targets).")]
    return section


def _n_scans(n: int) -> str:
    return f"{n} scan{'s' if n != 1 else ''}"


MAX_FIG1_SCANS = 4  # rows of Fig 1 / Fig 1D drawn; the tables list every scan


def neural_sections(outdir: Path, scans: list[dict], oracle_scans: list[dict], stability_rows: list[dict],
                    oracle_stats: pd.DataFrame | None = None) -> list[dict]:
    """Fig 1, Fig 1C and Fig 1D from the fetched inputs (no database): ``scans`` as queries.similarity_scans,
    ``oracle_scans`` as queries.oracle_comparison, ``stability_rows`` as queries.stability, ``oracle_stats`` as
    queries.oracle_statistics. A figure without its input gets a section saying why and what to populate."""
    outdir = Path(outdir)
    sections = []
    title1 = "Fig 1: similarity of the data (Eq 2) and of the predictive model (Eq 6)"
    if scans:
        shown = scans[:MAX_FIG1_SCANS]
        path = figures.save(figures.fig1_similarity(shown), outdir / "fig1_similarity.png")
        r = ", ".join(f"{s['label']} {offdiagonal_correlation(s['data'], s['model']):.2f}" for s in scans)
        n_images = sorted({s["data"].shape[0] for s in scans})
        oracle_m = sorted({s["oracle"].shape[0] for s in shown if s.get("oracle") is not None})
        caption = (f"Fig 1: per scan (rows; {len(shown)} of {_n_scans(len(scans))}), S^data = Eq 2 on single trials "
                   f"(oracle.DataSimilarity) and S^model = Eq 6 of the scan's first predictor "
                   f"(predictor.ModelSimilarity) over the {'/'.join(map(str, n_images))} non-oracle images both "
                   "share, in one image order; their off-diagonal scatter with Pearson r; and S^oracle = Eq 3 "
                   f"(oracle.OracleSimilarity, {'/'.join(map(str, oracle_m)) or 'no'} oracle images, own order).")
        tables = [("Per scan: oracle statistics (oracle.OracleStats) and the predictor's mean held-out correlation "
                   "v (predictor.TrainedPredictor)", oracle_stats)] if oracle_stats is not None and \
            not oracle_stats.empty else []
        sections.append({"title": title1,
                         "text": f"r(data, model) over all off-diagonal pairs, per scan: {r}.",
                         "images": [(path, caption)], "tables": tables})
    else:
        sections.append({"title": title1, "missing": (
            "Not drawn: no scan has both oracle.DataSimilarity and predictor.ModelSimilarity. Populate: ingest scans "
            "(neural-reg ingest filetree PATH, or neural-reg ingest simulate), enter a predictor config, then "
            "neural-reg populate OracleStats OracleSimilarity DataSimilarity TrainedPredictor ModelSimilarity.")})
    title1c = "Fig 1C: fluctuations across scans vs across repeats"
    for row in stability_rows:
        fig = figures.fig1_stability(row["bin_edges"], row["scan_histogram"], row["repeat_histogram"],
                                     row["scan_width"], row["repeat_width"])
        path = figures.save(fig, outdir / f"fig1c_stability_{_tag(row['scan_group'])}.png")
        caption = (f"Fig 1C, scan group {row['scan_group']}: probability density of dS^scan (Eq 4: each scan's "
                   f"oracle similarity minus the mean over the group's {_n_scans(row['n_scans'])}) and of dS^rep "
                   "(Eq 5: one pair of repeats minus the oracle similarity), pooled over the group's scans; from "
                   f"oracle.Stability (n = {_n_scans(row['n_scans'])}). x axis: the 0.1 %-99.9 % quantile range of "
                   "the data, not the whole span of the stored bins.")
        sections.append({"title": f"{title1c} ({row['scan_group']})",
                         "text": f"sd across scans {row['scan_width']:.3f}, across repeats {row['repeat_width']:.3f} "
                                 f"({_n_scans(row['n_scans'])}); the paper's claim is sd(scans) << sd(repeats).",
                         "images": [(path, caption)]})
    if not stability_rows:
        sections.append({"title": title1c, "missing": (
            "Not drawn: oracle.Stability is empty. Populate: a scan group of 2 or more scans that share their oracle "
            "images (neural-reg group NAME), then neural-reg populate OracleSimilarity Stability.")})
    title1d = "Fig 1D: single-trial and model similarity against the oracle similarity (and the noise-free truth)"
    if oracle_scans:
        shown = oracle_scans[:MAX_FIG1_SCANS]
        path = figures.save(figures.fig1d_oracle_scatter(shown), outdir / "fig1d_oracle.png")
        m = sorted({s["oracle"].shape[0] for s in oracle_scans})
        n_truth = sum(s.get("truth") is not None for s in oracle_scans)
        caption = (f"Fig 1D: per scan (rows; {len(shown)} of {_n_scans(len(oracle_scans))}), on the "
                   f"{'/'.join(map(str, m))} oracle images: S^trial (Eq 2 on the first repeat of each oracle image, "
                   "recording.Trial / recording.Responses, SNR weights of oracle.OracleStats.Unit) and S^model (Eq 6 "
                   "of the scan's first predictor.TrainedPredictor, predicted here on the oracle images) against "
                   "S^oracle (oracle.OracleSimilarity, Eq 3 over all repeats); right, for the "
                   f"{n_truth} simulated scan(s): against S^truth, Eq 2 with the same SNR weights on the simulator's "
                   "noise-free rates (regenerated from Scan.source). Pearson r over all off-diagonal pairs.")
        notes = sorted({s["truth_note"] for s in oracle_scans if s.get("truth") is None and s.get("truth_note")})
        text = ("S^oracle averages every pair of repeats, so a similarity estimated from one trial (S^trial) is the "
                "noisy estimate the paper contrasts with the model's (S^model). The table also scores the training "
                "targets themselves, on the non-oracle images: S^data (Neural (data)) and S^model (Neural) against "
                "the truth.")
        if notes:
            text += "\n\nNo noise-free truth for some scans: " + "; ".join(notes)
        sections.append({"title": title1d, "text": text, "images": [(path, caption)],
                         "tables": [("Pearson r of off-diagonal similarities, per scan (NaN: no truth or no "
                                     "non-oracle similarity)", figures.oracle_comparison_table(oracle_scans)),
                                    ("Calibration: these scans beside mouse V1 (exponent: PCA of the simulator's "
                                     "noise-free rates on the non-oracle images, ranks 10 to a quarter of the "
                                     "spectrum; '-' for recorded scans)",
                                     figures.calibration_table(oracle_scans, oracle_stats))]})
    else:
        sections.append({"title": title1d, "missing": (
            "Not drawn: no scan has both an oracle similarity (oracle.OracleSimilarity) and a trained predictor "
            "(predictor.TrainedPredictor). Populate: neural-reg populate OracleStats OracleSimilarity "
            "TrainedPredictor.")})
    return sections


def neural_section(outdir: Path) -> list[dict]:
    """Fig 1, Fig 1C and Fig 1D sections (Sources: queries.similarity_scans, queries.oracle_comparison,
    queries.stability, queries.oracle_statistics)."""
    scans = queries.similarity_scans()
    return neural_sections(outdir, scans, queries.oracle_comparison(), queries.stability(),
                           queries.oracle_statistics() if scans else None)


def _tag(*parts) -> str:
    return "_".join(str(p) for p in parts if p is not None).replace("/", "-").replace(" ", "-")


# the columns a reader looks at first: which pair, the difference with its CI, the corrected p
_COMPARISON_FIRST = ["regulariser", "alpha", "reference", "reference_alpha", "n_pairs", "mean_diff", "ci_low",
                     "ci_high", "p_adjusted", "p_value", "d_z"]


def comparison_view(table: pd.DataFrame) -> pd.DataFrame:
    """A comparisons table for the page: the within columns, then _COMPARISON_FIRST, then the rest."""
    first = [c for c in _COMPARISON_FIRST if c in table.columns]
    within = [c for c in ("noise_name", "attack_set", "norm") if c in table.columns]
    rest = [c for c in table.columns if c not in first and c not in within]
    return table[within + first + rest].reset_index(drop=True)


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


def _n_of(df: pd.DataFrame) -> str:
    """'n = 2 seeds per condition, 4 conditions' (or a range of seeds) for a caption."""
    if df.empty or "seed" not in df.columns:
        return "n = 0"
    cond = [c for c in ("regulariser", "alpha") if c in df.columns]
    seeds = df.groupby(cond)["seed"].nunique()
    lo, hi = int(seeds.min()), int(seeds.max())
    per = f"{lo}" if lo == hi else f"{lo}-{hi}"
    return f"n = {per} seed{'s' if hi != 1 else ''} per condition, {len(seeds)} condition{'s' if len(seeds) != 1 else ''}"


def _samples(df: pd.DataFrame, column: str = "n_samples") -> str:
    if column not in df.columns or df.empty:
        return ""
    v = sorted({int(x) for x in df[column]})
    return f", {'/'.join(map(str, v))} test samples per classifier"


def with_median_ci(scores: pd.DataFrame, samples: pd.DataFrame) -> pd.DataFrame:
    """``scores`` with each classifier's bootstrap 95 % CI of its median minimal perturbation (median_ci_low,
    median_ci_high; pipeline.report.stats.median_ci over its attacked samples) where ``samples`` (queries.
    score_samples) has its row; unchanged when samples is empty."""
    if samples is None or samples.empty:
        return scores
    keys = [c for c in ("regulariser", "alpha", "seed", "attack_set", "norm") if c in scores.columns
            and c in samples.columns]
    distances = list(samples["distances"])
    if len({np.size(d) for d in distances}) == 1:  # one batch: the same samples for every classifier
        _, lo, hi = stats.median_ci(np.stack(distances))
    else:
        lo, hi = (np.array([stats.median_ci(d)[k][0] for d in distances]) for k in (1, 2))
    ci = samples[keys].assign(median_ci_low=lo, median_ci_high=hi)
    out = scores.merge(ci, on=keys, how="left")
    columns = list(scores.columns)
    at = columns.index("median") + 1 if "median" in columns else len(columns)
    return out[columns[:at] + ["median_ci_low", "median_ci_high"] + columns[at:]]


def statistics_section(outdir: Path, tag: str, title: str, result: dict) -> dict:
    """Conditions with CIs, the verdict table, the effects of every condition against None and the controls,
    and their forest plot (:func:`robustness_statistics`)."""
    effects = result["effects"]
    section = {"title": f"Robustness with confidence intervals, and verdicts ({title})",
               "text": ("Every classifier is attacked on the same test samples, so conditions are compared paired "
                        "by sample: a hierarchical bootstrap resamples seeds within each condition and the shared "
                        "samples jointly (pipeline.report.stats). 'Neural beats X' is 'yes' only when the gain "
                        "survives the Benjamini-Hochberg correction over the verdict table; the positive control "
                        "(Adversarial (PGD): adversarially trained, no regulariser) shows whether this evaluation "
                        "can see a robustness gain at all."),
               "tables": [("Conditions: " + intervals_caption(result), figures.interval_table(result["intervals"])),
                          ("Verdicts: " + verdicts_caption(result), result["verdicts"])]}
    if len(effects):
        shown = effects.drop(columns=[c for c in ("scale",) if c in effects.columns])
        section["tables"].append(("Every condition against None and each control at the same alpha (effect: "
                                  "log-ratio for the median perturbations, difference for accuracies; "
                                  "Benjamini-Hochberg over this table)", shown.reset_index(drop=True)))
        path = figures.save(figures.fig_effects(result["claims"]) if len(result["claims"]) else
                            figures.fig_effects(effects), Path(outdir) / f"effects_{tag}.png")
        section["images"] = [(path, "Effects of the verdict table's claims with their FCR-adjusted CIs, coloured "
                                    "by verdict (green yes, red no, grey unresolved); from the hierarchical "
                                    f"bootstrap ({_samples_note(result['metrics'])}, "
                                    f"{_n_of(result['metrics'][0].rows)}).")]
    return section


def experiment_sections(outdir: Path, experiment: dict, frames: dict) -> list[dict]:
    """The sections of one experiment from its frames (:func:`experiment_frames`; missing ones count as empty).

    Every figure has a caption (what it shows, its source table, n); a figure that cannot be drawn gets a
    'missing' note saying why and what to populate.
    """
    outdir = Path(outdir)
    get = {name: frames.get(name, pd.DataFrame()) for name in ["base", *FRAMES]}
    base, noise, scores = get["base"], get["noise"], get["scores"]
    tag = _tag(*experiment.values())
    title = ", ".join(f"{k}={v}" for k, v in experiment.items())
    sections = [{"title": f"Summary ({title})",
                 "text": "Mean ± sd over seeds; a condition is (regulariser, alpha). Sources: "
                         "classifier.TrainedClassifier (clean accuracy), robustness.NoiseRobustness (accuracy at "
                         "each noise std), robustness.RobustnessScore.Norm (median minimal perturbation).",
                 "tables": [summary_frame(base, noise, scores)]}]
    result = robustness_statistics(get)
    if result is not None:
        sections.append(statistics_section(outdir, tag, title, result))
    compare_text = ("Paired by seed; each regulariser against None and against each control (Shuffle, Pixel, "
                    "Random, VGG) at the same alpha, once per pair, with the 95 % CI of the mean difference and "
                    "Benjamini-Hochberg adjusted p values (a gain a control also gives is not a gain of neural "
                    "data).")
    fig4 = {"title": f"Fig 4: accuracy under Gaussian noise ({title})"}
    if not noise.empty:
        images = []
        for name, rows in _groups(noise, "noise_name"):
            path = figures.save(figures.fig4_noise(rows), outdir / f"fig4_noise_{_tag(tag, name)}.png")
            stds = sorted(rows["std"].unique())
            images.append((path, f"Fig 4, noise config {name}: test accuracy vs the std of additive Gaussian "
                                 f"noise (pixels in [0, 1], {len(stds)} stds), one line per condition, mean ± SEM "
                                 f"over seeds; from robustness.NoiseRobustness ({_n_of(rows)}"
                                 f"{_samples(rows)})."))
        fig4.update(text=compare_text, images=images,
                    tables=[("Paired comparisons at the highest noise std (robustness.NoiseRobustness)",
                             comparison_view(noise_comparisons(noise)))] if _has_reference(noise) else [])
    else:
        fig4["missing"] = ("Not drawn: robustness.NoiseRobustness has no rows for this experiment. Populate: enter "
                           "a noise config (robustness.NoiseConfig, part of an experiment spec), then neural-reg "
                           "populate NoiseRobustness.")
    sections.append(fig4)

    curves = get["curves"]
    fig5 = {"title": f"Fig 5: minimal adversarial perturbation vs model queries ({title})"}
    if not curves.empty:
        path = figures.save(figures.fig5_queries(curves), outdir / f"fig5_queries_{tag}.png")
        points = curves.groupby(["attack", "norm"] + [c for c in ("regulariser", "alpha", "seed")
                                                      if c in curves.columns]).size().groupby(["attack", "norm"]).max()
        few = ", ".join(f"{a} ({n}): {int(k)}" for (a, n), k in points.items())
        fig5["images"] = [(path, f"Fig 5: per attack (panel), the median over attacked samples of the smallest "
                                 "perturbation found so far against the cumulative model queries per sample, after "
                                 "each setting of the attack's sweep; mean ± SEM (bars and band) over seeds at each "
                                 f"point; from robustness.Adversarial (queries_curve) x robustness.AttackConfig "
                                 f"({_n_of(curves)}, {len(points)} attacks{_samples(curves)}; "
                                 f"points per curve: {few}).")]
        if int(points.min()) < 5:
            fig5["text"] = (f"Points per curve: {few}. One point is stored per setting of an attack's sweep "
                            "(hyper-parameter combinations x repeats), so a curve that shows convergence needs "
                            "attack configs with a longer sweep or more repeats (AttackConfig params 'sweep', "
                            "'repeats'), then neural-reg populate Adversarial.")
    else:
        fig5["missing"] = ("Not drawn: robustness.Adversarial has no queries curves for this experiment. Populate: "
                           "enter attack configs and an attack set, then neural-reg populate Adversarial.")
    sections.append(fig5)

    fig6 = {"title": f"Fig 6: robustness vs the similarity-loss weight alpha ({title})"}
    tables, images = [], []
    for name, rows in ([] if scores.empty else _groups(scores, "attack_set")):
        sweep = figures.fig6_alpha(rows)
        if sweep is not None:
            path = figures.save(sweep, outdir / f"fig6_alpha_{_tag(tag, name)}.png")
            alphas = sorted(a for a in rows["alpha"].unique() if a > 0)
            images.append((path, f"Fig 6, attack set {name}: median minimal perturbation (Schott et al.: per "
                                 "sample the minimum over the set's attacks, then the median over samples) vs "
                                 f"alpha ({len(alphas)} values), mean ± SEM over seeds, None as the dashed "
                                 f"reference; from robustness.RobustnessScore.Norm ({_n_of(rows)}{_samples(rows)})."))
    if images:
        fig6["images"] = images
    else:
        have = sorted(float(a) for a in (scores["alpha"].unique() if not scores.empty else []) if a > 0)
        have = ", ".join(f"{a:g}" for a in have) or "none"
        fig6["missing"] = (f"Not drawn: no alpha sweep (regularised alphas with scores: {have}; a sweep needs 2 "
                           "or more). "
                           "Populate: regularisers at 2 or more alphas (setup-paper --alphas 1 10 100, or the "
                           "experiment spec's alphas), their classifiers, then neural-reg populate Adversarial "
                           "RobustnessScore.")
    if not scores.empty:
        if _has_reference(scores):
            tables.append(("Median minimal perturbation, paired comparisons (robustness.RobustnessScore.Norm)",
                           comparison_view(score_comparisons(scores))))
        shown = sort_conditions(with_median_ci(scores, get["samples"]),
                                then=[c for c in ("attack_set", "norm") if c in scores.columns])
        shown = shown.drop(columns=[c for c in ("kind", *queries.EXPERIMENT) if c in shown.columns]
                           ).reset_index(drop=True)  # the experiment is the section's; no index column
        tables.append(("Scores per classifier (robustness.RobustnessScore.Norm): median minimal perturbation, "
                       "robust accuracy at the threshold", shown))
        fig6["text"] = ("Per sample the smallest perturbation over every attack of the attack set (Schott et al.); "
                        "the score is the median over samples. Robust accuracy at the RobustBench thresholds is in "
                        "the scores table. " + compare_text)
    fig6["tables"] = tables
    sections.append(fig6)

    gammas = get["gammas"]
    if not gammas.empty:
        sections.append({"title": f"Table 1: final layer weights gamma ({title})",
                         "text": f"Mean over seeds of gamma = softmax(beta) (Eq 10) per layer; from "
                                 f"classifier.TrainedClassifier.LayerWeight ({_n_of(gammas)}).",
                         "tables": [figures.table1_layer_weights(gammas)]})
    else:
        sections.append({"title": f"Table 1: final layer weights gamma ({title})", "missing": (
            "Not drawn: classifier.TrainedClassifier.LayerWeight has no rows for this experiment (only classifiers "
            "trained with a similarity regulariser have layer weights). Populate: regularised classifiers, "
            "neural-reg populate TrainedClassifier.")})
    if not get["corruptions"].empty:
        sections.append({"title": "Common corruptions: mean accuracy over severities",
                         "text": f"From robustness.CorruptionRobustness.Score ({_n_of(get['corruptions'])}). "
                                 + _uninformative_text(get["corruptions"], experiment),
                         "tables": [(f"corruption config {name}" if name is not None else "",
                                     figures.corruption_table(rows))
                                    for name, rows in _groups(get["corruptions"], "corruption_name")]})
    brain = get["brain"]
    if not brain.empty:
        named = " and ".join(f"'{v}'" for k, v in figures.BRAIN_LIKENESS_NAMES.items() if k in brain.columns
                             and not pd.to_numeric(brain[k], errors="coerce").isna().all())
        sections.append({"title": "Brain-likeness: the classifier's similarity vs neural targets (held-out images)",
                         "text": f"Mean ± SEM over seeds, per target and condition, of {named}: 'as trained' "
                                 "uses the regulariser's own centring and BN mode; 'eval-mode' eval-mode BN with "
                                 "per-element centring; from robustness.BrainLikeness "
                                 f"({_n_of(brain)}).",
                         "tables": [figures.brain_likeness_table(brain)]})
    return sections


def _uninformative_text(corruptions: pd.DataFrame, experiment: dict) -> str:
    """Which corruption rows put every classifier at chance (figures.uninformative_corruptions), in words."""
    from pipeline.classifier.tasks import TASKS

    task = experiment.get("task")
    if task not in TASKS:
        return ""
    if "n_samples" not in corruptions:  # a frame of an older query: no sample count, no binomial bound
        return ""
    parts = []
    for name, rows in _groups(corruptions, "corruption_name"):
        bad = figures.uninformative_corruptions(rows, TASKS[task][0], int(rows["n_samples"].min()))
        if len(bad):
            cells = ", ".join(f"{r.corruption} {r.severity}" for r in bad.itertuples())
            parts.append(f"Uninformative (every classifier at chance, best below {bad['chance bound'].iloc[0]:.2f}"
                         f"{'' if name is None else f', config {name}'}): {cells}")
    return ("; ".join(parts) + "." if parts else
            "Every corruption and severity separates the classifiers: at each, some classifier is above chance.")


def diagram_section(outdir: Path, schema_modules=None) -> dict:
    """The DataJoint diagram of every schema as a PNG (:mod:`neural_reg.diagram`; needs graphviz's ``dot``).
    Without ``dot``, or if drawing fails, the section says why and how to get it; never raises."""
    from . import diagram as D

    title = "Data model: the DataJoint diagram"
    if shutil.which("dot") is None:
        return {"title": title, "missing": f"Not drawn: {D.DOT_MISSING} and build the report again."}
    try:
        import schemas

        modules = schema_modules if schema_modules is not None else schemas.modules()
        path = D.write(Path(outdir) / "datajoint_diagram.png", modules, direction="TB")  # TB fits the page's width
    except Exception as err:  # a broken graphviz install must not cost the report
        return {"title": title, "missing": f"Not drawn: rendering the diagram failed ({type(err).__name__}: {err})."}
    names = ", ".join(m.schema.database for m in modules)
    return {"title": title, "images": [(path, f"dj.Diagram of the schemas {names}: {D.CAPTION}")]}


def build_report(outdir) -> Path:
    """Write the figures and index.html under outdir; return the HTML's path."""
    import datajoint as dj

    from schemas import recording

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    sections = neural_section(outdir)
    sections.append(target_section(outdir, queries.target_diagnostics()))
    base = queries.classifiers()
    frames = {name: fetch(base) for name, fetch in FRAMES.items()}  # each table read once
    experiments = queries.experiments(base)
    for experiment in experiments:
        sections += experiment_sections(outdir, experiment, experiment_frames(base, experiment, frames))
    if not experiments:
        sections.append({"title": "Fig 4-6, Table 1: classifiers", "missing": (
            "Not drawn: classifier.TrainedClassifier is empty. Populate: enter an experiment (neural-reg experiment "
            "enter demo, or neural-reg setup-paper), then neural-reg populate.")})
    conn = dj.conn()
    prefix = recording.schema.database.rsplit("_", 1)[0]
    info = provenance.collect(conn.conn_info, prefix)
    sections.append({"title": "Provenance", "text": (
        f"{len(recording.Scan())} scans, {len(base)} classifiers. The numbers on this page were read from the "
        "database and schema prefix below by the code version below."),
        "tables": [provenance.provenance_frame(info)]})
    sections.append(diagram_section(outdir))
    line = (f"code {info['code version']}; database {info['database']}, schema prefix {prefix}; "
            f"torch {info['torch version']} ({info['torch threads']} threads, {info['device']})")
    return write_report(outdir, "neural-reg: learning from brains how to regularise machines", sections,
                        provenance=line)
