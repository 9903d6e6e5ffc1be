"""Price list of the attack presets: samples/second and median perturbation of each attack.

Every attack of a preset runs on the same model and the same test samples, side by side in one process,
so a user can pick a sweep knowing its cost. Numba's one-off Brendel-Bethge compile is paid up front
(``warm_up``) and reported separately, not charged to the attack.

    .venv/bin/python benchmarks/attacks.py                       # cpu-demo preset, small CNN on digits
    .venv/bin/python benchmarks/attacks.py --preset paper --n-samples 50 --device cuda
    .venv/bin/python benchmarks/attacks.py --torchscript model.pt --data test.npz   # your classifier
        (test.npz holds x (N, 1, H, W) float32 in [0, 1] and y (N,) int)

From Python: ``run_benchmark(model, x, y, preset='cpu-demo')``.
Last line: ``attacks: ratio=X (fastest samples/s / slowest samples/s) ...``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.robustness.attacks import minimal_perturbations, preset_configs, warm_up  # noqa: E402
from pipeline.robustness.samples import select_samples  # noqa: E402


def digits_cnn(seed: int = 0, epochs: int = 6) -> tuple[torch.nn.Module, np.ndarray, np.ndarray, float]:
    """A small CNN trained for about a second on scikit-learn digits upsampled to 16 x 16.

    Returns (model in eval mode, x_test (N, 1, 16, 16) float32, y_test (N,), test accuracy).
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.kron(d.images / 16.0, np.ones((2, 2)))[:, None].astype(np.float32)
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(seed).permutation(len(x))
    tr, te = perm[:1400], perm[1400:]
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(256, 10),
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(x[tr]), torch.from_numpy(y[tr])
    for _ in range(epochs):
        order = torch.randperm(len(xt))
        for i in range(0, len(xt), 64):
            b = order[i:i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(xt[b]), yt[b]).backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        acc = float((net(torch.from_numpy(x[te])).argmax(1).numpy() == y[te]).mean())
    return net, x[te], y[te], acc


def run_benchmark(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, preset: str = "cpu-demo",
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
    if len(sizes) != 1:
        raise SystemExit(f"the preset's attacks use different n_samples {sorted(sizes)}; pass --n-samples")
    idx = select_samples(len(x), sizes.pop(), seed=0)
    x, y = x[idx], y[idx]
    bb_norms = sorted({c["norm"] for c in configs.values() if c["attack"] == "bb"})
    if bb_norms:
        compile_s = warm_up(bb_norms)
        print("numba compile of Brendel-Bethge (once per process, not charged): "
              + ", ".join(f"{k} {v:.1f} s" for k, v in compile_s.items()))
    rows = []
    print(f"{'attack':<15}{'settings':>9}{'samples/s':>11}{'wall s':>9}{'queries':>9}{'success':>9}{'median':>11}")
    for key, cfg in configs.items():
        r = minimal_perturbations(model, x, y, cfg, device=device, progress=False)
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
    ap.add_argument("--preset", default="cpu-demo")
    ap.add_argument("--n-samples", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--only", nargs="*", default=None, help="attack keys of the preset, e.g. L2-ddn Linf-pgd")
    ap.add_argument("--torchscript", type=Path, default=None, help="a TorchScript classifier to attack")
    ap.add_argument("--data", type=Path, default=None, help="npz with x (N, 1, H, W) in [0, 1] and y (N,)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    if args.torchscript is not None:
        if args.data is None:
            raise SystemExit("--torchscript needs --data test.npz (arrays x and y)")
        model = torch.jit.load(str(args.torchscript), map_location=args.device or "cpu").eval()
        with np.load(args.data) as f:
            x, y = f["x"].astype(np.float32), f["y"].astype(np.int64)
        print(f"model {args.torchscript}, {len(x)} test images {x.shape[1:]}")
    else:
        model, x, y, acc = digits_cnn()
        if args.device:
            model = model.to(args.device)
        print(f"model: small CNN on 16x16 digits, trained in {time.perf_counter() - t0:.1f} s, "
              f"test accuracy {acc:.3f}")
    rows = run_benchmark(model, x, y, args.preset, args.n_samples, args.batch_size, args.device, args.only)
    fast = max(rows, key=lambda r: r["samples_per_s"])
    slow = min(rows, key=lambda r: r["samples_per_s"])
    print(f"attacks: ratio={fast['samples_per_s'] / slow['samples_per_s']:.1f} (fastest samples/s / slowest "
          f"samples/s) fastest {fast['attack']} {fast['samples_per_s']:.2f}/s median {fast['median']:.4g}, "
          f"slowest {slow['attack']} {slow['samples_per_s']:.2f}/s median {slow['median']:.4g}; "
          f"preset {args.preset}, {len(rows)} attacks, same model and samples, {torch.get_num_threads()} thread(s)")


if __name__ == "__main__":
    main()
