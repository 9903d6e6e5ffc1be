"""The GPU checks of issue 14, as one prepared script for a machine with CUDA: what the paper's scale costs there.

1. the paper preset's training step (ResNet18 at width 64, batch 64, 7 stimuli): benchmarks/training.py --full
   on the device, with its ratio and measured floor;
2. the attack benchmark on the paper's ResNet18 shape: benchmarks/attacks.py --arch resnet18 on the device;
3. one epoch of paper-shaped training: ResNet18 on 50,000 grayscale 32 x 32 images (CIFAR's size; random
   pixels, so the time is real and the accuracy meaningless), regularised towards a 5000 x 5000 pixel target
   of 36 x 64 stimuli with the paper's train configuration, through pipeline.classifier.train.train_classifier,
   so every copy and sync of the real loop is paid.

Each part prints its own last line; the script ends with one summary line per part. Without CUDA it refuses,
unless --device cpu (with --quick: a few seconds of each part, to check that the script runs).

    .venv/bin/python benchmarks/gpu.py                     # on a CUDA machine (about 5-10 minutes)
    .venv/bin/python benchmarks/gpu.py --device cpu --quick   # the script itself, on a CPU (about 7 minutes)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def last_line(cmd: list[str], prefix: str) -> str:
    """Run a benchmark script and return its last line starting with ``prefix`` (its whole output echoed)."""
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    sys.stdout.write(out.stdout)
    if out.returncode != 0:
        sys.stdout.write(out.stderr[-4000:])
        return f"{prefix} FAILED (exit {out.returncode})"
    lines = [line for line in out.stdout.splitlines() if line.startswith(prefix)]
    return lines[-1] if lines else f"{prefix} (no result line)"


def paper_epoch(device: str, n_train: int, n_stimuli: int, quick: bool) -> str:
    """One epoch of the paper's training (ResNet18, paper train preset, alpha 20 towards a pixel target)."""
    from pipeline.classifier.tasks import TaskData
    from pipeline.classifier.train import train_classifier

    from benchmarks.training import pixel_target, smooth_stimuli

    rng = np.random.default_rng(0)
    task = TaskData(name="cifar-shaped", train_x=rng.random((n_train, 1, 32, 32), dtype=np.float32),
                    train_y=rng.integers(0, 10, n_train).astype(np.int64),
                    test_x=rng.random((1000, 1, 32, 32), dtype=np.float32),
                    test_y=rng.integers(0, 10, 1000).astype(np.int64), n_classes=10,
                    class_names=tuple(str(k) for k in range(10)))
    stimuli = smooth_stimuli(n_stimuli, 36, 64, rng)
    target = {"matrix": pixel_target(stimuli), "stimuli": stimuli}
    train = {"preset": "paper", "epochs": 1}
    if quick:
        train["max_steps_per_epoch"] = 5
    t0 = time.perf_counter()
    result = train_classifier(task, "resnet18", train, regulariser={"alpha": 20.0}, target=target, seed=0,
                              device=device, progress=False)
    seconds = time.perf_counter() - t0
    steps = n_train // 64 if not quick else 5
    return (f"paper epoch: {seconds:.1f} s for {steps} steps ({1e3 * seconds / steps:.1f} ms/step incl. evaluation) "
            f"arch=resnet18 n_train={n_train} stimuli={n_stimuli} device={device} "
            f"pairs_per_step={result.pairs_per_step}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="a few steps of each part (checks the script, no numbers)")
    args = ap.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("benchmarks/gpu.py: no CUDA device here. Fix: run it on a machine with a GPU, or pass --device cpu "
              "(with --quick, to check the script)", file=sys.stderr)
        return 2
    py = sys.executable
    if args.device.startswith("cuda"):
        print(f"device: {torch.cuda.get_device_name(torch.device(args.device))}, torch {torch.__version__}, "
              f"CUDA {torch.version.cuda}")
    results = []
    training = [py, "benchmarks/training.py", "--full", "--device", args.device]
    if args.quick:
        training += ["--rounds", "3", "--steps", "1"]
    results.append(last_line(training, "training:"))
    attacks = [py, "benchmarks/attacks.py", "--arch", "resnet18", "--device", args.device]
    if args.quick:
        attacks += ["--n-samples", "2"]
    results.append(last_line(attacks, "attacks:"))
    results.append(paper_epoch(args.device, 2000 if args.quick else 50000, 200 if args.quick else 5000, args.quick))
    print("\n== summary")
    for line in results:
        print(line)
    return 0 if not any("FAILED" in line for line in results) else 1


if __name__ == "__main__":
    sys.exit(main())
