"""Robustness scores at a price: how fast each way of attacking reaches the per-sample minimum.

Headline: on a classifier as the pipeline trains it, the time the 'fast' preset's attacks take to reach a
robustness score (the median over samples of the per-sample minimal perturbation) within 1% of the best score
found by everything run here together, against the time of the paper-style sweep (Foolbox Linf PGD over
steps {10, 30, 50, 100, 200} with a 10-step epsilon bisection from an unbounded first run; L2 Brendel-Bethge
from a DDN start, lr {1e-3, 1e-2}, 1000 steps). Attacks are compared within one norm; the ratio sums both
norms. Every attack runs on the same model and samples in one process; numba's one-off Brendel-Bethge compile
is paid up front and not charged.

    .venv/bin/python benchmarks/attacks.py                  # demo ResNet from the database, 10 samples (~3 min)
    .venv/bin/python benchmarks/attacks.py --full           # 50 samples, plus the paper's ResNet18 shape
    .venv/bin/python benchmarks/attacks.py --arch resnet18  # the paper's ResNet18 (briefly trained on digits)
    .venv/bin/python benchmarks/attacks.py --torchscript model.pt --data test.npz   # your classifier
        (test.npz holds x (N, 1, H, W) float32 in [0, 1] and y (N,) int)
    .venv/bin/python benchmarks/attacks.py --price-list --preset paper --n-samples 20   # the old price list

From Python: ``headline(model, x, y)``, ``run_price_list(model, x, y, preset='fast')``.
Last line: ``attacks: ratio=X (paper-style sweep seconds / ours seconds) at median within Y%``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.robustness.attacks import minimal_perturbations, preset_configs, resolve_attack_config  # noqa: E402
from pipeline.robustness.attacks import warm_up  # noqa: E402
from pipeline.robustness.samples import select_samples  # noqa: E402

NORMS = ("Linf", "L2")
# the paper-style sweep, as this project ran it before issue 14 (its Linf PGD minus the settings that cannot
# cross the ball; the search is the original one: a first run at the box's diameter, then 10 bisections)
PAPER_STYLE = {
    "Linf": {"pgd": {"attack": "pgd", "norm": "Linf", "sweep": {"steps": [10, 30, 50, 100, 200], "rel_stepsize": [0.3]},
                     "search": {"eps_min": 1e-4, "steps": 10}}},
    "L2": {"bb": {"attack": "bb", "norm": "L2", "sweep": {"steps": [1000], "lr": [1e-3, 1e-2]},
                  "init": ["ddn", "blended"], "init_steps": 1000}},
}


def digits_resnet(arch: str = "resnet18-narrow", epochs: int = 2, seed: int = 0
                  ) -> tuple[torch.nn.Module, np.ndarray, np.ndarray, float]:
    """A ResNet of ``arch`` trained briefly on the pipeline's 32 x 32 digits (for timing; not the demo's training).

    Returns (model in eval mode, x_test (N, 1, 32, 32), y_test (N,), test accuracy).
    """
    from pipeline.classifier.resnet import build_classifier
    from pipeline.classifier.tasks import load_task

    task = load_task("digits")
    torch.manual_seed(seed)
    net = build_classifier(arch, task.n_classes)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    xt, yt = torch.from_numpy(task.train_x), torch.from_numpy(task.train_y)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(xt))
        for i in range(0, len(xt), 64):
            b = order[i:i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(xt[b]), yt[b]).backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        pred = torch.cat([net(torch.from_numpy(task.test_x[i:i + 256])).argmax(1)
                          for i in range(0, len(task.test_x), 256)])
    return net, task.test_x, task.test_y, float((pred.numpy() == task.test_y).mean())


def demo_resnet() -> tuple[torch.nn.Module, np.ndarray, np.ndarray, str] | None:
    """The first trained demo classifier of the database and its test set, or None if there is no database."""
    try:
        import schemas

        schemas.activate()
        from schemas import classifier, robustness

        keys = classifier.TrainedClassifier.keys()
        if not keys:
            return None
        key = keys[0]
        _, x, y = robustness.test_samples(key, None, 0)
        return classifier.load_trained(key).eval(), x, y, f"demo classifier {dict(key)}"
    except Exception as err:  # no database server, no schema: fall back to training one here
        print(f"(no demo classifier from the database: {type(err).__name__}: {err})")
        return None


def _configs(cfgs: dict[str, dict], n: int, batch: int) -> dict[str, dict]:
    return {k: resolve_attack_config({**c, "n_samples": n, "batch_size": batch, "seed": 0}) for k, c in cfgs.items()}


def _run_all(model, x, y, cfgs: dict[str, dict], device) -> dict[str, tuple[np.ndarray, float, float]]:
    """{key: (distances, wall seconds, queries per sample)}: each config on the same samples."""
    out = {}
    for key, cfg in cfgs.items():
        r = minimal_perturbations(model, x, y, cfg, device=device, progress=False)
        out[key] = (r.distances, r.wall_time, r.queries_curve[-1][0] if r.queries_curve else 0.0)
    return out


def headline(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, n_samples: int = 10, device=None,
             tolerance: float = 0.01, label: str = "model") -> dict:
    """Run the paper-style sweep and the 'fast' preset per norm on the same samples; print and return the numbers.

    ``ours`` time = the time of the fast preset's attacks of a norm, in preset order, until their per-sample
    minimum's median is within ``tolerance`` of the best (all of them if it never is).
    """
    idx = select_samples(len(x), n_samples, seed=0)
    x, y = x[idx], y[idx]
    fast = preset_configs("fast")
    n = len(x)
    warm_up(("L2",))
    totals = {"paper": 0.0, "ours": 0.0, "paper_q": 0.0, "ours_q": 0.0}
    gaps = []
    print(f"\n{label}: {n} samples")
    print(f"{'norm':<6}{'attacks':<34}{'seconds':>9}{'queries':>9}{'median':>10}{'gap to best':>13}")
    for norm in NORMS:
        paper = _run_all(model, x, y, _configs(PAPER_STYLE[norm], n, n), device)
        ours_cfg = _configs({k: v for k, v in fast.items() if k.startswith(norm + "-")}, n, n)
        ours = _run_all(model, x, y, ours_cfg, device)
        best = np.min([d for d, _, _ in (*paper.values(), *ours.values())], axis=0)
        best_score = float(np.median(best))

        def gap(d):
            return float(np.median(d)) / best_score - 1 if best_score > 0 else 0.0

        p_d = np.min([d for d, _, _ in paper.values()], axis=0)
        p_t, p_q = sum(t for _, t, _ in paper.values()), sum(q for _, _, q in paper.values())
        run_d, o_t, o_q, used = None, 0.0, 0.0, []
        for key, (d, t, q) in ours.items():
            run_d = d if run_d is None else np.minimum(run_d, d)
            o_t, o_q = o_t + t, o_q + q
            used.append(key)
            if gap(run_d) <= tolerance:
                break
        print(f"{norm:<6}{'paper-style: ' + '+'.join(paper):<34}{p_t:>9.1f}{p_q:>9.0f}{np.median(p_d):>10.4g}"
              f"{100 * gap(p_d):>12.2f}%")
        print(f"{norm:<6}{'ours: ' + '+'.join(used):<34}{o_t:>9.1f}{o_q:>9.0f}{np.median(run_d):>10.4g}"
              f"{100 * gap(run_d):>12.2f}%")
        ok = (best > 0) & np.isfinite(best)
        per = run_d[ok] / best[ok] - 1
        print(f"{'':<6}ours per sample vs best: median {100 * np.median(per):.2f}%, 90th pct "
              f"{100 * np.quantile(per, 0.9):.2f}%; paper-style per sample: median "
              f"{100 * np.median(p_d[ok] / best[ok] - 1):.2f}%; ratio {p_t / max(o_t, 1e-9):.1f}x")
        totals["paper"] += p_t
        totals["ours"] += o_t
        totals["paper_q"] += p_q
        totals["ours_q"] += o_q
        gaps.append(gap(run_d))
    totals["gap"] = max(gaps)
    totals["ratio"] = totals["paper"] / max(totals["ours"], 1e-9)
    print(f"{label}: both norms: paper-style {totals['paper']:.1f} s ({totals['paper_q']:.0f} queries/sample), ours "
          f"{totals['ours']:.1f} s ({totals['ours_q']:.0f} queries/sample): {totals['ratio']:.1f}x")
    return totals


def run_price_list(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, preset: str = "fast",
                   n_samples: int | None = None, batch_size: int | None = None, device: str | None = None,
                   only: list[str] | None = None) -> list[dict]:
    """Run every attack of ``preset`` on the same samples; returns one row per attack and prints a table."""
    configs = preset_configs(preset)
    if only:
        configs = {k: v for k, v in configs.items() if k in only}
    for cfg in configs.values():  # same samples for every attack
        cfg["seed"] = 0
        if n_samples is not None:
            cfg["n_samples"] = n_samples
        if batch_size is not None:
            cfg["batch_size"] = batch_size
    sizes = {c["n_samples"] for c in configs.values()}
    n = max(sizes)
    idx = select_samples(len(x), n, seed=0)
    x, y = x[idx], y[idx]
    bb_norms = sorted({c["norm"] for c in configs.values() if c["attack"] == "bb"})
    if bb_norms:
        compile_s = warm_up(bb_norms)
        print("numba compile of Brendel-Bethge (once per process, not charged): "
              + ", ".join(f"{k} {v:.1f} s" for k, v in compile_s.items()))
    rows = []
    print(f"{'attack':<15}{'settings':>9}{'samples/s':>11}{'wall s':>9}{'queries':>9}{'success':>9}{'median':>11}")
    for key, cfg in configs.items():
        sub = select_samples(n, cfg["n_samples"], seed=0) if cfg["n_samples"] < n else np.arange(n)
        r = minimal_perturbations(model, x[sub], y[sub], cfg, device=device, progress=False)
        n_att = max(int(r.clean_correct.sum()), 1)
        row = {"attack": key, "settings": len(r.settings), "wall_time": r.wall_time,
               "samples_per_s": n_att / r.wall_time, "queries": r.queries_curve[-1][0],
               "success": float(r.success.mean()), "median": r.median}
        rows.append(row)
        print(f"{key:<15}{row['settings']:>9}{row['samples_per_s']:>11.2f}{row['wall_time']:>9.2f}"
              f"{row['queries']:>9.0f}{row['success']:>9.2f}{row['median']:>11.4g}")
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-samples", type=int, default=None, help="samples per model (default 10; --full 50)")
    ap.add_argument("--full", action="store_true", help="50 samples, and the paper's ResNet18 shape too")
    ap.add_argument("--arch", default=None, help="only this architecture, briefly trained on digits "
                                                 "(e.g. resnet18, the paper's shape)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--torchscript", type=Path, default=None, help="a TorchScript classifier to attack")
    ap.add_argument("--data", type=Path, default=None, help="npz with x (N, 1, H, W) in [0, 1] and y (N,)")
    ap.add_argument("--price-list", action="store_true", help="instead: samples/s of every attack of --preset")
    ap.add_argument("--preset", default="fast", help="with --price-list")
    ap.add_argument("--only", nargs="*", default=None, help="with --price-list: attack keys of the preset")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    n = args.n_samples or (50 if args.full else 10)

    models = []
    if args.torchscript is not None:
        if args.data is None:
            raise SystemExit("--torchscript needs --data test.npz (arrays x and y)")
        model = torch.jit.load(str(args.torchscript), map_location=args.device or "cpu").eval()
        with np.load(args.data) as f:
            x, y = f["x"].astype(np.float32), f["y"].astype(np.int64)
        models.append((model, x, y, f"TorchScript {args.torchscript}"))
    elif args.arch is not None:
        t0 = time.perf_counter()
        model, x, y, acc = digits_resnet(args.arch, epochs=1 if args.arch != "resnet18-narrow" else 2)
        models.append((model, x, y, f"{args.arch} trained {time.perf_counter() - t0:.0f} s on digits (acc {acc:.3f})"))
    else:
        demo = demo_resnet()
        if demo is None:
            model, x, y, acc = digits_resnet("resnet18-narrow")
            demo = (model, x, y, f"resnet18-narrow trained here on digits (acc {acc:.3f})")
        models.append(demo)
        if args.full:
            t0 = time.perf_counter()
            model, x, y, acc = digits_resnet("resnet18", epochs=1)
            models.append((model, x, y, f"resnet18 (paper shape) trained {time.perf_counter() - t0:.0f} s on digits "
                                        f"(acc {acc:.3f})"))
    if args.device:
        models = [(m.to(args.device), x, y, label) for m, x, y, label in models]

    if args.price_list:
        model, x, y, label = models[0]
        print(label)
        rows = run_price_list(model, x, y, args.preset, args.n_samples, None, args.device, args.only)
        fast = max(rows, key=lambda r: r["samples_per_s"])
        slow = min(rows, key=lambda r: r["samples_per_s"])
        print(f"attacks: ratio={fast['samples_per_s'] / slow['samples_per_s']:.1f} (fastest samples/s / slowest "
              f"samples/s) fastest {fast['attack']}, slowest {slow['attack']}; preset {args.preset}")
        return

    totals = [headline(m, x, y, n, args.device, label=label) for m, x, y, label in models]
    paper, ours = sum(t["paper"] for t in totals), sum(t["ours"] for t in totals)
    gap = max(t["gap"] for t in totals)
    print(f"{len(totals)} model(s), {n} samples each, {torch.get_num_threads()} thread(s)")
    print(f"attacks: ratio={paper / max(ours, 1e-9):.1f} (paper-style sweep seconds / ours seconds) at median "
          f"within {100 * gap:.2f}%")


if __name__ == "__main__":
    main()
