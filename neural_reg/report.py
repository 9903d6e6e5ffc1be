"""`neural-reg report OUTDIR`: the paper's figures and tables from the result tables, as PNGs and one HTML page."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.report import figures, stats
from pipeline.report.html import write_report

from . import queries


def summary_frame(base: pd.DataFrame, noise: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """One row per regulariser: clean accuracy, accuracy at each noise std, median L2 / Linf, as mean +- sd."""
    def fmt(values: pd.Series, digits: int) -> str:
        v = values.dropna().to_numpy(float)
        if len(v) == 0:
            return "-"
        return f"{v.mean():.{digits}f}" + (f" ± {v.std(ddof=1):.{digits}f}" if len(v) > 1 else "")

    rows = []
    for label in figures.order_regularisers(base["regulariser"].unique()):
        mine = base[base["regulariser"] == label]
        row = {"regulariser": label, "seeds": len(mine), "clean acc": fmt(mine["test_accuracy"], 3)}
        if not noise.empty:
            n = noise[noise["regulariser"] == label]
            for std in sorted(noise["std"].unique()):
                if std > 0:
                    row[f"acc σ={std:g}"] = fmt(n[n["std"] == std]["accuracy"], 3)
        if not scores.empty:
            s = scores[scores["regulariser"] == label]
            for norm in ("L2", "Linf"):
                row[f"median {norm}"] = fmt(s[s["norm"] == norm]["median"], 4)
        rows.append(row)
    return pd.DataFrame(rows)


def summary_table() -> str:
    """The demo's printed table: for the experiment with the most classifiers."""
    base = queries.classifiers()
    if base.empty:
        return "no trained classifiers yet"
    experiment = queries.experiments(base)[0]
    base = queries.restrict(base, experiment)
    table = summary_frame(base, queries.restrict(queries.noise(base), experiment),
                          queries.restrict(queries.scores(base), experiment))
    title = ", ".join(f"{k}={v}" for k, v in experiment.items())
    return f"{title}  (mean ± sd over seeds)\n" + table.to_string(index=False)


def neural_section(outdir: Path) -> list[dict]:
    from schemas import oracle, predictor, recording

    sections = []
    scans = []
    for key in recording.Scan.keys():
        data = oracle.DataSimilarity & key
        model = predictor.ModelSimilarity & key
        if not data or not model:
            continue
        ids_d, S_d = data.fetch1("image_ids", "similarity")
        first = model.to_dicts(limit=1)[0]  # the first predictor of the scan
        ids_m, S_m = first["image_ids"], first["similarity"]
        common = np.intersect1d(ids_d, ids_m)
        pd_, pm = np.searchsorted(ids_d, common), np.searchsorted(ids_m, common)
        entry = {"label": f"{key['animal_id']}-{key['session']}-{key['scan_idx']}",
                 "data": S_d[np.ix_(pd_, pd_)], "model": S_m[np.ix_(pm, pm)]}
        if oracle.OracleSimilarity & key:
            entry["oracle"] = (oracle.OracleSimilarity & key).fetch1("similarity")
        scans.append(entry)
    stats_rows = (oracle.OracleStats * predictor.TrainedPredictor.proj("mean_correlation")).to_dicts()
    table = pd.DataFrame([{"scan": f"{r['animal_id']}-{r['session']}-{r['scan_idx']}",
                           "oracle images": r["n_oracle_images"], "mean oracle r": r["mean_oracle_correlation"],
                           "mean SNR weight": r["mean_snr_weight"], "degenerate": r["n_degenerate"],
                           "predictor mean v": r["mean_correlation"]} for r in stats_rows])
    if scans:
        path = figures.save(figures.fig1_similarity(scans[:4]), outdir / "fig1_similarity.png")
        r = [figures.offdiag_pearson(s["data"], s["model"]) for s in scans]
        sections.append({"title": "Fig 1: similarity of the data (Eq 2) and of the predictive model (Eq 6)",
                         "text": f"Per scan, single-trial and model similarity on the same non-oracle images; "
                                 f"r(data, model) = {', '.join(f'{x:.2f}' for x in r)}.",
                         "images": [path], "tables": [("Oracle statistics and predictors", table)]})
    for row in oracle.Stability.to_dicts():
        fig = figures.fig1_stability(row["bin_edges"], row["scan_histogram"], row["repeat_histogram"],
                                     row["scan_width"], row["repeat_width"])
        path = figures.save(fig, outdir / f"fig1c_stability_{row['scan_group']}.png")
        sections.append({"title": f"Fig 1C: fluctuations across scans vs across repeats ({row['scan_group']})",
                         "text": f"sd across scans {row['scan_width']:.3f}, across repeats "
                                 f"{row['repeat_width']:.3f} ({row['n_scans']} scans).", "images": [path]})
    return sections


def experiment_sections(outdir: Path, base: pd.DataFrame, experiment: dict) -> list[dict]:
    tag = "_".join(str(v) for v in experiment.values()).replace("/", "-")
    title = ", ".join(f"{k}={v}" for k, v in experiment.items())
    noise = queries.restrict(queries.noise(base), experiment)
    scores = queries.restrict(queries.scores(base), experiment)
    curves = queries.restrict(queries.query_curves(base), experiment)
    gammas = queries.restrict(queries.layer_weights(base), experiment)
    corr = queries.restrict(queries.corruptions(base), experiment)
    brain = queries.restrict(queries.brain_likeness(base), experiment)
    base = queries.restrict(base, experiment)
    sections = [{"title": f"Summary ({title})", "text": "Mean ± sd over seeds.",
                 "tables": [summary_frame(base, noise, scores)]}]
    if not noise.empty:
        path = figures.save(figures.fig4_noise(noise), outdir / f"fig4_noise_{tag}.png")
        top = noise[noise["std"] == noise["std"].max()]
        comparisons = stats.paired_comparisons(top, "accuracy", by="regulariser", pair_on="seed")
        sections.append({"title": "Fig 4: accuracy under Gaussian noise",
                         "text": "Paired by seed, at the highest noise level: each regulariser against None and "
                                 "against the controls (a gain a Pixel or Shuffle target also gives is not a "
                                 "gain of neural data).",
                         "images": [path], "tables": [("Paired comparisons", comparisons)]})
    if not scores.empty:
        tables = []
        for norm in sorted(scores["norm"].unique()):
            tables.append((f"Median minimal {norm} perturbation, paired by seed",
                           stats.paired_comparisons(scores[scores["norm"] == norm], "median")))
        images = [figures.save(figures.fig5_queries(curves), outdir / f"fig5_queries_{tag}.png")] \
            if not curves.empty else []
        sweep = figures.fig6_alpha(scores)
        if sweep is not None:
            images.append(figures.save(sweep, outdir / f"fig6_alpha_{tag}.png"))
        sections.append({"title": "Fig 5-6: minimal adversarial perturbations",
                         "text": "Per sample the smallest perturbation over every attack (Schott et al.); the "
                                 "score is the median over samples. Robust accuracy at the RobustBench "
                                 "thresholds is in the scores table.",
                         "images": images,
                         "tables": [("Scores", scores.drop(columns=["kind"]).sort_values(["norm", "regulariser"]))]
                         + tables})
    if not gammas.empty:
        sections.append({"title": "Table 1: final layer weights gamma",
                         "tables": [figures.table1_layer_weights(gammas)]})
    if not corr.empty:
        sections.append({"title": "Common corruptions: mean accuracy over severities",
                         "tables": [figures.corruption_table(corr)]})
    if not brain.empty:
        table = brain.groupby(["regulariser", "target_name"])["correlation"].agg(["mean", "std", "count"])
        sections.append({"title": "Brain-likeness: the classifier's similarity vs neural targets (held-out images)",
                         "tables": [table.reset_index()]})
    return sections


def build_report(outdir) -> Path:
    """Write the figures and index.html under outdir; return the HTML's path."""
    import datajoint as dj

    from schemas import recording

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    sections = neural_section(outdir)
    base = queries.classifiers()
    for experiment in queries.experiments(base):
        sections += experiment_sections(outdir, base, experiment)
    conn = dj.conn()
    provenance = (f"database {conn.conn_info['host']}, schema {recording.schema.database}; "
                  f"{len(recording.Scan())} scans, {len(base)} classifiers")
    return write_report(outdir, "neural-reg: learning from brains how to regularise machines", sections,
                        provenance=provenance)
