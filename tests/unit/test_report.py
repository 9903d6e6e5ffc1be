"""The report layer: figures read back from their artists, statistics against hand/scipy numbers, the HTML page."""

import base64
import re
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from scipy import stats as sps

from neural_reg import report as R
from pipeline.oracle.similarity import offdiagonal_correlation
from pipeline.report import conditions as C
from pipeline.report import figures as F
from pipeline.report import html as H
from pipeline.report import stats as S


# ------------------------------------------------------------------------------------------- fixtures

def _similarity(n, rng, noise=0.0):
    """A symmetric cosine similarity matrix from random population vectors (unit diagonal)."""
    x = rng.normal(size=(n, 20)) + noise * rng.normal(size=(n, 20))
    x -= x.mean(0)
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    return u @ u.T


def _noise_df():
    acc = {  # regulariser -> seed -> accuracies at std (0, 0.1, 0.2)
        "None": {0: [0.90, 0.50, 0.20], 1: [0.92, 0.55, 0.22], 2: [0.88, 0.45, 0.18]},
        "Neural": {0: [0.89, 0.70, 0.50], 1: [0.91, 0.72, 0.46], 2: [0.87, 0.66, 0.52]},
        "MyReg": {0: [0.80, 0.60, 0.40]},
    }
    rows = [dict(regulariser=r, seed=s, std=std, accuracy=a)
            for r, seeds in acc.items() for s, accs in seeds.items() for std, a in zip((0.0, 0.1, 0.2), accs)]
    return pd.DataFrame(rows), acc


# ---------------------------------------------------------------------------------------------- Fig 1

def test_fig1_similarity_axes_and_pearson_text():
    rng = np.random.default_rng(0)
    n = 12
    model = _similarity(n, rng)
    data = 0.5 * model + 0.5 * _similarity(n, rng)
    scans = [{"label": "scan A", "data": data, "model": model, "oracle": _similarity(5, rng)},
             {"label": "scan B", "data": model, "model": data}]
    fig = F.fig1_similarity(scans)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2 * 4 + 1  # 2 rows x (data, model, scatter, oracle) + colour bar
    iu = np.triu_indices(n, 1)
    r_ref = sps.pearsonr(data[iu], model[iu]).statistic
    texts = [t.get_text() for t in fig.axes[2].texts]
    assert any(f"Pearson r = {r_ref:.3f}" in t for t in texts), texts
    # every pair is plotted when there are few of them
    assert fig.axes[2].collections[0].get_offsets().shape == (n * (n - 1) // 2, 2)
    # the second scan has no oracle: its oracle panel is switched off
    assert not fig.axes[7].axison
    # without any oracle: three columns
    fig = F.fig1_similarity([{"label": "a", "data": data, "model": model}])
    assert len(fig.axes) == 3 + 1


def test_fig1_similarity_pools_large_matrices_and_subsamples_pairs():
    rng = np.random.default_rng(1)
    n = 250
    model = _similarity(n, rng)
    fig = F.fig1_similarity([{"label": "big", "data": model, "model": model}], max_display=50, max_points=300)
    img = fig.axes[0].images[0].get_array()
    assert img.shape == (50, 50)
    assert fig.axes[2].collections[0].get_offsets().shape == (300, 2)
    # data == model, so the scatter lies on the identity and r = 1
    assert any("Pearson r = 1.000" in t.get_text() for t in fig.axes[2].texts)


def test_pool_equals_block_means_with_masked_diagonal():
    rng = np.random.default_rng(2)
    M = rng.normal(size=(10, 10))
    np.fill_diagonal(M, np.nan)
    out = F._pool(M, 3)
    edges = np.linspace(0, 10, 4).round().astype(int)
    for a in range(3):  # slow reference: explicit blocks
        for b in range(3):
            block = M[edges[a]:edges[a + 1], edges[b]:edges[b + 1]]
            assert np.isclose(out[a, b], np.nanmean(block))


def test_leading_eigenvector_order_groups_blocks():
    # two groups of images, interleaved; within-group similarity 0.8, across -0.2
    group = np.array([0, 1] * 6)
    S = np.where(group[:, None] == group[None, :], 0.8, -0.2)
    np.fill_diagonal(S, 1.0)
    order = F.leading_eigenvector_order(S)
    g = group[order]
    assert np.count_nonzero(np.diff(g)) == 1  # sorted into two contiguous blocks
    big = np.kron(S, np.ones((25, 25)))  # 300 images: the Lanczos branch
    g = np.repeat(group, 25)[F.leading_eigenvector_order(big)]
    assert np.count_nonzero(np.diff(g)) == 1


def test_fig1_similarity_r_is_the_shared_offdiagonal_correlation_nan_when_degenerate():
    rng = np.random.default_rng(3)
    data = _similarity(9, rng)
    fig = F.fig1_similarity([{"label": "flat", "data": data, "model": np.eye(9)}])  # constant off-diagonal
    assert np.isnan(offdiagonal_correlation(data, np.eye(9)))
    assert any("Pearson r = nan" in t.get_text() for t in fig.axes[2].texts)


def test_fig1_similarity_rejects_bad_scans():
    with pytest.raises(S.ReportInputError, match="scans"):
        F.fig1_similarity([])
    with pytest.raises(S.ReportInputError, match="differ in shape"):
        F.fig1_similarity([{"label": "a", "data": np.eye(4), "model": np.eye(5)}])
    with pytest.raises(S.ReportInputError, match="scans\\[0\\].data"):
        F.fig1_similarity([{"label": "a", "data": np.full((4, 4), np.nan), "model": np.eye(4)}])


def test_fig1_stability_densities_and_widths():
    rng = np.random.default_rng(4)
    scan, rep = rng.normal(0, 0.01, 2000), rng.normal(0, 0.1, 2000)
    edges = np.linspace(-0.3, 0.3, 41)
    h_scan, h_rep = np.histogram(scan, edges)[0], np.histogram(rep, edges)[0]
    w_scan, w_rep = scan.std(), rep.std()
    assert w_scan < w_rep
    fig = F.fig1_stability(edges, h_scan, h_rep, w_scan, w_rep)
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert len(ax.patches) == 2
    for patch in ax.patches:
        values, e = patch.get_data()[:2]
        assert np.isclose((values * np.diff(e)).sum(), 1.0)  # densities: unit area
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(f"{w_scan:.3g}" in t for t in legend) and any(f"{w_rep:.3g}" in t for t in legend)
    with pytest.raises(S.ReportInputError, match="bin_edges"):
        F.fig1_stability([0, 0, 1], [1, 1], [1, 1], 0.1, 0.2)


# ---------------------------------------------------------------------------------------------- Fig 4

def test_fig4_noise_mean_and_sem_read_back_from_the_plot():
    df, acc = _noise_df()
    fig = F.fig4_noise(df)
    ax = fig.axes[0]
    assert len(fig.axes) == 1 and len(ax.lines) == 3
    lines = {line.get_gid(): line for line in ax.lines}
    assert set(lines) == {"None", "Neural", "MyReg"}
    assert lines["None"].get_color() == F.REGULARISER_COLORS["None"]
    assert lines["Neural"].get_color() == F.REGULARISER_COLORS["Neural"]
    assert lines["MyReg"].get_color() not in F.REGULARISER_COLORS.values()
    for reg in ("None", "Neural"):
        per_seed = np.array(list(acc[reg].values()))  # (3 seeds, 3 stds)
        mean = [sum(per_seed[:, k]) / 3 for k in range(3)]
        sem = [np.sqrt(sum((per_seed[:, k] - mean[k]) ** 2) / 2) / np.sqrt(3) for k in range(3)]
        line = lines[reg]
        np.testing.assert_allclose(line.get_xdata(), [0.0, 0.1, 0.2])
        np.testing.assert_allclose(line.get_ydata(), mean)
        # the error bar collection drawn right after this line holds the segments [mean - sem, mean + sem]
        k = list(lines).index(reg)
        segs = ax.collections[k].get_segments()
        np.testing.assert_allclose([s[0, 1] for s in segs], np.subtract(mean, sem))
        np.testing.assert_allclose([s[1, 1] for s in segs], np.add(mean, sem))
    # one seed: the mean is that seed's value and no SEM bar is drawn
    np.testing.assert_allclose(lines["MyReg"].get_ydata(), acc["MyReg"][0])
    assert all(len(s) == 0 for s in ax.collections[2].get_segments())


def test_fig4_noise_rejects_percentages_duplicates_and_missing_columns():
    df, _ = _noise_df()
    with pytest.raises(S.ReportInputError, match="divide percentages"):
        F.fig4_noise(df.assign(accuracy=df["accuracy"] * 100))
    with pytest.raises(S.ReportInputError, match="share the key"):
        F.fig4_noise(pd.concat([df, df.iloc[:1]]))
    with pytest.raises(S.ReportInputError, match="missing column"):
        F.fig4_noise(df.drop(columns="std"))


# ---------------------------------------------------------------------------------------------- Fig 5

def _queries_df():
    rows = []
    for norm in ("Linf", "L2"):
        for attack in ("PGD", "BB"):
            for reg in ("None", "Neural"):
                for seed in (0, 1):
                    for q, m in ((10, 0.3), (100, 0.2), (1000, 0.1)):
                        rows.append(dict(regulariser=reg, seed=seed, attack=attack, norm=norm, queries=q,
                                         median=m * (1 + seed) * (2 if reg == "Neural" else 1)))
    return pd.DataFrame(rows)


def test_fig5_queries_panels_lines_and_means():
    fig = F.fig5_queries(_queries_df())
    assert len(fig.axes) == 2
    assert [ax.get_title() for ax in fig.axes] == ["L2", "Linf"]
    for ax in fig.axes:
        assert len(ax.lines) == 4 and ax.get_xscale() == "log"
    line = {l.get_gid(): l for l in fig.axes[0].lines}["L2|PGD|Neural"]
    np.testing.assert_allclose(line.get_xdata(), [10, 100, 1000])
    np.testing.assert_allclose(line.get_ydata(), [0.3 * 2 * 1.5, 0.2 * 2 * 1.5, 0.1 * 2 * 1.5])


def test_mean_step_curve_on_different_query_grids():
    df = pd.DataFrame({"seed": [0, 0, 0, 1, 1], "queries": [5, 10, 40, 8, 20], "median": [9, 6, 2, 7, 3]})
    q, m = F.mean_step_curve(df)
    # grid from the later first point (8): seed 0 is a step function 9 (<10), 6 (<40), 2
    np.testing.assert_array_equal(q, [8, 10, 20, 40])
    np.testing.assert_allclose(m, [(9 + 7) / 2, (6 + 7) / 2, (6 + 3) / 2, (2 + 3) / 2])


# ---------------------------------------------------------------------------------------------- Fig 6

def test_fig6_alpha_none_without_a_sweep_and_means_with_one():
    rows = [dict(regulariser=r, alpha=a, seed=s, norm=n, median=0.1 * a + s + (r == "Pixel"))
            for r in ("Neural", "Pixel") for a in (1.0, 10.0, 100.0) for s in (0, 1, 2) for n in ("L2", "Linf")]
    df = pd.DataFrame(rows)
    assert F.fig6_alpha(df[df["alpha"] == 10.0]) is None
    # one regularised strength beside the unregularised None (alpha 0) is no sweep either
    assert F.fig6_alpha(pd.concat([df[df["alpha"] == 10.0], df[df["alpha"] == 1.0].assign(alpha=0.0)])) is None
    fig = F.fig6_alpha(df)
    assert len(fig.axes) == 2 and all(len(ax.lines) == 2 for ax in fig.axes)
    assert fig.axes[0].get_xscale() == "log"
    line = {l.get_gid(): l for l in fig.axes[1].lines}["Linf|Pixel"]
    np.testing.assert_allclose(line.get_ydata(), [0.1 * a + 1 + 1 for a in (1.0, 10.0, 100.0)])
    # alpha = 0 in a wide sweep: symlog, not log (log would drop the point)
    df0 = pd.concat([df, df[df["alpha"] == 1.0].assign(alpha=0.0)])
    assert F.fig6_alpha(df0).axes[0].get_xscale() == "symlog"


# --------------------------------------------------------------------------------------------- tables

def test_table1_layer_weights_mean_and_order():
    rows = []
    for seed, g in ((0, [0.1, 0.7, 0.2]), (1, [0.3, 0.5, 0.2])):
        rows += [dict(regulariser="Neural", seed=seed, layer=layer, gamma=v)
                 for layer, v in zip(("conv13", "conv5", "conv1"), g)]
    rows.append(dict(regulariser="Pixel", seed=0, layer="conv5", gamma=1.0))
    t = F.table1_layer_weights(pd.DataFrame(rows))
    assert list(t.columns) == ["conv1", "conv5", "conv13"]
    assert list(t.index) == ["Pixel", "Neural"]
    np.testing.assert_allclose(t.loc["Neural"].to_numpy(), [0.2, 0.6, 0.2])
    assert np.isnan(t.loc["Pixel", "conv1"]) and t.loc["Pixel", "conv5"] == 1.0


def test_corruption_table_means():
    rows = [dict(regulariser=r, seed=s, corruption=c, severity=v, accuracy=acc)
            for r, base in (("None", 0.5), ("Neural", 0.6))
            for s in (0, 1) for c, dc in (("fog", 0.0), ("snow", -0.2)) for v in (1, 2, 3)
            for acc in [base + dc - 0.05 * v + 0.01 * s]]
    t = F.corruption_table(pd.DataFrame(rows))
    assert list(t.columns) == ["fog", "snow", "mean"]
    assert list(t.index) == ["None", "Neural"]
    fog_none = np.mean([0.5 - 0.05 * v + 0.01 * s for s in (0, 1) for v in (1, 2, 3)])
    assert np.isclose(t.loc["None", "fog"], fog_none)
    assert np.isclose(t.loc["None", "snow"], fog_none - 0.2)
    assert np.isclose(t.loc["Neural", "mean"], (t.loc["Neural", "fog"] + t.loc["Neural", "snow"]) / 2)


def test_save_writes_png_and_rejects_other_suffixes(tmp_path):
    df, _ = _noise_df()
    path = F.save(F.fig4_noise(df), tmp_path / "sub" / "fig4.png")
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(S.ReportInputError, match=".png"):
        F.save(F.fig4_noise(df), tmp_path / "fig4.pdf")


# ---------------------------------------------------------------------------------------------- stats

def _paired_df():
    ref = {0: 1.0, 1: 2.0, 2: 3.0, 3: 4.0}
    neural = {0: 1.5, 1: 2.1, 2: 3.9, 3: 4.2, 4: 9.0}  # seed 4 has no reference result
    lonely = {0: 7.0}
    rows = [dict(regulariser=r, seed=s, score=v)
            for r, d in (("None", ref), ("Neural", neural), ("Lonely", lonely)) for s, v in d.items()]
    return pd.DataFrame(rows)


def test_paired_comparison_against_hand_numbers_and_scipy():
    out = S.paired_comparison(_paired_df(), "score", "None").set_index("regulariser")
    row = out.loc["Neural"]
    diff = np.array([0.5, 0.1, 0.9, 0.2])
    mean = sum(diff) / 4
    sd = np.sqrt(sum((d - mean) ** 2 for d in diff) / 3)
    assert row["n_pairs"] == 4 and row["n_unpaired"] == 1 and "left out" in row["note"]
    assert np.isclose(row["mean_diff"], mean) and np.isclose(row["sd_diff"], sd)
    assert np.isclose(row["d_z"], mean / sd)
    assert np.isclose(row["mean"], (1.5 + 2.1 + 3.9 + 4.2) / 4) and np.isclose(row["mean_reference"], 2.5)
    t_hand = mean / (sd / np.sqrt(4))
    assert np.isclose(row["t"], t_hand)
    assert np.isclose(row["p_value"], 2 * sps.t.sf(abs(t_hand), df=3))
    assert np.isclose(row["p_value"], sps.ttest_rel([1.5, 2.1, 3.9, 4.2], [1, 2, 3, 4]).pvalue)
    lonely = out.loc["Lonely"]
    assert lonely["n_pairs"] == 1
    assert np.isnan(lonely["d_z"]) and np.isnan(lonely["p_value"]) and np.isnan(lonely["t"])
    assert "no test possible" in lonely["note"]


def test_paired_comparison_edge_cases():
    df = pd.DataFrame({"regulariser": ["None"] * 3 + ["Pixel"] * 3, "seed": [0, 1, 2] * 2,
                       "score": [1.0, 2.0, 3.0, 1.5, 2.5, 3.5]})
    row = S.paired_comparison(df, "score", "None").iloc[0]
    assert np.isclose(row["mean_diff"], 0.5) and np.isnan(row["d_z"]) and "sd 0" in row["note"]
    with pytest.raises(S.ReportInputError, match="reference 'Shuffle'"):
        S.paired_comparison(df, "score", "Shuffle")
    with pytest.raises(S.ReportInputError, match="share the key"):
        S.paired_comparison(pd.concat([df, df.iloc[:1]]), "score", "None")
    with pytest.raises(S.ReportInputError, match="'score'"):
        S.paired_comparison(df.assign(score=[1, np.nan, 2, 3, 4, 5]), "score", "None")


def test_paired_comparisons_against_none_and_controls():
    df = _paired_df()
    df = pd.concat([df, df[df["regulariser"] == "None"].assign(regulariser="Pixel", score=lambda d: d.score + 1)])
    out = S.paired_comparisons(df, "score")  # Shuffle absent: skipped
    assert list(pd.unique(out["reference"])) == ["None", "Pixel"]
    vs_pixel = out[(out["reference"] == "Pixel") & (out["regulariser"] == "Neural")].iloc[0]
    assert np.isclose(vs_pixel["mean_diff"], np.mean([0.5, 0.1, 0.9, 0.2]) - 1)


def test_summary_with_spread():
    df, acc = _noise_df()
    out = S.summary_with_spread(df, "accuracy", ["regulariser", "std"])
    row = out[(out["regulariser"] == "None") & (out["std"] == 0.1)].iloc[0]
    x = np.array([0.50, 0.55, 0.45])
    assert row["n"] == 3 and np.isclose(row["mean"], 0.5)
    assert np.isclose(row["sem"], np.sqrt(((x - 0.5) ** 2).sum() / 2 / 3))
    single = out[out["regulariser"] == "MyReg"]
    assert (single["n"] == 1).all() and single["sem"].isna().all()


# ----------------------------------------------------------------------------------------------- HTML

def test_write_report_is_self_contained_and_escaped(tmp_path):
    df, _ = _noise_df()
    png = F.save(F.fig4_noise(df), tmp_path / "fig4.png")
    table = pd.DataFrame({"regulariser": ["<b>Neural</b>", "None"], "accuracy": [0.4871234, 0.19], "n": [5, 5]})
    stamp = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    path = H.write_report(tmp_path / "out", "Report <script>", [
        {"title": "Noise", "text": "Evil <script>alert(1)</script>\n\nsecond paragraph",
         "images": [png], "tables": [("Caption & co", table)]},
        {"title": "Empty"}], provenance="db host=x prefix=y", generated_at=stamp)
    assert path == tmp_path / "out" / "index.html"
    page = path.read_text(encoding="utf-8")
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;b&gt;Neural&lt;/b&gt;" in page
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(uris) == 1 and base64.b64decode(uris[0]) == png.read_bytes()
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing loaded from elsewhere
    assert ">0.4871<" in page and ">0.19<" in page and ">5<" in page  # 4 significant digits, ints in full
    assert "Caption &amp; co" in page and "2024-01-02T03:04:05+00:00" in page and "db host=x prefix=y" in page
    assert page.count("<p>") == 2  # the two paragraphs of text (blank line = new paragraph)
    with pytest.raises(S.ReportInputError, match="does not exist"):
        H.write_report(tmp_path, "t", [{"title": "x", "images": [tmp_path / "missing.png"]}])
    with pytest.raises(S.ReportInputError, match="unknown key"):
        H.write_report(tmp_path, "t", [{"title": "x", "image": [png]}])


def test_format_number():
    assert H.format_number(0.000123456) == "0.0001235"
    assert H.format_number(123456.7) == "1.235e+05"
    assert H.format_number(np.int64(12345)) == "12345"
    assert H.format_number(float("nan")) == "NaN"
    assert H.format_number(True) == "True"


# ------------------------------------------------------------------------------ alpha sweeps: kind and alpha apart

SWEEP_ALPHAS = (1.0, 10.0)
SWEEP_SEEDS = (0, 1, 2, 3)
SWEEP_EFFECT = {"Shuffle": 0.002, "Neural": 0.01}  # gain in median per unit alpha


def _sweep_value(reg, alpha, seed, norm, attack_set="set-a"):
    """A hand-checkable median: a seed offset shared by every condition, a gain growing with alpha, a wobble."""
    wobble = 0.003 * int(np.random.default_rng([len(reg), int(alpha), seed]).integers(0, 10))
    scale = 2.0 if norm == "L2" else 1.0
    shift = 0.05 if attack_set == "set-b" else 0.0
    return scale * (0.1 + 0.02 * seed + SWEEP_EFFECT.get(reg, 0.0) * alpha + wobble) + shift


def _sweep_scores(attack_sets=("set-a",)):
    """queries.scores-shaped frame: None (alpha 0) and Neural, Shuffle at two alphas, 4 seeds, 2 norms."""
    conds = [("None", "none", 0.0)] + [(reg, kind, a) for reg, kind in (("Shuffle", "shuffle"),
                                                                         ("Neural", "neural-model"))
                                       for a in SWEEP_ALPHAS]
    rows = [dict(task="digits", arch="resnet", train_name="t", regulariser=reg, kind=kind, alpha=a, seed=s,
                 attack_set=aset, norm=norm, median=_sweep_value(reg, a, s, norm, aset), robust_accuracy=0.5,
                 threshold=0.5, n_attacks=2)
            for aset in attack_sets for reg, kind, a in conds for s in SWEEP_SEEDS for norm in ("L2", "Linf")]
    return pd.DataFrame(rows)


def _sweep_base():
    """queries.classifiers-shaped frame for the same conditions."""
    conds = [("None", "none", 0.0)] + [(r, k, a) for r, k in (("Shuffle", "shuffle"), ("Neural", "neural-model"))
                                       for a in SWEEP_ALPHAS]
    return pd.DataFrame([dict(key={"seed": s, "reg": f"{r}{a}"}, task="digits", arch="resnet", train_name="t",
                              regulariser=r, kind=k, alpha=a, regulariser_name=f"{k}-alpha{a:g}", seed=s,
                              test_accuracy=0.9 - 0.01 * a * (r != "None") + 0.001 * s, wall_time=1.0)
                         for r, k, a in conds for s in SWEEP_SEEDS])


def test_fig6_alpha_one_line_per_regulariser_with_a_point_per_alpha_and_none_as_reference():
    fig = F.fig6_alpha(_sweep_scores())
    assert [ax.get_title() for ax in fig.axes] == ["L2", "Linf"]
    for ax, norm in zip(fig.axes, ("L2", "Linf")):
        lines = {line.get_gid(): line for line in ax.lines}
        assert set(lines) == {f"{norm}|Shuffle", f"{norm}|Neural", f"{norm}|None"}
        for reg in ("Shuffle", "Neural"):
            line = lines[f"{norm}|{reg}"]
            np.testing.assert_allclose(line.get_xdata(), SWEEP_ALPHAS)  # one line, two points: no dots
            np.testing.assert_allclose(line.get_ydata(), [np.mean([_sweep_value(reg, a, s, norm)
                                                                    for s in SWEEP_SEEDS]) for a in SWEEP_ALPHAS])
        none = lines[f"{norm}|None"]  # the baseline is a horizontal line at its mean, not a point at alpha 0
        assert list(none.get_xdata()) == [0, 1] and none.get_transform() != ax.transData
        np.testing.assert_allclose(none.get_ydata(), np.mean([_sweep_value("None", 0.0, s, norm)
                                                              for s in SWEEP_SEEDS]))
        assert "α=0" in [t.get_text() for t in ax.get_legend().get_texts() if t.get_text().startswith("None")][0]
    # a frame of two attack sets is refused: one figure per attack set
    with pytest.raises(S.ReportInputError, match="attack_set"):
        F.fig6_alpha(_sweep_scores(("set-a", "set-b")))


def test_paired_comparisons_at_each_alpha_against_none_and_the_control():
    scores = _sweep_scores()
    l2 = scores[scores["norm"] == "L2"]
    out = S.paired_comparisons(l2, "median")
    got = {(r.alpha, r.regulariser, r.reference): r for r in out.itertuples()}
    expected = {(a, reg, ref) for a in SWEEP_ALPHAS
                for reg, ref in (("Shuffle", "None"), ("Neural", "None"), ("Neural", "Shuffle"))}
    assert set(got) == expected  # both alphas, every pair once (no Shuffle-vs-Neural mirror, no cross-alpha pair)
    for a, reg, ref in expected:
        row = got[(a, reg, ref)]
        ref_alpha = 0.0 if ref == "None" else a
        assert row.reference_alpha == ref_alpha
        diff = np.array([_sweep_value(reg, a, s, "L2") - _sweep_value(ref, ref_alpha, s, "L2")
                         for s in SWEEP_SEEDS])
        assert row.n_pairs == 4 and np.isclose(row.mean_diff, diff.mean())
        half = sps.t.ppf(0.975, 3) * diff.std(ddof=1) / 2
        assert np.isclose(row.ci_low, diff.mean() - half) and np.isclose(row.ci_high, diff.mean() + half)
        assert np.isclose(row.p_value, sps.ttest_rel(diff, np.zeros(4)).pvalue)
    np.testing.assert_allclose(out["p_adjusted"], sps.false_discovery_control(out["p_value"], method="bh"))
    # the Neural gain over Shuffle grows with alpha, as built in
    assert got[(10.0, "Neural", "Shuffle")].mean_diff > got[(1.0, "Neural", "Shuffle")].mean_diff > 0


def test_report_comparisons_stay_within_attack_set_and_norm():
    scores = _sweep_scores(("set-a", "set-b"))
    with pytest.raises(S.ReportInputError, match="share the key"):  # mixing attack sets is refused
        S.paired_comparisons(scores[scores["norm"] == "L2"], "median")
    out = R.score_comparisons(scores)
    assert len(out) == 2 * 2 * 2 * 3  # attack sets x norms x alphas x pairs
    row = out[(out["attack_set"] == "set-b") & (out["norm"] == "Linf") & (out["alpha"] == 10.0)
              & (out["regulariser"] == "Neural") & (out["reference"] == "None")].iloc[0]
    assert np.isclose(row["mean_diff"], np.mean([_sweep_value("Neural", 10.0, s, "Linf", "set-b")
                                                 - _sweep_value("None", 0.0, s, "Linf", "set-b")
                                                 for s in SWEEP_SEEDS]))


def test_summary_frame_keeps_alpha_in_its_own_column():
    base = _sweep_base()
    scores = _sweep_scores(("set-a", "set-b"))
    noise = pd.DataFrame([dict(regulariser=r, kind=k, alpha=a, seed=s, noise_name="n", std=std, accuracy=0.5)
                          for r, k, a in base[["regulariser", "kind", "alpha"]].drop_duplicates().itertuples(
                              index=False) for s in SWEEP_SEEDS for std in (0.0, 0.2)])
    table = R.summary_frame(base, noise, scores)
    assert list(table.columns[:4]) == ["regulariser", "alpha", "seeds", "clean acc"]
    assert list(zip(table["regulariser"], table["alpha"])) == [("None", 0.0), ("Shuffle", 1.0), ("Shuffle", 10.0),
                                                               ("Neural", 1.0), ("Neural", 10.0)]
    assert (table["seeds"] == 4).all() and "acc σ=0.2" in table.columns
    # two attack sets: one column each, never a mean over both
    assert {"median L2 [set-a]", "median L2 [set-b]", "median Linf [set-a]"} <= set(table.columns)
    row = table[(table["regulariser"] == "Neural") & (table["alpha"] == 10.0)].iloc[0]
    values = [_sweep_value("Neural", 10.0, s, "L2", "set-b") for s in SWEEP_SEEDS]
    assert row["median L2 [set-b]"] == f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"


def test_fig4_noise_one_line_per_condition_labelled_with_alpha():
    df, _ = _noise_df()
    df = df.assign(alpha=np.where(df["regulariser"] == "None", 0.0, 1.0))
    df = pd.concat([df, df[df["regulariser"] == "Neural"].assign(alpha=10.0, accuracy=lambda d: d.accuracy / 2)])
    ax = F.fig4_noise(df).axes[0]
    lines = {line.get_gid(): line for line in ax.lines}
    assert set(lines) == {"None", "Neural (α=1)", "Neural (α=10)", "MyReg (α=1)"}
    assert lines["Neural (α=10)"].get_color() == F.REGULARISER_COLORS["Neural"]  # strongest: full colour
    assert lines["Neural (α=1)"].get_color() != lines["Neural (α=10)"].get_color()
    np.testing.assert_allclose(lines["Neural (α=10)"].get_ydata(), lines["Neural (α=1)"].get_ydata() / 2)


def test_tables_index_conditions_with_alpha_and_html_shows_both():
    rows = [dict(regulariser="Neural", alpha=a, seed=s, layer=layer, gamma=g * (1 + (a == 10.0)))
            for a in SWEEP_ALPHAS for s in (0, 1) for layer, g in (("conv5", 0.25), ("conv1", 0.2))]
    t = F.table1_layer_weights(pd.DataFrame(rows))
    assert t.index.names == ["regulariser", "alpha"] and list(t.index) == [("Neural", 1.0), ("Neural", 10.0)]
    np.testing.assert_allclose(t.loc[("Neural", 10.0)].to_numpy(), [0.4, 0.5])
    page = H.table_html(t)
    assert ">Neural<" in page and ">10<" in page and ">alpha<" in page


def test_experiment_sections_draw_one_fig6_per_attack_set(tmp_path):
    base = _sweep_base()
    scores = _sweep_scores(("set-a", "set-b"))
    sections = R.experiment_sections(tmp_path, {"task": "digits"}, {"base": base, "scores": scores})
    assert sorted(p.name for p in tmp_path.glob("fig6_alpha_*.png")) == ["fig6_alpha_digits_set-a.png",
                                                                        "fig6_alpha_digits_set-b.png"]
    adversarial = next(s for s in sections if s["title"].startswith("Fig 5-6"))
    comparisons = adversarial["tables"][0][1]
    assert set(comparisons["attack_set"]) == {"set-a", "set-b"} and set(comparisons["alpha"]) == set(SWEEP_ALPHAS)
    summary = sections[0]["tables"][0]
    assert "alpha" in summary.columns and set(summary["regulariser"]) == {"None", "Shuffle", "Neural"}
    H.write_report(tmp_path / "page", "t", sections)


def test_condition_labels_and_order():
    assert C.regulariser_label("neural-model") == "Neural" and C.regulariser_label(None) == "None"
    assert C.regulariser_label("new-kind") == "new-kind"  # unknown kinds are their own label
    assert C.condition_label("Neural", 10.0) == "Neural (α=10)" and C.condition_label("None", 0.0) == "None"
    df = pd.DataFrame({"regulariser": ["Neural", "zeta", "None", "Neural", "Shuffle"],
                       "alpha": [10.0, 1.0, 0.0, 1.0, 1.0]})
    assert C.conditions(df) == [("None", 0.0), ("Shuffle", 1.0), ("Neural", 1.0), ("Neural", 10.0), ("zeta", 1.0)]
    assert set(S.CONTROL_REFERENCES) == {"None", "Shuffle", "Pixel", "Random", "VGG"}
