"""APGD, Square, the bracketed epsilon search and the ray search: checked where the answer is known exactly.

On a linear model f(x) = W x + b the minimal perturbation that makes class j beat the true class y is
g_j / ||w_j - w_y||_dual (g_j = (w_y - w_j) . x + b_y - b_j; dual norm L1 for Linf, L2 for L2), as long as the
[0, 1] box does not bind, which the fixture ensures (pixels in [0.3, 0.7], minima well below 0.3 per pixel).
"""

import json

import numpy as np
import pytest
import torch

import pipeline.robustness.attacks as A
from pipeline.robustness.attacks.apgd import APGD, rank_targets
from pipeline.robustness.attacks.check import independent_check
from pipeline.robustness.attacks.counting import QueryCounter
from pipeline.robustness.attacks.fixed import lp_norms, project
from pipeline.robustness.attacks.pgd import LinfPGDPerSample
from pipeline.robustness.attacks.search import ray_refine
from pipeline.robustness.attacks.square import SquareLinf
from pipeline.robustness.attacks.verify import logit_slack
from pipeline.robustness.errors import RobustnessConfigError, RobustnessInputError
from pipeline.robustness.scores import join_results, masking_check, minimal_over_attacks

torch.set_num_threads(1)
N, SIDE, C = 24, 8, 10


@pytest.fixture(scope="module")
def linear():
    """(model, x (N, 1, 8, 8), y (N,), W (C, 64), b (C,)) with every sample classified as its label."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(SIDE * SIDE, C))
    with torch.no_grad():
        net[1].weight.normal_(0, 1.0)
        net[1].bias.normal_(0, 0.5)
    net.eval().requires_grad_(False)
    x = np.random.default_rng(0).uniform(0.3, 0.7, size=(N, 1, SIDE, SIDE)).astype(np.float32)
    with torch.no_grad():
        y = net(torch.from_numpy(x)).argmax(1).numpy()
    return net, x, y, net[1].weight.double().numpy(), net[1].bias.double().numpy()


def exact_minimum(linear, norm):
    _, x, y, W, b = linear
    out = np.empty(len(x))
    for i in range(len(x)):
        xi = x[i].reshape(-1).astype(np.float64)
        wd = W - W[y[i]]
        g = -(wd @ xi) + b[y[i]] - b
        dual = np.abs(wd).sum(axis=1) if norm == "Linf" else np.linalg.norm(wd, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            d = np.where(np.arange(C) == y[i], np.inf, g / dual)
        out[i] = d.min()
    return out


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_minimum_of_a_linear_model_is_within_one_percent(linear, norm):
    model, x, y, _, _ = linear
    exact = exact_minimum(linear, norm)
    assert (exact < 0.3 if norm == "Linf" else exact < 3).all()  # the box does not bind (see the module)
    cfg = {"attack": "apgd", "norm": norm, "sweep": {"steps": [20], "loss": ["dlr"], "targets": [1]},
           "batch_size": N}
    r = A.minimal_perturbations(model, x, y, cfg, progress=False, keep_adversarials=True)
    rel = r.distances / exact - 1
    # verified adversarials cannot beat the exact minimum; measured: median 0.08% (Linf) / 0.04% (L2), max 0.4%
    assert rel.min() > -1e-6, rel.min()
    assert rel.max() < 0.01, (np.median(rel), rel.max())
    with torch.no_grad():
        assert (model(torch.from_numpy(r.adversarials)).argmax(1).numpy() != y).all()
    # the brackets start below the bound: about one or two rounds of 21 gradients each, not 7 to 11
    assert r.settings[0]["search_rounds"] < 3
    assert r.settings[0]["grad_queries"] < 200


def test_untargeted_loss_misses_the_nearest_class_that_targets_find(linear):
    model, x, y, _, _ = linear
    exact = exact_minimum(linear, "Linf")
    cfg = {"attack": "apgd", "norm": "Linf", "sweep": {"steps": [20], "loss": ["dlr"]}, "batch_size": N}
    untargeted = A.minimal_perturbations(model, x, y, cfg, progress=False)
    assert (untargeted.distances / exact - 1).max() > 0.02  # stuck at another class's boundary on some samples
    tgt = rank_targets(model, torch.from_numpy(x), torch.from_numpy(y), "Linf", 1)[:, 0].numpy()
    W, b = linear[3], linear[4]
    for i in range(N):  # the linearised ranking is exact for a linear model
        wd = W - W[y[i]]
        g = -(wd @ x[i].reshape(-1)) + b[y[i]] - b
        with np.errstate(divide="ignore", invalid="ignore"):
            d = np.where(np.arange(C) == y[i], np.inf, g / np.abs(wd).sum(axis=1))
        assert tgt[i] == np.argmin(d)


def test_final_ensemble_reopens_a_bracket_that_one_attack_closed_too_high(linear):
    model, x, y, _, _ = linear
    exact = exact_minimum(linear, "Linf")
    cfg = {"attack": "apgd", "norm": "Linf", "sweep": {"steps": [20], "loss": ["dlr"]}, "batch_size": N}
    weak = A.minimal_perturbations(model, x, y, cfg, progress=False)
    rel_weak = weak.distances / exact - 1
    assert rel_weak.max() > 0.05  # untargeted DLR closed a bracket at another class's boundary (measured 15 %)
    final = {**cfg, "search": {"final": {"steps": 20, "targets": 3, "rounds": 3}}}
    strong = A.minimal_perturbations(model, x, y, final, progress=False)
    rel = strong.distances / exact - 1
    assert rel.min() > -1e-6 and rel.max() < 0.01, (np.median(rel), rel.max())  # measured max 0.2 %
    assert (strong.distances <= weak.distances * (1 + 1e-9)).all()  # same seed: the ensemble only lowers
    # it is not free: measured 146 -> 330 gradients per sample (a sample stops at its first success)
    assert strong.settings[0]["grad_queries"] > weak.settings[0]["grad_queries"] + 20 * 5 * 0.9


def test_final_ensemble_targets_logit_runners_up_then_the_nearest_other_boundaries(linear):
    model, x, y, _, _ = linear
    x0, y0 = torch.from_numpy(x), torch.from_numpy(y)
    from pipeline.robustness.attacks.search import final_attacks

    ens = final_attacks({"steps": 5, "targets": 3, "rounds": 1}, model, x0, y0, "Linf")
    assert [(a.loss, a.targets) for a, _ in ens] == [("ce", 0), ("dlr", 0), ("dlr", 3), ("dlr", 3)]
    by_logit, by_distance = ens[2][1], ens[3][1]
    with torch.no_grad():
        logits = model(x0)
    nearest = rank_targets(model, x0, y0, "Linf", C - 1)
    for i in range(N):
        runners_up = [int(c) for c in logits[i].argsort(descending=True) if c != y[i]][:3]
        assert by_logit[i].tolist() == runners_up
        assert by_distance[i].tolist() == [int(c) for c in nearest[i] if int(c) not in runners_up][:3]


def test_final_ensemble_config_is_checked():
    with pytest.raises(RobustnessConfigError, match="final.*unknown key"):
        A.resolve_attack_config({"attack": "apgd", "norm": "Linf", "search": {"final": {"step": 50}}})
    with pytest.raises(RobustnessConfigError, match="targets.*>= 0"):
        A.resolve_attack_config({"attack": "apgd", "norm": "Linf", "search": {"final": {"targets": -1}}})
    r = A.resolve_attack_config({"attack": "apgd", "norm": "L2", "search": {"final": {"steps": 50}}})
    assert r["search"]["final"] == {"steps": 50, "targets": 3, "rounds": 3}
    assert A.resolve_attack_config(r) == r


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_apgd_and_square_respect_the_radius_and_find_what_exists(linear, norm):
    model, x, y, _, _ = linear
    exact = torch.from_numpy(exact_minimum(linear, norm))
    x0, y0 = torch.from_numpy(x), torch.from_numpy(y)
    counter = QueryCounter(model)
    attacks = [APGD(steps=30, loss="dlr", targets=0)] + ([SquareLinf(steps=300)] if norm == "Linf" else [])
    for attack in attacks:
        above = attack.run_fixed(counter, x0, y0, exact * 1.1, norm, 1e-4)
        below = attack.run_fixed(counter, x0, y0, exact * 0.97, norm, 1e-4)
        for run, eps in ((above, exact * 1.1), (below, exact * 0.97)):
            strong = lp_norms(run.strong.double() - x0.double(), norm)
            assert (strong <= eps * (1 + 1e-5) + 1e-7).all()  # inside the ball
            assert run.strong.min() >= 0 and run.strong.max() <= 1
        assert not (below.slack < 0).any()  # nothing exists below the exact minimum
        assert torch.isnan(below.adv).all()
        found = (above.slack < 0).float().mean()
        assert found >= (0.7 if isinstance(attack, APGD) else 0.5), (type(attack).__name__, found)
        ok = above.slack < 0
        with torch.no_grad():
            assert (model(above.adv[ok]).argmax(1) != y0[ok]).all()


def test_ray_search_lands_on_the_boundary(linear):
    model, x, y, _, _ = linear
    x0, y0 = torch.from_numpy(x), torch.from_numpy(y)
    run = APGD(steps=10, loss="ce").run_fixed(model, x0, y0, torch.full((N,), 0.3, dtype=torch.float64), "Linf", 1e-4)
    assert (run.slack < 0).all()
    refined = ray_refine(model, x0, y0, run.strong, 1e-4, n_evals=8)
    with torch.no_grad():
        s = logit_slack(model(refined), y0, 1e-4)
        # a step of 0.1% further in would not be adversarial: the boundary is found to 1e-3 of the ray
        inner = x0 + 0.999 * (refined - x0)
        s_in = logit_slack(model(inner), y0, 1e-4)
    assert (s < 0).all() and (s_in > -1e-3).all()
    assert (lp_norms(refined - x0, "Linf") < lp_norms(run.strong - x0, "Linf")).all()


def test_pgd_keeps_an_adversarial_reached_mid_run():
    """A model that is fooled only on its third evaluation: the iterate is kept, though the last is not."""

    class Flicker(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 3)
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            out = self.lin(x.reshape(len(x), -1)) * 0 + torch.tensor([1.0, 0.0, 0.0])
            if self.calls == 3:
                out = out + torch.tensor([0.0, 2.0, 0.0])  # class 1 wins, this once
            return out + 0 * x.sum()

    import foolbox as fb

    net = Flicker().eval()
    fmodel = fb.PyTorchModel(net, bounds=(0, 1))
    x0 = torch.full((1, 1, 2, 2), 0.5)
    y0 = torch.tensor([0])
    run = LinfPGDPerSample(steps=5, rel_stepsize=0.5).run_fixed(fmodel, x0, y0, torch.tensor([0.1]), "Linf", 1e-4)
    assert torch.isfinite(run.adv).all() and run.slack.item() < 0  # Foolbox's own run would return the last


def test_configs_reject_settings_that_cannot_cross_the_ball_and_resolve_stably():
    with pytest.raises(RobustnessConfigError, match="cannot cross the epsilon ball"):
        A.resolve_attack_config({"attack": "pgd", "norm": "Linf", "sweep": {"steps": [10], "rel_stepsize": [0.1]}})
    with pytest.raises(RobustnessConfigError, match="loss"):
        A.resolve_attack_config({"attack": "apgd", "norm": "Linf", "sweep": {"loss": ["cw"]}})
    with pytest.raises(RobustnessConfigError, match="bound.*fmn"):
        A.resolve_attack_config({"attack": "apgd", "norm": "Linf", "search": {"bound": [{"attack": "ddn"}]}})
    with pytest.raises(RobustnessConfigError, match="rtol"):
        A.resolve_attack_config({"attack": "apgd", "norm": "L2", "search": {"rtol": 2.0}})
    with pytest.raises(RobustnessConfigError, match="polish.*unknown key"):
        A.resolve_attack_config({"attack": "apgd", "norm": "L2", "search": {"polish": {"step": 3}}})
    r = A.resolve_attack_config({"attack": "apgd", "norm": "L2", "search": {"polish": {"steps": 20}}})
    assert r["search"]["bound"] == [{"attack": "ddn", "steps": 100}] and r["search"]["polish"]["lr"] == 0.01
    assert A.resolve_attack_config(r) == r and json.loads(json.dumps(r)) == r
    # a stored Foolbox-PGD configuration resolves to itself: no new key appears, so its hash is kept
    old = {"attack": "pgd", "norm": "Linf", "sweep": {"steps": [10, 30], "rel_stepsize": [0.3]}, "repeats": 1,
           "n_samples": 20, "batch_size": 20, "seed": 0, "margin": 0.0001,
           "search": {"eps_min": 0.001, "steps": 6, "eps_max": 1.0}}
    assert A.resolve_attack_config(old) == old
    for cfg in A.preset_configs("paper").values():  # every PGD setting of the rebuilt paper preset crosses
        if cfg["attack"] == "pgd":
            assert min(cfg["sweep"]["steps"]) * min(cfg["sweep"]["rel_stepsize"]) >= 2


def test_torchscript_model_can_be_attacked(linear):
    model, x, y, _, _ = linear
    scripted = torch.jit.script(model)
    cfg = {"attack": "apgd", "norm": "Linf", "sweep": {"steps": [5]}, "batch_size": N,
           "search": {"steps": 2}}
    r = A.minimal_perturbations(scripted, x[:4], y[:4], cfg, progress=False)
    assert r.success.all()


def test_independent_check_and_masking_check(linear):
    model, x, y, _, _ = linear
    exact = exact_minimum(linear, "Linf")
    loose = exact * np.where(np.arange(N) < 6, 1.2, 1.0)  # six samples reported 20% too large
    r = independent_check(model, x, y, loose, "Linf", restarts=1, steps=20, square_steps=0)
    assert r.beaten[:6].all() and not r.beaten[6:].any()

    class R:
        def __init__(self, idx, d):
            self.indices, self.distances, self.norm = np.asarray(idx), np.asarray(d, float), "Linf"

    grad = R(np.arange(N), loose)
    free = R(np.arange(12), exact[:12] * 1.0001)  # a subset (a smaller n_samples, same seed)
    m = masking_check([grad], [free])
    assert m["n"] == 12 and m["beaten"] == pytest.approx(0.5)
    idx, best = minimal_over_attacks([grad, free])  # the subset takes part on its samples only
    np.testing.assert_allclose(best, np.minimum(loose, np.r_[exact[:12] * 1.0001, np.full(N - 12, np.inf)]))
    with pytest.raises(RobustnessInputError, match="other samples"):
        join_results([grad, free])  # without subsets=True the sets must match
    with pytest.raises(RobustnessInputError, match="not among them"):
        minimal_over_attacks([free, R(np.arange(30, 31), [1.0])])


def test_projection_is_per_sample():
    x0 = torch.full((2, 1, 2, 2), 0.5)
    x = torch.ones((2, 1, 2, 2))
    eps = torch.tensor([0.1, 0.2], dtype=torch.float64)
    p = project(x, x0, eps, "Linf")
    assert torch.allclose(p[0], torch.full_like(p[0], 0.6)) and torch.allclose(p[1], torch.full_like(p[1], 0.7))
    p = project(x, x0, eps, "L2")
    assert torch.allclose(lp_norms(p - x0, "L2"), eps.float())


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_art_check_beats_exactly_the_overstated_minima(linear, norm):
    """ART's APGD (a library the project did not write) finds the six minima overstated by 20 % and none of the
    exact ones: at 0.995 x the exact minimum no adversarial exists."""
    from pipeline.robustness.attacks.art_check import art_check

    model, x, y, _, _ = linear
    exact = exact_minimum(linear, norm)
    loose = exact * np.where(np.arange(N) < 6, 1.2, 1.0)
    r = art_check(model, x, y, loose, norm, steps=20, targets=2)
    assert r.beaten[:6].all() and not r.beaten[6:].any(), r.beaten
    assert (r.distances[:6] < loose[:6]).all() and (r.distances[:6] >= exact[:6] * (1 - 1e-6)).all()
    assert sum(r.by_attack.values()) == 6
