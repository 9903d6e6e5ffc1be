"""The runner: per-sample minimal adversarial perturbations of one attack over its sweep (Schott et al. 2018).

For each given sample, the smallest perturbation (in the config's norm) that flips the model's label,
minimised over the runs of one attack and its hyper-parameter sweep. Every candidate is re-checked
(``verify.verify``), not trusted from Foolbox. A sample the model already misclassifies has distance 0; a
sample no run could flip has distance +inf.

The runner attacks exactly the samples it is given: it never selects samples (the caller does, with
``samples.select_samples(n_total, config['n_samples'], config['seed'])``), so the config's ``n_samples`` is
ignored here; its ``seed`` seeds the attacks' randomness (random starts), one seed per (setting, batch).

Queries (Fig 5) are measured with ``counting.QueryCounter``: the curve holds, after each setting, the
cumulative queries per attacked sample and the median over samples of the best distance so far.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

import foolbox as fb
import numpy as np
import torch

from pipeline.devices import resolve_device

from ..images import check_images, predict_labels
from .config import resolve_attack_config
from .counting import QueryCounter
from .registry import get_attack
from .verify import verify

__all__ = ["AttackResult", "minimal_perturbations"]


@dataclass
class AttackResult:
    """Minimal perturbations of one attack (over its sweep) on the given samples.

    Attributes:
        attack, norm: the attack name and the norm distances are measured in.
        indices: (n,) int64 positions of the samples in the ``x`` given to ``minimal_perturbations``
            (0 .. n - 1: every given sample is attacked).
        distances: (n,) float64 smallest verified perturbation per sample, in ``norm`` and [0, 1] pixel
            units (L0: number of pixels); 0 if the clean sample is misclassified, +inf if no run flipped it.
        success: (n,) bool, distances < inf.
        clean_correct: (n,) bool, the model classifies the clean sample correctly.
        queries_curve: [(cumulative queries per attacked sample, median distance over the n samples so far)],
            one entry per setting in sweep order (Fig 5).
        wall_time: seconds for the attack, excluding the one-off numba compile (see ``registry.warm_up``).
        settings: one dict per setting: params, repeat, queries, grad_queries (per attacked sample),
            n_success, median_distance (this setting alone, over the attacked samples), wall_time, and for the
            epsilon-search kinds search_rounds (mean rounds of the fixed-epsilon attack per sample).
        adversarials: (n, 1, H, W) float32 best verified adversarial per sample (the clean image where
            the distance is 0, NaN where none was found), or None.
        config: the resolved attack configuration.
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


def _settings(config: dict) -> list[tuple[dict, int]]:
    """[(hyper-parameters, repeat)]: the Cartesian product of the sweep, each repeated."""
    keys = list(config["sweep"])
    combos = [dict(zip(keys, vals)) for vals in itertools.product(*(config["sweep"][k] for k in keys))]
    return [(c, r) for c in combos for r in range(config["repeats"])]


def minimal_perturbations(
    model: torch.nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    config: dict,
    *,
    keep_adversarials: bool = False,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> AttackResult:
    """Per-sample minimal adversarial perturbation of every given sample, over one attack's sweep.

    Args:
        model: torch classifier, (B, 1, H, W) float32 in [0, 1] -> logits. Put in eval mode; its
            parameters' requires_grad flags, and torch's TF32 switches, are off during the attack and
            restored afterwards (global state: do not attack from several threads at once).
        x: (n, 1, H, W) float images in [0, 1], every one attacked.
        y: (n,) integer labels.
        config: an attack configuration (``config.resolve_attack_config``; resolved again here);
            ``presets.ATTACK_PRESETS`` holds examples. Its n_samples is ignored (see the module docstring).
        keep_adversarials: also return the best adversarial images.
        device: where to attack (default: the model's device if that is a GPU, else CUDA when available,
            else the CPU; the model is moved there for the attack and back afterwards).
        progress: show a tqdm bar over settings.
    Returns:
        AttackResult over the n samples, in the order given.
    """
    from tqdm.auto import tqdm

    cfg = resolve_attack_config(config)
    attack = get_attack(cfg["norm"], cfg["attack"])
    x, y = check_images(x, y)
    home = resolve_device(None, model)
    # default: the model's device, or CUDA when there is one (the model is moved there and back)
    dev = resolve_device(device) if device is not None else (
        home if home.type != "cpu" else resolve_device(None))
    attack.warm_up(cfg)  # e.g. numba compile, once per process, outside the timing

    flags = [p.requires_grad for p in model.parameters()]
    was_training = model.training
    if dev != home:
        model.to(dev)
    model.eval()
    for p in model.parameters():  # one by one: a TorchScript module has no requires_grad_
        p.requires_grad_(False)
    # full float32 on GPUs: TF32 convolutions (cuDNN's default) round inputs to ~1e-3 relative precision,
    # far coarser than the verification margin near the decision boundary; restored afterwards
    tf32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        t0 = time.perf_counter()
        xs = torch.from_numpy(x).to(dev)
        ys = torch.from_numpy(y).to(dev)
        correct = predict_labels(model, x, batch_size=cfg["batch_size"], device=dev) == y
        best = np.where(correct, np.inf, 0.0)
        best_adv = xs.clone()
        best_adv[torch.from_numpy(correct).to(dev)] = float("nan")
        attacked = np.flatnonzero(correct)
        n_att = max(len(attacked), 1)
        counter = QueryCounter(model).eval()
        fmodel = fb.PyTorchModel(counter, bounds=(0, 1), device=dev)
        batches = [attacked[i:i + cfg["batch_size"]] for i in range(0, len(attacked), cfg["batch_size"])]
        caches: dict[tuple[int, int], dict] = {}  # per (batch, repeat), shared by the settings of the sweep
        cuda_rng = [torch.cuda.current_device() if dev.index is None else dev.index] if dev.type == "cuda" else []
        curve: list[tuple[float, float]] = []
        info: list[dict] = []
        total_queries = 0.0
        bar = tqdm(_settings(cfg), disable=not progress, desc=f"{cfg['norm']} {cfg['attack']}")
        for k, (params, repeat) in enumerate(bar):
            ts = time.perf_counter()
            counter.reset()
            this = np.full(len(x), np.inf)
            rounds = []
            for b, rows in enumerate(batches):
                rt = torch.from_numpy(rows).to(dev)
                seed = int(np.random.SeedSequence([cfg["seed"], k, b]).generate_state(1)[0])
                with torch.random.fork_rng(devices=cuda_rng):
                    torch.manual_seed(seed)
                    cand = attack.run(params, cfg, fmodel, counter, xs[rt], ys[rt], caches.setdefault((b, repeat), {}))
                rounds.extend(caches[(b, repeat)].pop("search_rounds", []))
                adv, dist, ok = verify(model, xs[rt], ys[rt], cand, cfg["norm"], cfg["margin"])
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
                **({"search_rounds": float(np.mean(rounds))} if rounds else {}),
            })
            bar.set_postfix(median=f"{curve[-1][1]:.4g}")
        wall = time.perf_counter() - t0
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
        model.train(was_training)
        if dev != home:
            model.to(home)
    return AttackResult(
        attack=cfg["attack"], norm=cfg["norm"], indices=np.arange(len(x), dtype=np.int64), distances=best,
        success=np.isfinite(best), clean_correct=correct, queries_curve=curve, wall_time=wall, settings=info,
        adversarials=best_adv.cpu().numpy() if keep_adversarials else None, config=cfg,
    )
