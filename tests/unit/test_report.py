"""The report layer: figures read back from their artists, statistics against hand/scipy numbers, the HTML page."""

import base64
import re
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
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
    axes = [ax for ax in fig.axes if ax.lines]
    assert len(axes) == 4  # one panel per attack: BB, PGD (L2); BB, PGD (Linf)
    assert [ax.get_title().split(",")[0] for ax in axes] == ["BB (L2)", "PGD (L2)", "BB (Linf)", "PGD (Linf)"]
    for ax in axes:
        assert len(ax.lines) == 2 and ax.get_xscale() == "log" and "3 points" in ax.get_title()
        assert ax.get_legend() is None  # one legend for the figure, outside the axes
    line = {l.get_gid(): l for l in axes[1].lines}["PGD|Neural"]
    np.testing.assert_allclose(line.get_xdata(), [10, 100, 1000])
    np.testing.assert_allclose(line.get_ydata(), [0.3 * 2 * 1.5, 0.2 * 2 * 1.5, 0.1 * 2 * 1.5])
    # the spread over seeds: SEM bars (seed values m and 2m -> sd m / sqrt(2), sem m / 2) and a band
    segs = axes[1].collections[0].get_segments()  # the error bars of the first condition (None)
    np.testing.assert_allclose([s[1, 1] - s[0, 1] for s in segs], [2 * m * 1 / 2 for m in (0.3, 0.2, 0.1)])
    assert sum(isinstance(c, PolyCollection) for c in axes[1].collections) == 2  # one band per condition
    # the legend sits outside every axes
    fig.canvas.draw()
    legend = fig.legends[0].get_window_extent()
    assert all(not legend.overlaps(ax.get_window_extent()) for ax in fig.axes)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["None (n = 2 seeds)", "Neural (n = 2 seeds)"]


def test_curve_by_setting_aligns_seeds_whose_query_counts_differ_slightly():
    rows = [dict(regulariser="None", seed=s, attack="A", norm="L2", queries=q + 0.1 * s, median=m + s)
            for s in (0, 1) for q, m in ((77.0, 0.5), (294.0, 0.4))]
    out = F.curve_by_setting(pd.DataFrame(rows))
    assert list(out["step"]) == [0, 1] and list(out["n"]) == [2, 2]
    np.testing.assert_allclose(out["queries"], [77.05, 294.05])
    np.testing.assert_allclose(out["mean"], [1.0, 0.9])
    np.testing.assert_allclose(out["sem"], [0.5, 0.5])
    np.testing.assert_allclose(out[["lo", "hi"]].to_numpy(), [[0.5, 1.5], [0.4, 1.4]])
    # one point per curve (a sweep of one setting) still draws, on an axis around that point
    one = pd.DataFrame([dict(regulariser="None", seed=s, attack="BB", norm="L2", queries=163.0 + 0.1 * s,
                             median=0.8) for s in (0, 1)])
    ax = F.fig5_queries(one).axes[0]
    lo, hi = ax.get_xlim()
    assert lo < 100 and hi > 300


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
    fig6 = next(s for s in sections if s["title"].startswith("Fig 6"))
    comparisons = fig6["tables"][0][1]
    assert set(comparisons["attack_set"]) == {"set-a", "set-b"} and set(comparisons["alpha"]) == set(SWEEP_ALPHAS)
    assert list(comparisons.columns[:5]) == ["attack_set", "norm", "regulariser", "alpha", "reference"]
    for path, caption in fig6["images"]:  # captions: what, which table, n
        assert "robustness.RobustnessScore.Norm" in caption and "seeds per condition" in caption
        assert f"{len(SWEEP_ALPHAS)} values" in caption
    scores_table = fig6["tables"][-1][1]
    assert isinstance(scores_table.index, pd.RangeIndex) and "task" not in scores_table.columns
    summary = sections[0]["tables"][0]
    assert "alpha" in summary.columns and set(summary["regulariser"]) == {"None", "Shuffle", "Neural"}
    page = H.write_report(tmp_path / "page", "t", sections).read_text()
    assert "RobustnessScore.Norm" in page and "<figcaption>Fig 6, attack set set-a" in page
    # no index column in the scores table: its first header cell is a column name
    scores_html = page[page.index("Scores per classifier"):]
    assert re.search(r"<thead>\s*<tr[^>]*>\s*<th>regulariser</th>", scores_html)


def test_experiment_sections_say_what_to_populate_when_frames_are_empty(tmp_path):
    base = _sweep_base()
    sections = R.experiment_sections(tmp_path, {"task": "digits"}, {"base": base})
    missing = {s["title"].split(":")[0]: s.get("missing", "") for s in sections}
    assert "robustness.NoiseRobustness" in missing["Fig 4"] and "populate NoiseRobustness" in missing["Fig 4"]
    assert "robustness.Adversarial" in missing["Fig 5"] and "populate Adversarial" in missing["Fig 5"]
    assert "no alpha sweep" in missing["Fig 6"] and "alphas" in missing["Fig 6"]
    assert "LayerWeight" in missing["Table 1"]
    assert not list(tmp_path.glob("*.png"))
    page = H.write_report(tmp_path / "page", "t", sections).read_text()
    assert page.count('<div class="missing">') == 4


def test_experiment_sections_fig4_fig5_table1_captions_name_table_and_n(tmp_path):
    noise, _ = _noise_df()
    noise = noise[noise["regulariser"] != "MyReg"].assign(noise_name="cfg", n_samples=400)
    curves = _queries_df().assign(n_samples=20)
    gammas = pd.DataFrame([dict(regulariser="Neural", seed=s, layer=l, gamma=g)
                           for s in (0, 1) for l, g in (("conv1", 0.2), ("layer1", 0.8))])
    base = pd.DataFrame({"regulariser": ["None", "Neural"] * 3, "seed": [0, 0, 1, 1, 2, 2],
                         "test_accuracy": 0.9})
    sections = R.experiment_sections(tmp_path, {"task": "t"}, {"base": base, "noise": noise, "curves": curves,
                                                               "gammas": gammas})
    by = {s["title"].split(":")[0]: s for s in sections}
    (_, cap4), = by["Fig 4"]["images"]
    assert "robustness.NoiseRobustness" in cap4 and "n = 3 seeds per condition, 2 conditions" in cap4
    assert "400 test samples" in cap4 and "3 stds" in cap4
    (_, cap5), = by["Fig 5"]["images"]
    assert "robustness.Adversarial" in cap5 and "n = 2 seeds per condition" in cap5 and "4 attacks" in cap5
    assert "points per curve: BB (L2): 3, BB (Linf): 3, PGD (L2): 3, PGD (Linf): 3" in cap5
    assert "20 test samples" in cap5
    assert "points per curve" in by["Fig 5"]["text"].lower()  # fewer than 5: says how to get more
    assert "LayerWeight" in by["Table 1"]["text"] and "n = 2 seeds" in by["Table 1"]["text"]


# --------------------------------------------------------------------------------- Fig 1 sections, 1D

def _oracle_scan(label, rng, m=10, truth=True):
    truth_S = _similarity(m, rng)
    return {"label": label, "oracle": 0.8 * truth_S + 0.2 * _similarity(m, rng),
            "trial": 0.4 * truth_S + 0.6 * _similarity(m, rng), "model": 0.7 * truth_S + 0.3 * _similarity(m, rng),
            "truth": truth_S if truth else None, "truth_note": "" if truth else "source_format 'filetree': no truth",
            "data_rest": _similarity(12, rng), "model_rest": _similarity(12, rng),
            "truth_rest": _similarity(12, rng) if truth else None}


def test_fig1d_scatter_against_oracle_and_truth():
    rng = np.random.default_rng(7)
    scans = [_oracle_scan("A", rng), _oracle_scan("B", rng, truth=False)]
    fig = F.fig1d_oracle_scatter(scans)
    assert len(fig.axes) == 4  # 2 scans x (vs oracle, vs truth)
    gids = {c.get_gid(): c for ax in fig.axes for c in ax.collections}
    assert set(gids) == {"A|trial|oracle", "A|model|oracle", "A|trial|truth", "A|model|truth", "A|oracle|truth",
                         "B|trial|oracle", "B|model|oracle"}
    iu = np.triu_indices(10, 1)
    np.testing.assert_allclose(gids["A|model|oracle"].get_offsets(),
                               np.column_stack([scans[0]["oracle"][iu], scans[0]["model"][iu]]))
    r = sps.pearsonr(scans[0]["oracle"][iu], scans[0]["trial"][iu]).statistic
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any(f"r = {r:.3f}" in t for t in legend)
    assert not fig.axes[3].axison  # B has no truth: its panel says so
    # without any truth: one column
    assert len(F.fig1d_oracle_scatter(scans[1:]).axes) == 1
    with pytest.raises(S.ReportInputError, match="differ in shape"):
        F.fig1d_oracle_scatter([dict(scans[0], model=np.eye(4))])


def test_oracle_comparison_table_r_and_nan_without_truth():
    rng = np.random.default_rng(8)
    scans = [_oracle_scan("A", rng), _oracle_scan("B", rng, truth=False)]
    t = F.oracle_comparison_table(scans)
    assert list(t["scan"]) == ["A", "B"] and list(t["oracle images"]) == [10, 10]
    assert np.isclose(t.loc[0, "r(model, truth)"], offdiagonal_correlation(scans[0]["model"], scans[0]["truth"]))
    assert np.isclose(t.loc[0, "r(data, truth) non-oracle"],
                      offdiagonal_correlation(scans[0]["data_rest"], scans[0]["truth_rest"]))
    assert np.isnan(t.loc[1, "r(trial, truth)"]) and np.isfinite(t.loc[1, "r(trial, oracle)"])


def test_neural_sections_captions_and_missing_notes(tmp_path):
    rng = np.random.default_rng(9)
    model = _similarity(12, rng)
    scans = [{"label": "A", "data": 0.5 * model + 0.5 * _similarity(12, rng), "model": model,
              "oracle": _similarity(10, rng)}]
    oracle_scans = [_oracle_scan("A", rng), _oracle_scan("B", rng, truth=False)]
    edges = np.linspace(-1, 1, 201)
    stab = [{"scan_group": "g", "n_scans": 3, "bin_edges": edges, "scan_width": 0.03, "repeat_width": 0.1,
             "scan_histogram": np.histogram(rng.normal(0, 0.03, 500), edges)[0] + 0.0,
             "repeat_histogram": np.histogram(rng.normal(0, 0.1, 500), edges)[0] + 0.0}]
    sections = R.neural_sections(tmp_path, scans, oracle_scans, stab)
    by = {s["title"].split(":")[0].split(" (")[0]: s for s in sections}
    (_, c1), = by["Fig 1"]["images"]
    assert "oracle.DataSimilarity" in c1 and "predictor.ModelSimilarity" in c1 and "1 of 1 scan" in c1
    assert "12 non-oracle images" in c1 and "10 oracle images" in c1
    (_, c1c), = by["Fig 1C"]["images"]
    assert "oracle.Stability" in c1c and "n = 3 scans" in c1c
    (_, c1d), = by["Fig 1D"]["images"]
    assert "oracle.OracleSimilarity" in c1d and "predictor.TrainedPredictor" in c1d and "2 of 2 scans" in c1d
    assert "1 simulated scan" in c1d and "10 oracle images" in c1d
    assert "source_format 'filetree'" in by["Fig 1D"]["text"]  # why a scan has no truth
    # nothing populated: each figure says why and what to populate, and nothing is drawn
    empty = R.neural_sections(tmp_path / "empty", [], [], [])
    notes = [s["missing"] for s in empty]
    assert len(notes) == 3 and all("Not drawn" in n and "populate" in n for n in notes)
    assert "DataSimilarity" in notes[0] and "Stability" in notes[1] and "TrainedPredictor" in notes[2]
    assert not (tmp_path / "empty").exists() or not list((tmp_path / "empty").glob("*.png"))


def test_fig1_stability_x_range_follows_the_data_not_the_bins():
    rng = np.random.default_rng(10)
    edges = np.linspace(-1, 1, 201)
    h_scan = np.histogram(rng.normal(0, 0.03, 5000), edges)[0]
    h_rep = np.histogram(rng.normal(0, 0.1, 5000), edges)[0]
    ax = F.fig1_stability(edges, h_scan, h_rep, 0.03, 0.1).axes[0]
    lo, hi = ax.get_xlim()
    assert -0.6 < lo < -0.3 and 0.3 < hi < 0.6  # about +-0.33 (the 0.1 % tails of sd 0.1) plus a margin
    # the shown range holds (almost) all of both densities
    for h in (h_scan, h_rep):
        centres = 0.5 * (edges[1:] + edges[:-1])
        assert h[(centres >= lo) & (centres <= hi)].sum() >= 0.998 * h.sum()


def test_single_repeat_similarity_takes_one_trial_per_image():
    from pipeline.oracle.similarity import population_similarity, single_repeat_similarity

    rng = np.random.default_rng(11)
    ids = np.array([5, 3, 5, 3, 9, 9, 3, 5, 9])
    r = rng.normal(size=(9, 6))
    w = rng.uniform(0.5, 2, 6)
    S, out_ids = single_repeat_similarity(r, ids, w)
    np.testing.assert_array_equal(out_ids, [3, 5, 9])
    np.testing.assert_allclose(S, population_similarity(r[[1, 0, 4]], w), atol=1e-6)  # first trial of each
    S1, _ = single_repeat_similarity(r, ids, w, repeat=2)
    np.testing.assert_allclose(S1, population_similarity(r[[6, 7, 8]], w), atol=1e-6)
    with pytest.raises(ValueError, match="repeat"):
        single_repeat_similarity(r, ids, w, repeat=3)


def test_simulator_truth_regenerates_the_noise_free_rates():
    from pipeline.recording.simulator import simulate_scans
    from pipeline.report.truth import parse_simulator_source, simulator_truth

    scans = simulate_scans(n_scans=2, n_neurons=15, n_images=20, n_oracle_images=4, n_repeats=2, seed=3)
    for scan in scans:
        assert parse_simulator_source(scan.source) == (3, scan.extra["scan"])
        rates = simulator_truth(scan.source, scan.n_neurons, scan.images, scan.behavior.mean(0), scan.positions)
        np.testing.assert_allclose(rates, scan.extra["mean_rates"], rtol=1e-5, atol=1e-6)
    with pytest.raises(S.ReportInputError, match="positions differ"):  # another scan's neurons
        simulator_truth(scans[0].source, 15, scans[0].images, scans[0].behavior.mean(0), scans[1].positions)
    with pytest.raises(S.ReportInputError, match="not a simulator call"):
        parse_simulator_source("/data/static123-1-1")


# ----------------------------------------------------------------------------- provenance, diagram

def test_provenance_has_every_key_and_no_password(tmp_path):
    from pipeline.report import provenance as P

    info = {"host": "db.example", "port": 3306, "user": "alice", "passwd": "s3cret", "password": "s3cret"}
    stamp = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    prov = P.collect(info, "alice", now=stamp)
    assert tuple(prov) == P.PROVENANCE_KEYS
    assert "s3cret" not in repr(prov)
    assert prov["database"] == "host db.example, port 3306, user alice" and prov["schema prefix"] == "alice"
    assert prov["generated at"] == "2024-01-02T03:04:05+00:00"
    assert prov["torch threads"].isdigit() and prov["device"].startswith(("cpu", "cuda"))
    assert prov["code version"].startswith(("git ", "neural-reg ", "unknown"))
    assert prov["numpy version"] == np.__version__
    # outside a git checkout: the package version
    assert P.code_version(tmp_path).startswith(("neural-reg ", "unknown"))
    frame = P.provenance_frame(prov)
    page = H.write_report(tmp_path / "p", "t", [{"title": "Provenance", "tables": [frame]}]).read_text()
    assert "db.example" in page and "s3cret" not in page


def test_diagram_section_without_dot_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(R.shutil, "which", lambda name: None)
    section = R.diagram_section(tmp_path, schema_modules=[])  # touches no database
    assert "apt-get install graphviz" in section["missing"] and "dot" in section["missing"]
    assert not list(tmp_path.glob("*.png"))


def test_image_captions_replace_file_names(tmp_path):
    df, _ = _noise_df()
    png = F.save(F.fig4_noise(df), tmp_path / "fig4.png")
    page = H.write_report(tmp_path / "out", "t", [
        {"title": "a", "images": [(png, "Fig 4 <from> robustness.NoiseRobustness (n = 3 seeds)")],
         "missing": "Not drawn: populate X"},
        {"title": "b", "images": [png]}]).read_text()
    assert "<figcaption>Fig 4 &lt;from&gt; robustness.NoiseRobustness (n = 3 seeds)</figcaption>" in page
    assert "<figcaption>fig4.png</figcaption>" in page  # no caption given: the file name
    assert '<div class="missing"><p>Not drawn: populate X</p></div>' in page


def test_condition_labels_and_order():
    assert C.regulariser_label("neural-model") == "Neural" and C.regulariser_label(None) == "None"
    assert C.regulariser_label("new-kind") == "new-kind"  # unknown kinds are their own label
    assert C.condition_label("Neural", 10.0) == "Neural (α=10)" and C.condition_label("None", 0.0) == "None"
    df = pd.DataFrame({"regulariser": ["Neural", "zeta", "None", "Neural", "Shuffle"],
                       "alpha": [10.0, 1.0, 0.0, 1.0, 1.0]})
    assert C.conditions(df) == [("None", 0.0), ("Shuffle", 1.0), ("Neural", 1.0), ("Neural", 10.0), ("zeta", 1.0)]
    assert set(S.CONTROL_REFERENCES) == {"None", "Shuffle", "Pixel", "Random", "VGG", "Contrast energy", "Robust net",
                                         "Deflated", "Neural (truth)"}
    assert C.regulariser_label("contrast-energy") == "Contrast energy" and C.regulariser_label("deflated") == "Deflated"


# ------------------------------------------------------------------ statistics, targets, brain-likeness

_STAT_CONDS = [("None", 0.0), (C.ADVERSARIAL, 0.0), ("Pixel", 10.0), ("Neural", 10.0)]


def _stat_frames(n_seeds=3, n=60):
    """base, score_samples, scores and noise frames of one experiment (Neural and the adversarial classifier
    clearly more robust than None, Pixel as None)."""
    rng = np.random.default_rng(0)
    difficulty = rng.lognormal(0, 0.5, n)
    gain = {"Neural": 0.4, C.ADVERSARIAL: 0.9}
    samples, scores, noise, base = [], [], [], []
    for reg, alpha in _STAT_CONDS:
        for s in range(n_seeds):
            d = difficulty * np.exp(gain.get(reg, 0.0) + rng.normal(0, 0.03)) * rng.lognormal(0, 0.2, n)
            key = dict(task="digits", arch="r", train_name="t", regulariser=reg, kind="k", alpha=alpha, seed=s)
            base.append(dict(key, key={"seed": s, "reg": reg}, test_accuracy=0.9 + 0.01 * s))
            samples.append(dict(key, attack_set="set", norm="L2", sample_idx=np.arange(n), distances=d))
            scores.append(dict(key, attack_set="set", norm="L2", median=float(np.median(d)), robust_accuracy=0.5,
                               threshold=0.5, n_attacks=2, n_samples=n))
            for std in (0.0, 0.2):
                noise.append(dict(key, noise_name="cfg", std=std, accuracy=0.9 - std * (1 - gain.get(reg, 0)),
                                  n_samples=100))
    return {"base": pd.DataFrame(base), "samples": pd.DataFrame(samples), "scores": pd.DataFrame(scores),
            "noise": pd.DataFrame(noise)}


def test_statistics_section_shows_conditions_with_cis_verdicts_and_effects(tmp_path):
    frames = _stat_frames()
    sections = R.experiment_sections(tmp_path, {"task": "digits"}, frames)
    section = next(s for s in sections if s["title"].startswith("Robustness with confidence intervals"))
    (cap_c, intervals), (cap_v, verdicts), (_, effects) = section["tables"]
    assert "hierarchical bootstrap over seeds" in cap_c and "60 attacked test samples" in cap_c
    assert list(intervals.index) == _STAT_CONDS and list(intervals.columns) == ["seeds", "clean acc", "median L2",
                                                                               "noise acc"]
    assert intervals.loc[("None", 0.0), "clean acc"].startswith("0.91 [")  # mean of 0.90, 0.91, 0.92
    assert list(verdicts.index) == ["Neural beats None", "Neural beats Pixel", "Adversarial (PGD) beats None"]
    assert verdicts.loc["Adversarial (PGD) beats None", "median L2"].startswith("yes: +1")  # exp(0.9) = 2.5x
    assert verdicts.loc["Neural beats Pixel", "median L2"].startswith("yes: +")
    assert list(verdicts.columns) == ["median L2", "noise acc"]  # clean accuracy is no robustness claim
    assert "Benjamini-Hochberg over the 6 cells" in cap_v  # the family: 3 claims x 2 metrics
    assert set(effects["reference"]) == {"None", "Pixel"} and "verdict" in effects.columns
    (path, caption), = section["images"]
    assert path.name == "effects_digits.png" and "FCR-adjusted" in caption
    fig6 = next(s for s in sections if s["title"].startswith("Fig 6"))
    shown = fig6["tables"][-1][1]  # the scores table: each classifier's median with its bootstrap CI
    assert list(shown.columns[shown.columns.get_loc("median"):][:3]) == ["median", "median_ci_low", "median_ci_high"]
    assert ((shown["median_ci_low"] < shown["median"]) & (shown["median"] < shown["median_ci_high"])).all()
    page = H.write_report(tmp_path / "page", "t", sections).read_text()
    assert "Adversarial (PGD) beats None" in page


def test_target_section_table_and_spectrum_or_what_to_populate(tmp_path):
    missing = R.target_section(tmp_path, pd.DataFrame())
    assert "TargetDiagnostics" in missing["missing"] and "populate TargetDiagnostics" in missing["missing"]
    shares = np.array([0.4, 0.2, 0.1, 0.05])
    diag = pd.DataFrame([dict(target_name="Neural", kind="neural-model", regulariser="Neural", n_images=80,
                              top1_share=0.4, spectrum_exponent=1.2, r_contrast=0.7, eigenvalue_shares=shares),
                         dict(target_name="Pixel", kind="pixel", regulariser="Pixel", n_images=80, top1_share=0.25,
                              spectrum_exponent=np.nan, r_contrast=0.3, eigenvalue_shares=shares / 2)])
    section = R.target_section(tmp_path, diag)
    (_, table), = section["tables"]
    assert "eigenvalue_shares" not in table.columns and table["top1_share"].tolist() == [0.4, 0.25]
    (path, caption), = section["images"]
    assert path.name == "target_spectrum.png" and "leading 4 eigenvalues" in caption and "2 targets" in caption
    fig = F.target_spectrum(diag)
    left = fig.axes[0]
    neural = next(line for line in left.lines if line.get_gid() == "Neural")
    np.testing.assert_allclose(neural.get_ydata(), shares)
    assert [t.get_text() for t in left.get_legend().get_texts()] == ["Neural (exponent 1.20)", "Pixel"]
    np.testing.assert_allclose(next(line for line in fig.axes[1].lines if line.get_gid() == "Pixel").get_ydata(),
                               np.cumsum(shares / 2))


def test_brain_likeness_table_names_both_definitions():
    brain = pd.DataFrame([dict(target_name="Neural", regulariser=r, alpha=a, seed=s, correlation=c + 0.1 * s,
                               correlation_eval=c / 2)
                          for r, a, c in (("None", 0.0, 0.5), ("Neural", 10.0, 0.8)) for s in (0, 1)])
    table = F.brain_likeness_table(brain)
    as_trained, evaluated = F.BRAIN_LIKENESS_NAMES["correlation"], F.BRAIN_LIKENESS_NAMES["correlation_eval"]
    assert list(table.columns) == ["target_name", "regulariser", "alpha", as_trained, evaluated, "n"]
    assert table[as_trained].tolist() == ["0.550 ± 0.050", "0.850 ± 0.050"]  # mean ± SEM of (c, c + 0.1)
    assert table[evaluated].tolist() == ["0.250 ± 0.000", "0.400 ± 0.000"]
    old = F.brain_likeness_table(brain.assign(correlation_eval=np.nan))  # column not yet in the schema
    assert evaluated not in old.columns and as_trained in old.columns


def test_corruption_rows_where_every_classifier_is_at_chance_are_named_uninformative():
    import pandas as pd

    from pipeline.report.figures import uninformative_corruptions

    rows = [dict(regulariser=r, seed=s, corruption=c, severity=v, accuracy=acc)
            for r, good in (("None", 0.9), ("Neural", 0.6)) for s in (0, 1)
            for c, v, acc in (("fog", 5, 0.11 if r == "None" else 0.09), ("fog", 1, good), ("blur", 5, 0.25))]
    bad = uninformative_corruptions(pd.DataFrame(rows), n_classes=10, n_samples=200)
    assert list(zip(bad["corruption"], bad["severity"])) == [("fog", 5)]  # 0.25 > 0.1 + 3 * 0.021: informative
    assert abs(bad["chance bound"].iloc[0] - (0.1 + 3 * (0.09 / 200) ** 0.5)) < 1e-12
    assert uninformative_corruptions(pd.DataFrame(rows), n_classes=2, n_samples=200).shape[0] == 2  # fog 1 separates
