"""Minimal adversarial perturbations and robustness scores: guards against fooling ourselves.

A small CNN trained for about a second on scikit-learn digits (16 x 16); 16 test samples; few steps.
The one slow part is numba compiling the L2 Brendel-Bethge optimiser once (20-50 s on a shared CPU).
"""

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist
from sklearn.datasets import load_digits

import eagerpy as ep
import foolbox as fb

import pipeline.robustness.attacks as A
from pipeline.robustness.attacks.base import MinimizationAttack
from pipeline.robustness.attacks.pgd import L2PGDPerSample, LinfPGDPerSample
from pipeline.robustness.attacks.registry import REGISTRY
from pipeline.robustness.attacks.verify import PUSH_FACTORS
from pipeline.robustness.errors import RobustnessInputError
from pipeline.robustness.norms import perturbation_norm
from pipeline.robustness.samples import select_samples
from pipeline.robustness.scores import (
    ROBUSTBENCH_EPSILONS,
    combine_minimal,
    join_results,
    median_perturbation,
    minimal_over_attacks,
    robust_accuracy,
    robustbench_accuracy,
)

torch.set_num_threads(1)
N_SAMPLES = 16


@pytest.fixture(scope="module")
def data():
    """(x_train, y_train, x_test, y_test): digits in [0, 1], (N, 1, 16, 16) float32."""
    d = load_digits()
    x = np.kron(d.images / 16.0, np.ones((2, 2)))[:, None].astype(np.float32)
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(0).permutation(len(x))
    tr, te = perm[:1400], perm[1400:]
    return x[tr], y[tr], x[te], y[te]


@pytest.fixture(scope="module")
def samples(data):
    """(x, y): the N_SAMPLES test samples the configs below select (seed 1), as the caller selects them."""
    _, _, x, y = data
    idx = select_samples(len(x), N_SAMPLES, seed=1)
    return x[idx], y[idx]


@pytest.fixture(scope="module")
def model(data):
    xtr, ytr, xte, yte = data
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(256, 10),
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(xtr), torch.from_numpy(ytr)
    gen = torch.Generator().manual_seed(0)
    for _ in range(6):
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), 64):
            b = perm[i:i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(xt[b]), yt[b]).backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        assert (net(torch.from_numpy(xte)).argmax(1).numpy() == yte).mean() > 0.9
    return net


def _cfg(attack, norm, sweep, **kw):
    return {"attack": attack, "norm": norm, "sweep": sweep, "n_samples": N_SAMPLES, "batch_size": 8, "seed": 1, **kw}


def _run(model, samples, cfg):
    x, y = samples
    return A.minimal_perturbations(model, x, y, cfg, keep_adversarials=True, progress=False)


@pytest.fixture(scope="module")
def ddn(model, samples):
    return _run(model, samples, _cfg("ddn", "L2", {"steps": [10, 100]}))


@pytest.fixture(scope="module")
def pgd(model, samples):
    return _run(model, samples, _cfg("pgd", "Linf", {"steps": [10], "rel_stepsize": [0.2, 0.3]},
                                  search={"eps_max": 1.0, "eps_min": 1e-3, "steps": 6}))


def _reverify(model, samples, result):
    """Independent re-check of every reported adversarial: one sample at a time, distances recomputed."""
    x, y = samples
    x0, y0 = x[result.indices], y[result.indices]
    adv = result.adversarials
    for i in range(len(x0)):
        d = result.distances[i]
        if not np.isfinite(d):
            assert np.isnan(adv[i]).all()
            continue
        assert adv[i].min() >= 0 and adv[i].max() <= 1
        with torch.no_grad():
            pred = int(model(torch.from_numpy(adv[i][None])).argmax(1))
        assert pred != y0[i], f"sample {i}: reported adversarial is classified correctly"
        delta = adv[i].astype(np.float64) - x0[i]
        ref = {"L2": np.sqrt((delta ** 2).sum()), "Linf": np.abs(delta).max(), "L1": np.abs(delta).sum()}[result.norm]
        assert d == pytest.approx(ref, rel=1e-9, abs=1e-12)


# ------------------------------------------------------------------------------------ attacks
def test_undefended_model_is_fooled_by_small_perturbations_on_every_sample(model, data, samples, ddn, pgd):
    """No gradient masking: unbounded attacks flip every sample, with perturbations far below the
    distance between classes."""
    xtr, ytr, _, _ = data
    x, y = samples
    for r in (ddn, pgd):
        assert r.success.all() and np.isfinite(r.distances).all()
        assert r.clean_correct.all()  # at 0.98 accuracy these 16 samples happen to be right
        x0, y0 = x[r.indices].reshape(N_SAMPLES, -1), y[r.indices]
        metric = {"L2": "euclidean", "Linf": "chebyshev"}[r.norm]
        dist = cdist(x0, xtr.reshape(len(xtr), -1), metric=metric)
        nearest_other = np.where(y0[:, None] != ytr[None], dist, np.inf).min(axis=1)
        ratio = np.median(r.distances) / np.median(nearest_other)
        # measured: L2 0.76 / 4.07 = 0.19 (16 x 16 digits of different classes are close), Linf 0.09 / 0.75
        assert ratio < {"L2": 0.25, "Linf": 0.2}[r.norm], (r.norm, ratio)
    assert 0.1 < np.median(ddn.distances) < 2.0 and 0.01 < np.median(pgd.distances) < 0.3


def test_every_reported_adversarial_is_reverified(model, samples, ddn, pgd):
    _reverify(model, samples, ddn)
    _reverify(model, samples, pgd)


def test_sweep_keeps_the_per_sample_minimum_of_its_settings(model, samples, ddn):
    # DDN is deterministic: the two-setting sweep must equal the per-sample min of the single settings
    single = [_run(model, samples, _cfg("ddn", "L2", {"steps": [s]})) for s in (10, 100)]
    np.testing.assert_allclose(ddn.distances, np.minimum(single[0].distances, single[1].distances), rtol=1e-6)
    assert ddn.median <= min(s.median for s in single) + 1e-9
    # queries are counted, not guessed: DDN takes one gradient per step and nothing else
    assert [s["grad_queries"] for s in ddn.settings] == [10, 100]
    assert [q for q, _ in ddn.queries_curve] == [10, 110]
    medians = [m for _, m in ddn.queries_curve]
    assert medians[1] <= medians[0] and medians[1] == pytest.approx(ddn.median)
    # combining attacks never reports more than any single attack found
    idx, dmin = minimal_over_attacks([ddn, single[0]])
    assert np.array_equal(idx, ddn.indices)
    assert np.all(dmin <= ddn.distances) and np.all(dmin <= single[0].distances)


def test_pgd_epsilon_search_and_per_sample_epsilon(model, data, pgd):
    _, _, x, y = data
    # queries: 1 + 6 bisection rounds of PGD (10 gradient steps + 1 forward pass of its last iterate + 1 success
    # check each), 1 forward pass of the clean images, plus a few forward passes that push boundary points past
    # the verification margin
    for s in pgd.settings:
        assert s["grad_queries"] == 7 * 10
        assert 7 * 12 + 1 <= s["queries"] <= 7 * (12 + len(PUSH_FACTORS)) + 1
    # the per-sample radius is respected, sample by sample
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    x0 = torch.from_numpy(x[:6])
    eps = torch.tensor([0.01, 0.02, 0.05, 0.1, 0.2, 0.4]).reshape(-1, 1, 1, 1)
    for cls, norm in ((LinfPGDPerSample, "Linf"), (L2PGDPerSample, "L2")):
        scale = 1.0 if norm == "Linf" else 10.0
        adv = cls(steps=5, rel_stepsize=0.3).run(fmodel, x0, torch.from_numpy(y[:6]),
                                                  epsilon=ep.astensor(eps * scale))
        d = perturbation_norm((adv - x0).numpy(), norm)
        assert np.all(d <= eps.flatten().numpy() * scale * (1 + 1e-5)), (norm, d)
        assert np.all(d >= eps.flatten().numpy() * scale * 0.5), (norm, d)  # uses its radius


def test_misclassified_samples_count_zero_and_are_not_attacked(model, samples):
    x, y = samples
    y_bad = y.copy()
    y_bad[:3] = (y[:3] + 1) % 10  # wrong labels: the model "misclassifies" these
    r = _run(model, (x, y_bad), _cfg("ddn", "L2", {"steps": [10]}))
    assert np.array_equal(r.indices, np.arange(N_SAMPLES))  # every given sample, none selected
    assert np.all(r.distances[:3] == 0) and np.all(r.distances[3:] > 0)
    assert not r.clean_correct[:3].any() and r.success.all()
    np.testing.assert_array_equal(r.adversarials[:3], x[:3])
    assert r.settings[0]["grad_queries"] == 10  # per attacked sample: the 3 were not attacked


class _FakeAttack:
    """Claims every input is adversarial: returns it shifted out of bounds (x + 5) or unchanged."""

    def __init__(self, shift: float = 0.0):
        self.shift = shift

    def run(self, model, inputs, criterion, **kwargs):
        return inputs + self.shift


def test_foolbox_output_is_not_trusted(model, samples, monkeypatch):
    monkeypatch.setitem(REGISTRY, ("L2", "fake"), MinimizationAttack("fake", "L2", _FakeAttack))
    r = _run(model, samples, _cfg("fake", "L2", {"shift": [0.0]}))
    assert not r.success.any() and np.isinf(r.distances).all()  # unchanged images are not adversarial
    r = _run(model, samples, _cfg("fake", "L2", {"shift": [5.0]}))
    # clipped to [0, 1] before judging: all-white images; the distance is that of the clipped image
    assert r.success.any() and not r.success.all()  # a white image is some digit: a few are "fooled"
    _reverify(model, samples, r)
    assert np.all(r.adversarials[r.success] == 1.0)
    clean = samples[0][r.indices][r.success].astype(np.float64)
    np.testing.assert_allclose(r.distances[r.success], np.sqrt(((1 - clean) ** 2).sum(axis=(1, 2, 3))))


def test_brendel_bethge_starts_from_a_working_init_and_refines_it(model, samples, ddn):
    compile_s = A.warm_up(("L2",))
    assert A.warm_up(("L2",)) == compile_s  # compiled once per process, then cached
    bb_ddn = _run(model, samples, _cfg("bb", "L2", {"steps": [20], "lr": [1e-2]}, init=["ddn"], init_steps=40))
    # Brendel-Bethge only accepts points closer than its start: never worse than DDN(40) alone
    single = _run(model, samples, _cfg("ddn", "L2", {"steps": [40]}))
    assert bb_ddn.success.all()
    assert np.all(bb_ddn.distances <= single.distances * (1 + 1e-5))
    # from blended uniform noise (far away): still flips every sample, and lands near DDN's sizes
    bb_blend = _run(model, samples, _cfg("bb", "L2", {"steps": [50], "lr": [1e-2]}, init=["blended"], init_steps=50))
    assert bb_blend.success.all()
    assert np.median(bb_blend.distances) < 2 * np.median(ddn.distances)
    _reverify(model, samples, bb_blend)
    # the start is computed once per batch and shared by the settings of the sweep (counted once)
    two = _run(model, samples, _cfg("bb", "L2", {"steps": [5, 5]}, init=["ddn"], init_steps=40))
    assert two.settings[0]["grad_queries"] == pytest.approx(two.settings[1]["grad_queries"] + 40)
    assert np.all(two.distances <= single.distances * (1 + 1e-5))


def test_config_validation_and_sample_selection(data):
    _, _, x, y = data
    with pytest.raises(RobustnessInputError, match="stepsize.*not a hyper-parameter.*DDNAttack"):
        A.resolve_attack_config(_cfg("ddn", "L2", {"stepsize": [1]}))
    with pytest.raises(RobustnessInputError, match="not available for norm Linf"):
        A.resolve_attack_config(_cfg("ddn", "Linf", {}))
    with pytest.raises(RobustnessInputError, match="search"):
        A.resolve_attack_config(_cfg("ddn", "L2", {}, search={"steps": 3}))
    with pytest.raises(RobustnessInputError, match="n_samples"):
        select_samples(len(x), len(x) + 1, seed=0)
    def no_none(v):
        return v is not None and all(map(no_none, v.values() if isinstance(v, dict) else
                                         v if isinstance(v, list) else []))

    for preset in A.ATTACK_PRESETS:
        for cfg in A.preset_configs(preset).values():
            parsed = A.resolve_attack_config(cfg)
            # a resolved config is stored in the database and resolved again by the worker
            assert A.resolve_attack_config(parsed) == parsed and no_none(parsed)
    assert set(A.ATTACK_PRESETS["paper"]["Linf-pgd"]["sweep"]["steps"]) == {10, 30, 50, 100, 200}
    assert A.ATTACK_PRESETS["paper"]["Linf-pgd"]["n_samples"] == 1000
    a, b = select_samples(100, 10, seed=3), select_samples(100, 30, seed=3)
    assert np.array_equal(a, select_samples(100, 10, seed=3)) and np.all(np.diff(a) > 0)
    assert set(a) <= set(b) and not np.array_equal(a, select_samples(100, 10, seed=4))


# ------------------------------------------------------------------------------------- scores
class _R:
    def __init__(self, indices, distances, norm="L2"):
        self.indices, self.distances, self.norm = np.asarray(indices), np.asarray(distances, float), norm


def test_scores():
    d = np.array([[0.0, 0.3, np.inf, 0.6], [0.0, 0.2, 0.9, 0.7]])
    np.testing.assert_array_equal(combine_minimal(d), [0.0, 0.2, 0.9, 0.6])
    assert median_perturbation([0.0, 0.2, 0.9, 0.6]) == pytest.approx(0.4)
    assert median_perturbation([np.inf, np.inf, 1.0]) == np.inf
    # 0-distance (misclassified) samples are never robust; d == eps is not robust
    assert robust_accuracy([0.0, 0.5, 0.50001, np.inf], 0.5) == 0.5
    assert robust_accuracy([0.0, 0.0], 0.0) == 0.0
    assert robustbench_accuracy([8 / 255, 9 / 255], "Linf") == 0.5 and ROBUSTBENCH_EPSILONS["L2"] == 0.5
    # join aligns by sample index whatever the order
    idx, rows = join_results([_R([3, 1, 2], [0.3, 0.1, 0.2]), _R([1, 2, 3], [1.1, 1.2, 1.3])])
    np.testing.assert_array_equal(idx, [1, 2, 3])
    np.testing.assert_array_equal(rows, [[0.1, 0.2, 0.3], [1.1, 1.2, 1.3]])
    with pytest.raises(RobustnessInputError, match="other samples"):
        join_results([_R([1, 2], [0.1, 0.2]), _R([1, 3], [0.1, 0.2])])
    with pytest.raises(RobustnessInputError, match="mix norms"):
        join_results([_R([1], [0.1]), _R([1], [0.1], "Linf")])
    with pytest.raises(RobustnessInputError, match="NaN"):
        combine_minimal([[np.nan, 1.0]])


# ------------------------------------------------------------------- the bracketed search (issue 14)
def test_search_starts_below_its_bound_and_never_reports_worse(model, samples):
    """APGD's search starts each bracket at its FMN / DDN bound: never worse than the bound alone, far fewer
    rounds than the plain bisection, and every adversarial re-verified."""
    A.warm_up(("L2",))
    for norm, bound in (("Linf", "fmn"), ("L2", "ddn")):
        alone = _run(model, samples, _cfg(bound, norm, {"steps": [50]}))
        search = {"bound": [{"attack": bound, "steps": 50}], "steps": 4}
        r = _run(model, samples, _cfg("apgd", norm, {"steps": [10], "loss": ["ce", "dlr"]}, search=search))
        _reverify(model, samples, r)
        assert r.success.all() and np.all(r.distances <= alone.distances * (1 + 1e-6))
        assert all(s["search_rounds"] <= 4 for s in r.settings)
        # the bound is computed once, in the first setting; the second starts from the first's best
        assert r.settings[0]["grad_queries"] > r.settings[1]["grad_queries"] + 40
        if norm == "L2":  # Brendel-Bethge polishing the best point of the sweep: never worse
            p = _run(model, samples, _cfg("apgd", norm, {"steps": [10], "loss": ["ce", "dlr"]},
                                          search={**search, "polish": {"steps": 20, "lr": 1e-2}}))
            _reverify(model, samples, p)
            assert np.all(p.distances <= r.distances * (1 + 1e-6)) and np.median(p.distances) < np.median(r.distances)


def test_gradient_free_attacks_run_and_are_verified(model, samples):
    sq = _run(model, samples, _cfg("square", "Linf", {"steps": [50]},
                                   search={"bound": [{"attack": "fmn", "steps": 20}], "steps": 2}))
    _reverify(model, samples, sq)
    assert sq.success.all()
    x, y = samples
    hsj = A.minimal_perturbations(model, x[:4], y[:4], _cfg("hsj", "L2", {"steps": [4],
                                  "max_gradient_eval_steps": [100]}), keep_adversarials=True, progress=False)
    assert hsj.success.all() and np.isfinite(hsj.distances).all()
