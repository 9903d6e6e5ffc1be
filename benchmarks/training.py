"""Cost of the similarity regulariser: time per training step with alpha > 0 over time per plain step.

Same architecture, same task batch size (64), same device, and the real step of the training loop
(`pipeline.classifier.train.train_step`, after the loop's augmentation). Plain and regularised steps are timed
in interleaved blocks (order alternating each round) so both see the same machine load; on CPU the clock is
the process's CPU time (other users of a shared machine inflate elapsed time, not CPU time). The paper reports
about 2x (it passes as many stimulus images as task images per step);
this implementation takes all B (B - 1) / 2 pairs from one forward pass of B stimuli, B = 7 giving 21 >= 16 pairs.
The headline ratio is the median over rounds of (regularised block / adjacent plain block). Its floor is
measured in the same rounds: a "floor" step is the plain step plus the forward and backward pass of the same B
stimuli through the same layers (with frozen batch-norm statistics, as the regulariser does), with no
similarity, no target and no sampling: what any implementation of this loss must pay. (In pixels: B 36 x 64
stimuli over 64 32 x 32 images = +25 % for B = 7; the measured floor is what this hardware makes of it.) The
regulariser's own overhead is ratio - floor. Stimuli (36 x 64) and task images (32 x 32) have different shapes,
so one forward for both batches is not possible without padding, which would cost more than it saves.

    .venv/bin/python benchmarks/training.py            # resnet18-narrow (width 16), CPU friendly
    .venv/bin/python benchmarks/training.py --full     # resnet18 at width 64
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from torch.nn import functional as F

from pipeline.classifier.config import REGULARISER_DEFAULTS, resolve_regulariser, resolve_train_config
from pipeline.classifier.resnet import build_classifier
from pipeline.classifier.similarity_loss import SimilarityRegulariser, n_pairs
from pipeline.classifier.tasks import augment_batch
from pipeline.classifier.train import StimulusSampler, frozen_bn_statistics, make_optimiser, train_step
from pipeline.devices import resolve_device


def pixel_target(stimuli: np.ndarray) -> np.ndarray:
    """Eq 2 on raw pixels: (N, H, W) -> (N, N) cosine similarity of pixel vectors centred across stimuli."""
    u = stimuli.reshape(len(stimuli), -1).astype(np.float64)
    u = u - u.mean(0)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    return (u @ u.T).astype(np.float32)


def smooth_stimuli(n: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """(n, h, w) float32 in [0, 255]: random low-frequency images (stand-ins for the 36 x 64 stimuli)."""
    coarse = rng.random((n, 1, h // 4 + 1, w // 4 + 1)).astype(np.float32)
    up = torch.nn.functional.interpolate(torch.from_numpy(coarse), size=(h, w), mode="bilinear", align_corners=False)
    return (255.0 * up[:, 0]).numpy()


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet18-narrow")
    ap.add_argument("--full", action="store_true", help="resnet18 at the standard width 64")
    ap.add_argument("--batch", type=int, default=64, help="task images per step")
    ap.add_argument("--stimuli", type=int, default=REGULARISER_DEFAULTS["batch_size"], help="B stimuli per step")
    ap.add_argument("--steps", type=int, default=5, help="steps per timed block")
    ap.add_argument("--rounds", type=int, default=24,
                    help="interleaved rounds of (plain, floor, regularised) blocks; 24 x 5 steps make repeated runs "
                         "agree within about 0.05 here")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--clock", choices=("auto", "cpu", "wall"), default="auto",
                    help="cpu: process CPU time (robust to other users of a shared CPU; the default on CPU); "
                         "wall: elapsed time (the default on CUDA, with synchronisation)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    arch = "resnet18" if args.full else args.arch
    dev = resolve_device(args.device)
    rng = np.random.default_rng(0)
    gen = torch.Generator().manual_seed(0)

    cfg = resolve_train_config("paper")
    reg_cfg = resolve_regulariser(dict(alpha=20.0, batch_size=args.stimuli))
    stimuli = smooth_stimuli(200, 36, 64, rng)
    sampler = StimulusSampler(torch.from_numpy(stimuli / 255.0)[:, None].to(dev),
                              torch.from_numpy(pixel_target(stimuli)).to(dev), reg_cfg["batch_size"])
    x_all = torch.from_numpy(rng.random((args.batch * 4, 1, 32, 32), dtype=np.float32)).to(dev)
    y_all = torch.from_numpy(rng.integers(0, 10, args.batch * 4)).to(dev)

    torch.manual_seed(0)
    plain_model = build_classifier(arch, 10).to(dev)
    torch.manual_seed(0)
    reg_model = build_classifier(arch, 10).to(dev)
    channels = reg_model.layer_channels()
    regulariser = SimilarityRegulariser({n: channels[n] for n in reg_cfg["layers"]}).to(dev)
    plain_opt = make_optimiser(plain_model, None, cfg)
    reg_opt = make_optimiser(reg_model, regulariser, cfg)

    clock_name = args.clock if args.clock != "auto" else ("cpu" if dev.type == "cpu" else "wall")
    clock = time.process_time if clock_name == "cpu" else time.perf_counter

    torch.manual_seed(0)
    floor_model = build_classifier(arch, 10).to(dev)
    floor_opt = make_optimiser(floor_model, None, cfg)
    layers = list(regulariser.layers)

    def floor_step(x, y):
        """The plain step plus the stimuli's forward and backward through the regularised layers, nothing else."""
        floor_opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(floor_model(x), y)
        stimuli, _ = sampler.sample(gen)
        with frozen_bn_statistics(floor_model, reg_cfg["stimulus_bn"] == "frozen"):
            feats = floor_model.features(stimuli, layers)
        loss = loss + 0.0 * sum(f.sum() for f in feats.values())  # backward through them, no similarity
        loss.backward()
        floor_opt.step()

    def block(mode: str, n: int) -> float:
        sync(dev)
        t0 = clock()
        for k in range(n):
            lo = (k % 4) * args.batch
            x = augment_batch(x_all[lo:lo + args.batch], gen, pad=4, flip=True)
            y = y_all[lo:lo + args.batch]
            if mode == "regularised":
                train_step(reg_model, reg_opt, x, y, regulariser, reg_cfg, sampler, gen)
            elif mode == "floor":
                floor_step(x, y)
            else:
                train_step(plain_model, plain_opt, x, y)
        sync(dev)
        return (clock() - t0) / n

    modes = ("plain", "floor", "regularised")
    for mode in modes:
        block(mode, 2)  # warm-up (allocator, kernels)
    times = {mode: [] for mode in modes}
    for r in range(args.rounds):
        for mode in (modes[r % 3:] + modes[:r % 3]):  # rotate the order so no mode always runs first
            times[mode].append(block(mode, args.steps))
    median = {mode: statistics.median(t) for mode, t in times.items()}
    # Paired per round (blocks of one round share the machine's load), then the median over rounds.
    ratio = statistics.median(r / p for r, p in zip(times["regularised"], times["plain"]))
    floor = statistics.median(f / p for f, p in zip(times["floor"], times["plain"]))
    print(f"arch={arch} width={plain_model.width} device={dev} threads={torch.get_num_threads()} "
          f"batch={args.batch} B={reg_cfg['batch_size']} stimulus=36x64 clock={clock_name} rounds={args.rounds}")
    for mode in modes:
        print(f"{mode + ' ms/step:':<24}" + " ".join(f"{1e3 * t:.1f}" for t in times[mode]))
    print(f"training: ratio={ratio:.3f} (regularised step / plain step) floor={floor:.3f} (plain step + the stimuli's "
          f"forward/backward, measured) overhead_above_floor={ratio - floor:+.3f} "
          f"pairs={n_pairs(reg_cfg['batch_size'])} B={reg_cfg['batch_size']} arch={arch} device={dev} plain_ms={1e3 * median['plain']:.1f} "
          f"floor_ms={1e3 * median['floor']:.1f} regularised_ms={1e3 * median['regularised']:.1f} clock={clock_name}")


if __name__ == "__main__":
    main()
