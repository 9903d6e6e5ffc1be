"""Minimal adversarial perturbations with Foolbox 3.3.4 (Schott et al. 2018 protocol, as in Li et al. 2019).

For each sample, the smallest perturbation (in one norm) that flips the model's label, minimised over the
runs of one attack and its hyper-parameter sweep. Every candidate adversarial is re-checked here, not
trusted from Foolbox: clipped to [0, 1], classified by the model (prediction != label), and its distance
computed here in float64. A sample the model already misclassifies has distance 0; a sample no run could
flip has distance +inf.

Images are grayscale float32 (N, 1, H, W) in [0, 1]; the model maps them to logits (N, n_classes).

Configuration (``attack_config``, a plain dict so a DataJoint paramset can hold it):
    attack      'bb' | 'ddn' | 'fmn' | 'cw' | 'ead' | 'pgd' | 'adam_pgd' (``available_attacks()`` lists
                which exist for which norm)
    norm        'L2' | 'Linf' | 'L1' | 'L0'
    sweep       {constructor argument of the Foolbox attack: list of values}; every combination is one
                setting (e.g. {'steps': [10, 30], 'rel_stepsize': [0.1, 0.3]} gives 4 settings)
    repeats     random restarts of each setting (different seeds), default 1
    n_samples   how many test samples (a seeded subset; None = all), default 1000
    batch_size  samples attacked at once, default 250
    seed        picks the samples and seeds the attacks' randomness, default 0
    search      (pgd, adam_pgd) the per-sample binary search over epsilon:
                {'eps_min': 1e-4, 'steps': 10, optional 'eps_max'} (geometric bisection in [eps_min, eps_max];
                no eps_max = the diameter of the [0, 1] box in the norm: 1 for Linf, sqrt(pixels) for L2,
                so the first PGD run is unbounded; Foolbox's PGD is a fixed-epsilon attack, this search
                makes it a minimisation)
    init        (bb) attacks that provide the adversarial starting points Brendel-Bethge needs, tried in
                order on the samples still without one: list of 'ddn' | 'blended'
                (LinearSearchBlendedUniformNoise) | 'fmn' (L2 FMN); default ['ddn', 'blended']. From a DDN
                start BB refines a near-minimal adversarial; from a blended-noise start it often stops in a
                worse local optimum (small CNN on digits, 20 samples: median L2 0.82 vs 0.67, 1000 steps)
    init_steps  (bb) steps of those init attacks, default 100
    margin      how clearly a candidate must be misclassified to count: best other logit - true logit >
                margin * max(1, max |logit|), default 1e-4 (see ``_verify``: boundary points otherwise flip
                with the batch they are evaluated in)

Query counting (Fig 5): the model is wrapped in a counter of forward passes, so the reported queries are
measured, not estimated: one query = one model evaluation of one sample (a forward pass, with its
backward pass when the attack took a gradient; ``grad_queries`` counts those). The curve holds, after each
setting, the cumulative queries per attacked sample and the median over samples of the best distance so far.
"""

from __future__ import annotations

import copy
import inspect
import itertools
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import eagerpy as ep
import foolbox as fb
import foolbox.attacks as fa
import numpy as np
import torch

from .noise import RobustnessInputError, check_images, predict_labels, resolve_device

__all__ = [
    "NORMS",
    "ATTACK_PRESETS",
    "AttackResult",
    "available_attacks",
    "preset_configs",
    "parse_attack_config",
    "select_samples",
    "perturbation_norm",
    "warm_up",
    "minimal_perturbations",
]

NORMS: tuple[str, ...] = ("L2", "Linf", "L1", "L0")
L0_TOLERANCE = 1e-4  # |change| at or below this is snapped to 0 for L0 (Foolbox's L0 Brendel-Bethge uses 1e-4)


# ----------------------------------------------------------------------------------------------------
# PGD with one epsilon per sample
# ----------------------------------------------------------------------------------------------------
class _PerSampleEpsilon:
    """Mixin for Foolbox's PGD: accept ``epsilon`` as a (N, 1, 1, 1) tensor, one radius per sample.

    Foolbox's PGD is a fixed-epsilon attack with one scalar epsilon per call; the per-sample binary search
    over epsilon needs one per sample. Epsilon enters PGD in three places: the step size
    (rel_stepsize * epsilon, which already broadcasts), the random start and the projection. Only the last
    two are overridden, by the same formulas written to broadcast over samples.
    """


class _LinfPGDPerSample(_PerSampleEpsilon, fa.LinfProjectedGradientDescentAttack):
    def get_random_start(self, x0: ep.Tensor, epsilon: Any) -> ep.Tensor:
        return x0 + epsilon * ep.uniform(x0, x0.shape, -1.0, 1.0)

    def project(self, x: ep.Tensor, x0: ep.Tensor, epsilon: Any) -> ep.Tensor:
        return x0 + ep.minimum(ep.maximum(x - x0, -epsilon), epsilon)


class _LinfAdamPGDPerSample(_PerSampleEpsilon, fa.LinfAdamProjectedGradientDescentAttack):
    get_random_start = _LinfPGDPerSample.get_random_start
    project = _LinfPGDPerSample.project


def _l2_project(self: Any, x: ep.Tensor, x0: ep.Tensor, epsilon: Any) -> ep.Tensor:
    d = x - x0
    norms = ep.maximum(d.reshape((d.shape[0], -1)).norms.l2(axis=-1), 1e-12)
    factor = ep.minimum(1.0, epsilon.reshape((-1,)) / norms).reshape((-1,) + (1,) * (d.ndim - 1))
    return x0 + d * factor


class _L2PGDPerSample(_PerSampleEpsilon, fa.L2ProjectedGradientDescentAttack):
    project = _l2_project  # the random start (x0 + epsilon * r) already broadcasts


class _L2AdamPGDPerSample(_PerSampleEpsilon, fa.L2AdamProjectedGradientDescentAttack):
    project = _l2_project



# ----------------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Spec:
    cls: type  # the Foolbox attack class (its __init__ arguments are the sweepable hyper-parameters)
    kind: str  # 'minimization' | 'pgd_search' | 'brendel_bethge'


_REGISTRY: dict[tuple[str, str], _Spec] = {
    ("L2", "bb"): _Spec(fa.L2BrendelBethgeAttack, "brendel_bethge"),
    ("L2", "ddn"): _Spec(fa.DDNAttack, "minimization"),
    ("L2", "fmn"): _Spec(fa.L2FMNAttack, "minimization"),
    ("L2", "cw"): _Spec(fa.L2CarliniWagnerAttack, "minimization"),
    ("L2", "pgd"): _Spec(_L2PGDPerSample, "pgd_search"),
    ("L2", "adam_pgd"): _Spec(_L2AdamPGDPerSample, "pgd_search"),
    ("Linf", "pgd"): _Spec(_LinfPGDPerSample, "pgd_search"),
    ("Linf", "adam_pgd"): _Spec(_LinfAdamPGDPerSample, "pgd_search"),
    ("Linf", "fmn"): _Spec(fa.LInfFMNAttack, "minimization"),
    ("Linf", "bb"): _Spec(fa.LinfinityBrendelBethgeAttack, "brendel_bethge"),
    ("L1", "fmn"): _Spec(fa.L1FMNAttack, "minimization"),
    ("L1", "bb"): _Spec(fa.L1BrendelBethgeAttack, "brendel_bethge"),
    ("L1", "ead"): _Spec(fa.EADAttack, "minimization"),
    ("L0", "fmn"): _Spec(fa.L0FMNAttack, "minimization"),
    ("L0", "bb"): _Spec(fa.L0BrendelBethgeAttack, "brendel_bethge"),
}
_BB_CLASSES = {n: s.cls for (n, a), s in _REGISTRY.items() if a == "bb"}
# arguments that are not hyper-parameters (set by this module) and may not be swept
_RESERVED = {"init_attack", "tensorboard", "distance", "random_start"}
_INIT_ATTACKS: dict[str, Callable[[int], Any]] = {
    "blended": lambda steps: fa.LinearSearchBlendedUniformNoiseAttack(directions=1000, steps=steps),
    "ddn": lambda steps: fa.DDNAttack(steps=steps),
    "fmn": lambda steps: fa.L2FMNAttack(steps=steps),
}


def available_attacks() -> dict[str, list[str]]:
    """{norm: [attack names]} that ``minimal_perturbations`` accepts."""
    out: dict[str, list[str]] = {n: [] for n in NORMS}
    for norm, name in _REGISTRY:
        out[norm].append(name)
    return out


def _hyper_parameters(cls: type) -> list[str]:
    params = inspect.signature(cls.__init__).parameters
    return [p for p in params if p not in ("self", "args", "kwargs") and p not in _RESERVED]


# ----------------------------------------------------------------------------------------------------
# Presets
# ----------------------------------------------------------------------------------------------------
def _cfg(attack: str, norm: str, sweep: dict, n: int, batch: int, **extra: Any) -> dict:
    return {"attack": attack, "norm": norm, "sweep": sweep, "repeats": extra.pop("repeats", 1),
            "n_samples": n, "batch_size": batch, "seed": 0, **extra}


ATTACK_PRESETS: dict[str, dict[str, dict]] = {
    # The paper's protocol: 1000 test samples; Linf PGD over iteration counts {10, 30, 50, 100, 200} and
    # several step sizes (relative to epsilon), each made minimal by a 10-step per-sample binary search
    # over epsilon; L2 Brendel-Bethge (started from DDN); the supplementary's other attacks and norms.
    # Brendel-Bethge's lr is per sample (see _run_setting); DDN init is deterministic, so no repeats.
    "paper": {
        "Linf-pgd": _cfg("pgd", "Linf", {"steps": [10, 30, 50, 100, 200], "rel_stepsize": [0.025, 0.1, 0.3]},
                         1000, 250, search={"eps_min": 1e-4, "steps": 10}),
        "Linf-adam_pgd": _cfg("adam_pgd", "Linf", {"steps": [50, 200], "rel_stepsize": [0.025, 0.1]},
                              1000, 250, search={"eps_min": 1e-4, "steps": 10}),
        "Linf-fmn": _cfg("fmn", "Linf", {"steps": [100, 1000], "max_stepsize": [1.0, 0.1]}, 1000, 250),
        "Linf-bb": _cfg("bb", "Linf", {"steps": [1000], "lr": [1e-3, 1e-2]}, 1000, 250, init_steps=1000),
        "L2-bb": _cfg("bb", "L2", {"steps": [1000], "lr": [1e-3, 1e-2]}, 1000, 250, init_steps=1000),
        "L2-ddn": _cfg("ddn", "L2", {"steps": [100, 1000]}, 1000, 250),
        "L2-fmn": _cfg("fmn", "L2", {"steps": [100, 1000], "max_stepsize": [1.0, 0.1]}, 1000, 250),
        "L2-cw": _cfg("cw", "L2", {"steps": [1000], "binary_search_steps": [9], "stepsize": [1e-2]}, 1000, 250),
        "L1-fmn": _cfg("fmn", "L1", {"steps": [100, 1000]}, 1000, 250),
        "L1-bb": _cfg("bb", "L1", {"steps": [1000], "lr": [1e-3]}, 1000, 250, init_steps=1000),
        "L1-ead": _cfg("ead", "L1", {"steps": [1000], "binary_search_steps": [9]}, 1000, 250),
        "L0-fmn": _cfg("fmn", "L0", {"steps": [100, 1000]}, 1000, 250),
        "L0-bb": _cfg("bb", "L0", {"steps": [1000], "lr": [1e-3]}, 1000, 250, init_steps=1000),
    },
    # A laptop demo: 20 samples, a few steps; the attacks of the two headline norms.
    "cpu-demo": {
        "Linf-pgd": _cfg("pgd", "Linf", {"steps": [10, 30], "rel_stepsize": [0.1, 0.3]}, 20, 20,
                         search={"eps_min": 1e-3, "steps": 7}),
        "Linf-fmn": _cfg("fmn", "Linf", {"steps": [20, 50]}, 20, 20),
        "Linf-bb": _cfg("bb", "Linf", {"steps": [100], "lr": [1e-2]}, 20, 20, init_steps=50),
        "L2-bb": _cfg("bb", "L2", {"steps": [100], "lr": [1e-2]}, 20, 20, init_steps=50),
        "L2-ddn": _cfg("ddn", "L2", {"steps": [20, 50]}, 20, 20),
        "L2-fmn": _cfg("fmn", "L2", {"steps": [50], "max_stepsize": [1.0, 0.1]}, 20, 20),
        "L2-cw": _cfg("cw", "L2", {"steps": [50], "binary_search_steps": [4], "stepsize": [5e-2]}, 20, 20),
    },
}


def preset_configs(name: str) -> dict[str, dict]:
    """A deep copy of ``ATTACK_PRESETS[name]``: {'norm-attack': attack_config}."""
    if name not in ATTACK_PRESETS:
        raise RobustnessInputError(f"preset {name!r} is unknown; choose from {sorted(ATTACK_PRESETS)}")
    return copy.deepcopy(ATTACK_PRESETS[name])


# ----------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------
_TOP_KEYS = {"attack", "norm", "sweep", "repeats", "n_samples", "batch_size", "seed", "search", "init", "init_steps",
             "margin"}
_SEARCH_DEFAULTS = {"eps_min": 1e-4, "steps": 10}  # and optional eps_max


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise RobustnessInputError(f"attack_config['{name}']: expected a positive integer, got {value!r}")
    return int(value)


def parse_attack_config(attack_config: dict) -> dict:
    """Validate ``attack_config`` and fill defaults; returns a new dict (the input is not changed).

    Raises RobustnessInputError naming the bad field and the fix.
    """
    if not isinstance(attack_config, dict):
        raise RobustnessInputError(f"attack_config: expected a dict, got {type(attack_config).__name__}")
    unknown = set(attack_config) - _TOP_KEYS
    if unknown:
        raise RobustnessInputError(f"attack_config: unknown keys {sorted(unknown)}; allowed: {sorted(_TOP_KEYS)}")
    cfg = copy.deepcopy(attack_config)
    norm, name = cfg.get("norm"), cfg.get("attack")
    if norm not in NORMS:
        raise RobustnessInputError(f"attack_config['norm']: expected one of {list(NORMS)}, got {norm!r}")
    if (norm, name) not in _REGISTRY:
        raise RobustnessInputError(
            f"attack_config['attack']: {name!r} is not available for norm {norm}; choose from "
            f"{available_attacks()[norm]}"
        )
    spec = _REGISTRY[(norm, name)]
    allowed = _hyper_parameters(spec.cls)
    sweep = cfg.get("sweep") or {}
    if not isinstance(sweep, dict):
        raise RobustnessInputError("attack_config['sweep']: expected a dict {hyper-parameter: list of values}")
    norm_sweep: dict[str, list] = {}
    for key, values in sweep.items():
        if key not in allowed:
            raise RobustnessInputError(
                f"attack_config['sweep']: {key!r} is not a hyper-parameter of {spec.cls.__name__}; "
                f"choose from {allowed}"
            )
        values = list(values) if isinstance(values, (list, tuple, np.ndarray)) else [values]
        if not values:
            raise RobustnessInputError(f"attack_config['sweep']['{key}']: empty list of values")
        norm_sweep[key] = [v.item() if isinstance(v, np.generic) else v for v in values]
    cfg["sweep"] = norm_sweep
    cfg["repeats"] = _positive_int(cfg.get("repeats", 1), "repeats")
    cfg["batch_size"] = _positive_int(cfg.get("batch_size", 250), "batch_size")
    n = cfg.get("n_samples", 1000)
    cfg["n_samples"] = None if n is None else _positive_int(n, "n_samples")
    seed = cfg.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise RobustnessInputError(f"attack_config['seed']: expected a non-negative integer, got {seed!r}")
    cfg["seed"] = int(seed)
    margin = cfg.get("margin", 1e-4)
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 <= margin < 0.1:
        raise RobustnessInputError(
            f"attack_config['margin']: expected a small relative logit margin in [0, 0.1), got {margin!r}"
        )
    cfg["margin"] = float(margin)
    if spec.kind == "pgd_search":
        given = cfg.get("search") or {}
        if not isinstance(given, dict) or set(given) - {"eps_max", *_SEARCH_DEFAULTS}:
            raise RobustnessInputError(
                f"attack_config['search']: expected a dict with keys from {sorted({'eps_max', *_SEARCH_DEFAULTS})}"
            )
        # eps_max absent (or None) = the [0, 1] box's diameter; left out of the stored config rather than
        # stored as None, which a database blob may not round-trip
        search = {**_SEARCH_DEFAULTS, **{k: v for k, v in given.items() if v is not None}}
        if not (0 < search["eps_min"] < search.get("eps_max", np.inf)):
            raise RobustnessInputError("attack_config['search']: need 0 < eps_min < eps_max")
        search["steps"] = int(search["steps"])
        if search["steps"] < 0:
            raise RobustnessInputError("attack_config['search']['steps']: need >= 0")
        cfg["search"] = search
    elif "search" in cfg:
        raise RobustnessInputError(f"attack_config['search']: only for attacks 'pgd'/'adam_pgd', not {name!r}")
    if spec.kind == "brendel_bethge":
        init = cfg.get("init", ["ddn", "blended"])
        init = [init] if isinstance(init, str) else list(init)
        bad = [i for i in init if i not in _INIT_ATTACKS]
        if not init or bad:
            raise RobustnessInputError(
                f"attack_config['init']: expected a non-empty list from {sorted(_INIT_ATTACKS)}, got {init!r}"
            )
        cfg["init"] = init
        cfg["init_steps"] = _positive_int(cfg.get("init_steps", 100), "init_steps")
    else:
        for key in ("init", "init_steps"):
            if key in cfg:
                raise RobustnessInputError(f"attack_config['{key}']: only for Brendel-Bethge ('bb'), not {name!r}")
    return cfg


def _settings(cfg: dict) -> list[tuple[dict, int]]:
    """[(hyper-parameters, repeat)]: the Cartesian product of the sweep, each repeated."""
    keys = list(cfg["sweep"])
    combos = [dict(zip(keys, vals)) for vals in itertools.product(*(cfg["sweep"][k] for k in keys))]
    return [(c, r) for c in combos for r in range(cfg["repeats"])]


def select_samples(n_total: int, n_samples: int | None, seed: int) -> np.ndarray:
    """Sorted (n_samples,) int64 indices of a seeded random subset of range(n_total).

    The first n_samples of one seeded permutation, so a smaller subset is contained in a larger one.
    """
    if n_samples is None:
        return np.arange(n_total, dtype=np.int64)
    if n_samples > n_total:
        raise RobustnessInputError(
            f"attack_config['n_samples']: {n_samples} requested but the test set holds {n_total}; lower it"
        )
    perm = np.random.default_rng(seed).permutation(n_total)
    return np.sort(perm[:n_samples]).astype(np.int64)


# ----------------------------------------------------------------------------------------------------
# Distances and verification
# ----------------------------------------------------------------------------------------------------
def perturbation_norm(delta: np.ndarray, norm: str) -> np.ndarray:
    """Per-sample size of perturbations ``delta`` (N, ...) in ``norm``, in float64.

    L0 counts pixels with |delta| > L0_TOLERANCE; the others are the usual L2, Linf, L1 norms of the
    flattened perturbation in [0, 1] pixel units.
    """
    d = np.asarray(delta, dtype=np.float64).reshape(len(delta), -1)
    if norm == "L2":
        return np.sqrt(np.einsum("ij,ij->i", d, d))
    if norm == "Linf":
        return np.abs(d).max(axis=1)
    if norm == "L1":
        return np.abs(d).sum(axis=1)
    if norm == "L0":
        return (np.abs(d) > L0_TOLERANCE).sum(axis=1).astype(np.float64)
    raise RobustnessInputError(f"norm: expected one of {list(NORMS)}, got {norm!r}")


PUSH_FACTORS = (1e-4, 1e-3, 1e-2, 3e-2)  # outward scalings tried on borderline candidates, in order


def _margins(model: torch.nn.Module, adv: torch.Tensor, y: torch.Tensor, margin: float
             ) -> tuple[np.ndarray, np.ndarray]:
    """(other - true logit (B,), required margin (B,)) with required = margin * max(1, max |logit|)."""
    logits = model(adv).double()
    true = logits.gather(1, y[:, None])[:, 0]
    other = logits.scatter(1, y[:, None], -np.inf).max(dim=1).values
    need = margin * logits.abs().max(dim=1).values.clamp(min=1.0)
    return (other - true).cpu().numpy(), need.cpu().numpy()


@torch.no_grad()
def _verify(model: torch.nn.Module, x0: torch.Tensor, y: torch.Tensor, adv: torch.Tensor,
            norm: str, margin: float) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Re-check candidate adversarials: (checked candidates, distances (B,), is_adversarial (B,)).

    Clips to [0, 1] (for L0, also snaps changes <= L0_TOLERANCE back to the clean pixel, so the checked
    image is the one whose L0 is reported), classifies, and measures the distance here, in float64.

    A candidate counts only if the best other logit beats the true one by ``margin`` (relative to the
    logit scale). Attacks such as Brendel-Bethge and FMN stop right on the decision boundary, where the
    label of a float32 forward pass depends on the batch it is evaluated in (seen here: a point adversarial
    in its batch of 8 and not alone); the margin makes the verdict hold in any batch. A borderline
    candidate (|logit gap| below the margin) is pushed outwards, x0 + (1 + f) * (adv - x0) for f in
    PUSH_FACTORS, and the first push that clears the margin is kept, its own (larger) distance reported.
    """
    finite = torch.isfinite(adv.reshape(len(adv), -1)).all(dim=1).cpu().numpy()
    adv = torch.where(torch.isfinite(adv), adv, x0).clamp(0.0, 1.0)
    if norm == "L0":
        adv = torch.where((adv - x0).abs() <= L0_TOLERANCE, x0, adv)
    gap, need = _margins(model, adv, y, margin)
    ok = finite & (gap > need)
    borderline = np.flatnonzero(finite & ~ok & (gap > -need))
    for f in PUSH_FACTORS:
        if borderline.size == 0:
            break
        bt = torch.from_numpy(borderline).to(adv.device)
        pushed = (x0[bt] + (1.0 + f) * (adv[bt] - x0[bt])).clamp(0.0, 1.0)  # keeps the L0 support
        g, n = _margins(model, pushed, y[bt], margin)
        good = g > n
        gt = torch.from_numpy(good).to(adv.device)
        adv[bt[gt]] = pushed[gt]
        ok[borderline[good]] = True
        borderline = borderline[~good]
    dist = perturbation_norm((adv.double() - x0.double()).cpu().numpy(), norm)
    return adv, dist, ok


class _QueryCounter(torch.nn.Module):
    """Wraps a model and counts the samples it is evaluated on (with and without input gradients)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.queries = 0
        self.grad_queries = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.queries += x.shape[0]
        if x.requires_grad:
            self.grad_queries += x.shape[0]
        return self.model(x)


# ----------------------------------------------------------------------------------------------------
# Brendel-Bethge: numba compile once per process
# ----------------------------------------------------------------------------------------------------
_WARMED: dict[str, float] = {}


def warm_up(norms: Sequence[str] = ("L2",)) -> dict[str, float]:
    """Compile the numba optimiser of the Brendel-Bethge attack of each norm, once per process.

    The first use of each Brendel-Bethge class compiles its trust-region solver (15-30 s on CPU); this
    runs each on a tiny linear problem so that the cost is paid here, not inside a timed attack.
    Later calls return at once. Returns {norm: compile seconds} of the norms compiled in this process.
    """
    for norm in norms:
        if norm not in _BB_CLASSES:
            raise RobustnessInputError(f"norms: expected some of {list(_BB_CLASSES)}, got {norm!r}")
        if norm in _WARMED:
            continue
        t0 = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            tiny = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)).eval().requires_grad_(False)
            fmodel = fb.PyTorchModel(tiny, bounds=(0, 1))
            x = torch.rand(8, 1, 4, 4)
            y = tiny(x).argmax(dim=1)
            start = fa.LinearSearchBlendedUniformNoiseAttack(directions=100, steps=20).run(fmodel, x, y)
            ok = tiny(start).argmax(dim=1) != y
            if not bool(ok.any()):  # pragma: no cover - a random linear model is always fooled by noise
                raise RuntimeError("warm_up: no starting point found on the tiny problem")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _BB_CLASSES[norm](steps=3).run(fmodel, x[ok], y[ok], starting_points=start[ok])
        _WARMED[norm] = time.perf_counter() - t0
    return {n: _WARMED[n] for n in norms}


# ----------------------------------------------------------------------------------------------------
# Running one setting on one batch
# ----------------------------------------------------------------------------------------------------
def _pgd_search(attack: Any, fmodel: Any, counter: _QueryCounter, x0: torch.Tensor, y: torch.Tensor,
                norm: str, search: dict, margin: float) -> torch.Tensor:
    """Per-sample geometric bisection over epsilon; returns the best verified adversarial (NaN if none).

    First PGD at eps_max; samples it flips get the upper bound hi = the distance found, then each step
    runs PGD at sqrt(lo * hi): success lowers hi to the distance found, failure raises lo. The success
    checks go through ``counter`` (they are part of the attack's cost).
    """
    n = len(x0)
    best = torch.full_like(x0, float("nan"))
    hi = np.full(n, np.inf)
    lo = np.full(n, float(search["eps_min"]))
    diameter = {"Linf": 1.0, "L2": float(np.sqrt(x0[0].numel()))}[norm]  # of the [0, 1] box
    eps = np.full(n, float(search.get("eps_max", diameter)))
    active = np.ones(n, dtype=bool)
    for step in range(search["steps"] + 1):
        rows = np.flatnonzero(active)
        if rows.size == 0:
            break
        rt = torch.from_numpy(rows).to(x0.device)
        e = torch.tensor(eps[rows], dtype=x0.dtype, device=x0.device).reshape(-1, *([1] * (x0.ndim - 1)))
        adv = attack.run(fmodel, x0[rt], y[rt], epsilon=ep.astensor(e))
        adv, dist, ok = _verify(counter, x0[rt], y[rt], adv, norm, margin)
        better = ok & (dist < hi[rows])
        best[rt[torch.from_numpy(better).to(x0.device)]] = adv[torch.from_numpy(better).to(x0.device)]
        hi[rows[better]] = dist[better]
        lo[rows[~ok]] = np.maximum(lo[rows[~ok]], eps[rows[~ok]])
        if step == 0:
            active = np.isfinite(hi)  # never flipped at eps_max: give up on these samples
        active &= hi > lo * (1 + 1e-6)
        eps = np.sqrt(lo * np.where(np.isfinite(hi), hi, lo))
    return best


def _verified_starts(counter: _QueryCounter, x0: torch.Tensor, y: torch.Tensor, cfg: dict
                     ) -> tuple[torch.Tensor, np.ndarray]:
    """Adversarial starting points for Brendel-Bethge: (points (B, ...), found (B,) bool)."""
    start = x0.clone()
    found = np.zeros(len(x0), dtype=bool)
    fmodel = fb.PyTorchModel(counter, bounds=(0, 1), device=x0.device)
    for name in cfg["init"]:
        rows = np.flatnonzero(~found)
        if rows.size == 0:
            break
        rt = torch.from_numpy(rows).to(x0.device)
        cand = _INIT_ATTACKS[name](cfg["init_steps"]).run(fmodel, x0[rt], y[rt])
        cand, _, ok = _verify(counter, x0[rt], y[rt], cand, "L2", cfg["margin"])
        start[rt[torch.from_numpy(ok).to(x0.device)]] = cand[torch.from_numpy(ok).to(x0.device)]
        found[rows[ok]] = True
    return start, found


@torch.no_grad()
def _consistent_rows(model: torch.nn.Module, start: torch.Tensor, y: torch.Tensor, found: np.ndarray) -> np.ndarray:
    """Rows whose starting point is adversarial when evaluated as the exact batch Brendel-Bethge will see.

    Foolbox asserts that all starting points are adversarial; a point verified in another batch can, in
    rare float ties, flip back in this one, so the batch is re-checked until stable.
    """
    rows = np.flatnonzero(found)
    for _ in range(5):
        if rows.size == 0:
            return rows
        rt = torch.from_numpy(rows).to(start.device)
        ok = (model(start[rt]).argmax(dim=1) != y[rt]).cpu().numpy()
        if ok.all():
            return rows
        rows = rows[ok]
    return rows[:0]


def _run_setting(spec: _Spec, params: dict, cfg: dict, fmodel: Any, counter: _QueryCounter,
                 x0: torch.Tensor, y: torch.Tensor, start_cache: dict, cache_key: Any) -> torch.Tensor:
    """Candidate adversarials (B, ...) of one setting on one batch (NaN rows: no candidate)."""
    if spec.kind == "pgd_search":
        return _pgd_search(spec.cls(**params), fmodel, counter, x0, y, cfg["norm"], cfg["search"], cfg["margin"])
    if spec.kind == "minimization":
        return spec.cls(**params).run(fmodel, x0, y)
    # Brendel-Bethge: needs adversarial starting points; computed once per (batch, repeat) and reused by
    # every setting of the sweep (their queries are counted in the first setting that needed them)
    if cache_key not in start_cache:
        start_cache[cache_key] = _verified_starts(counter, x0, y, cfg)
    start, found = start_cache[cache_key]
    out = torch.full_like(x0, float("nan"))
    rows = _consistent_rows(counter, start, y, found)
    if rows.size:
        rt = torch.from_numpy(rows).to(x0.device)
        # Foolbox 3.3.4 sets the trust region to lr * (number of values in the whole batch), so the same lr
        # means a larger region for a larger batch; dividing by the batch size makes ``lr`` per sample
        # (region = lr * pixels per image, as in Brendel et al. 2019), whatever the batch size.
        bb_params = {**params, "lr": params.get("lr", 1e-3) / rows.size}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # foolbox's compile notice (compiled in warm_up already)
            out[rt] = spec.cls(**bb_params).run(fmodel, x0[rt], y[rt], starting_points=start[rt])
    return out


# ----------------------------------------------------------------------------------------------------
# Result
# ----------------------------------------------------------------------------------------------------
@dataclass
class AttackResult:
    """Minimal perturbations of one attack (over its sweep) on a set of test samples.

    Attributes:
        attack, norm: the attack name and the norm distances are measured in.
        indices: (n,) int64 positions of the samples in the ``x`` given to ``minimal_perturbations``.
        distances: (n,) float64 smallest verified perturbation per sample, in ``norm`` and [0, 1] pixel
            units (L0: number of pixels); 0 if the clean sample is misclassified, +inf if no run flipped it.
        success: (n,) bool, distances < inf.
        clean_correct: (n,) bool, the model classifies the clean sample correctly.
        queries_curve: [(cumulative queries per attacked sample, median distance over the n samples so far)],
            one entry per setting in sweep order (Fig 5).
        wall_time: seconds for the attack, excluding the one-off numba compile (see ``warm_up``).
        settings: one dict per setting: params, repeat, queries, grad_queries (per attacked sample),
            n_success, median_distance (this setting alone, over the attacked samples), wall_time.
        adversarials: (n, 1, H, W) float32 best verified adversarial per sample (the clean image where
            the distance is 0, NaN where none was found), or None.
        config: the validated attack configuration.
    """

    attack: str
    norm: str
    indices: np.ndarray
    distances: np.ndarray
    success: np.ndarray
    clean_correct: np.ndarray
    queries_curve: list[tuple[float, float]]
    wall_time: float
    settings: list[dict] = field(default_factory=list)
    adversarials: np.ndarray | None = None
    config: dict = field(default_factory=dict)

    @property
    def median(self) -> float:
        """Median distance over samples (the paper's score; higher is more robust)."""
        return float(np.median(self.distances))


# ----------------------------------------------------------------------------------------------------
# Main entry point
# ----------------------------------------------------------------------------------------------------
def minimal_perturbations(
    model: torch.nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    attack_config: dict,
    device: str | torch.device | None = None,
    progress: bool = True,
    keep_adversarials: bool = True,
) -> AttackResult:
    """Per-sample minimal adversarial perturbation of one attack over its hyper-parameter sweep.

    Args:
        model: torch classifier, (B, 1, H, W) float32 in [0, 1] -> logits. Put in eval mode; its
            parameters' requires_grad flags, and torch's TF32 switches, are off during the attack and
            restored afterwards (global state: do not attack from several threads at once).
        x: (N, 1, H, W) float test images in [0, 1].
        y: (N,) integer labels.
        attack_config: see the module docstring; ``ATTACK_PRESETS`` holds examples.
        device: where to attack (default: the model's device).
        progress: show a tqdm bar over settings.
        keep_adversarials: also return the best adversarial images.
    Returns:
        AttackResult over the seeded subset of ``cfg['n_samples']`` samples.
    """
    from tqdm.auto import tqdm

    cfg = parse_attack_config(attack_config)
    spec = _REGISTRY[(cfg["norm"], cfg["attack"])]
    x, y = check_images(x, y)
    idx = select_samples(len(x), cfg["n_samples"], cfg["seed"])
    dev = resolve_device(model, device)
    if spec.kind == "brendel_bethge":
        warm_up((cfg["norm"],))  # numba compile, once per process, outside the timing

    flags = [p.requires_grad for p in model.parameters()]
    was_training = model.training
    model.eval().requires_grad_(False)
    # full float32 on GPUs: TF32 convolutions (cuDNN's default) round inputs to ~1e-3 relative precision,
    # far coarser than the verification margin near the decision boundary; restored afterwards
    tf32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        t0 = time.perf_counter()
        xs = torch.from_numpy(x[idx]).to(dev)
        ys = torch.from_numpy(y[idx]).to(dev)
        correct = predict_labels(model, x[idx], batch_size=cfg["batch_size"], device=dev) == y[idx]
        best = np.where(correct, np.inf, 0.0)
        best_adv = xs.clone()
        best_adv[torch.from_numpy(correct).to(dev)] = float("nan")
        attacked = np.flatnonzero(correct)
        n_att = max(len(attacked), 1)
        counter = _QueryCounter(model).eval()
        fmodel = fb.PyTorchModel(counter, bounds=(0, 1), device=dev)
        settings = _settings(cfg)
        batches = [attacked[i:i + cfg["batch_size"]] for i in range(0, len(attacked), cfg["batch_size"])]
        start_cache: dict = {}
        cuda_rng = [torch.cuda.current_device() if dev.index is None else dev.index] if dev.type == "cuda" else []
        curve: list[tuple[float, float]] = []
        info: list[dict] = []
        total_queries = 0.0
        bar = tqdm(settings, disable=not progress, desc=f"{cfg['norm']} {cfg['attack']}")
        for k, (params, repeat) in enumerate(bar):
            ts = time.perf_counter()
            counter.queries = counter.grad_queries = 0
            this = np.full(len(idx), np.inf)
            for b, rows in enumerate(batches):
                rt = torch.from_numpy(rows).to(dev)
                seed = int(np.random.SeedSequence([cfg["seed"], k, b]).generate_state(1)[0])
                with torch.random.fork_rng(devices=cuda_rng):
                    torch.manual_seed(seed)
                    cand = _run_setting(spec, params, cfg, fmodel, counter, xs[rt], ys[rt], start_cache, (b, repeat))
                adv, dist, ok = _verify(model, xs[rt], ys[rt], cand, cfg["norm"], cfg["margin"])
                this[rows[ok]] = dist[ok]
                better = ok & (dist < best[rows])
                best[rows[better]] = dist[better]
                bt = torch.from_numpy(better).to(dev)
                best_adv[rt[bt]] = adv[bt]
            total_queries += counter.queries / n_att
            curve.append((total_queries, float(np.median(best))))
            info.append({
                "params": dict(params), "repeat": repeat,
                "queries": counter.queries / n_att, "grad_queries": counter.grad_queries / n_att,
                "n_success": int(np.isfinite(this[attacked]).sum()),
                "median_distance": float(np.median(this[attacked])) if len(attacked) else 0.0,
                "wall_time": time.perf_counter() - ts,
            })
            bar.set_postfix(median=f"{curve[-1][1]:.4g}")
        wall = time.perf_counter() - t0
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
        model.train(was_training)
    return AttackResult(
        attack=cfg["attack"], norm=cfg["norm"], indices=idx, distances=best, success=np.isfinite(best),
        clean_correct=correct, queries_curve=curve, wall_time=wall, settings=info,
        adversarials=best_adv.cpu().numpy() if keep_adversarials else None, config=cfg,
    )
