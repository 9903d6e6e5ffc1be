"""Reading a paper-size scan (6000 trials x 8000 neurons) from a Sensorium file tree.

Side by side in one run, on the same files (page cache warm for both, best of 2 each):
- read_filetree (header-bytes fast path + checks + validate), and
- a naive reader: np.load of every per-trial file, stacked (no checks at all).
Usage: .venv/bin/python benchmarks/filetree.py [n_trials] [n_neurons]
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline.recording.filetree import read_filetree, write_filetree
from pipeline.recording.scan_data import ScanData


def synthetic_scan(n_trials: int, n_neurons: int, n_oracle: int = 100, n_repeats: int = 10) -> ScanData:
    """A scan of the paper's shape with random content (the simulator would cost more than the I/O)."""
    rng = np.random.default_rng(0)
    n_single = n_trials - n_oracle * n_repeats
    n_images = n_single + n_oracle
    shown = np.concatenate([np.arange(n_single), np.repeat(np.arange(n_single, n_images), n_repeats)])
    shown = shown[rng.permutation(n_trials)]
    tiers = np.where(shown >= n_single, "oracle", "train")
    return ScanData(
        images=rng.uniform(0, 255, (n_images, 36, 64)).astype(np.float32), image_ids=np.arange(n_images),
        trial_idx=np.arange(n_trials), trial_image_ids=shown, tiers=tiers,
        responses=rng.gamma(0.5, 1.0, (n_trials, n_neurons)).astype(np.float32),
        behavior=rng.normal(size=(n_trials, 3)).astype(np.float32),
        pupil_center=rng.normal(size=(n_trials, 2)).astype(np.float32), unit_ids=np.arange(n_neurons),
        areas=np.full(n_neurons, "V1"), layers=np.full(n_neurons, "L2/3"),
        positions=rng.uniform(0, 800, (n_neurons, 3)).astype(np.float32))


def naive_read(root: Path, n_trials: int) -> dict[str, np.ndarray]:
    return {f: np.stack([np.load(root / "data" / f / f"{k}.npy") for k in range(n_trials)])
            for f in ("images", "responses", "behavior", "pupil_center")}


def best_of(fn, repeats: int = 2) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    n_trials = int(sys.argv[1]) if len(sys.argv) > 1 else 6000
    n_neurons = int(sys.argv[2]) if len(sys.argv) > 2 else 8000
    scan = synthetic_scan(n_trials, n_neurons)
    tmp = Path(tempfile.mkdtemp(prefix="bench-filetree-"))
    try:
        t = time.perf_counter()
        write_filetree(scan, tmp / "scan")
        t_write = time.perf_counter() - t
        t_naive = best_of(lambda: naive_read(tmp / "scan", n_trials))
        t_ours = best_of(lambda: read_filetree(tmp / "scan"))
        back = read_filetree(tmp / "scan")
        assert np.array_equal(back.responses, scan.responses) and np.array_equal(back.images, scan.images)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"write_filetree: {t_write:.2f} s; read_filetree: {t_ours:.2f} s; naive np.load reader: {t_naive:.2f} s")
    print(f"filetree_read: ratio={t_naive / t_ours:.2f} (naive np.load per file, no checks / read_filetree) "
          f"{n_trials} trials x {n_neurons} neurons, read_filetree {t_ours:.2f} s")


if __name__ == "__main__":
    main()
