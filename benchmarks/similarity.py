"""Cost of building the regularisation target (Eq 6 averaged over scans) versus the work it cannot avoid.

Measured side by side in one run, on the same float32 responses already in memory:
- target: SimilarityAccumulator over all scans (centre, weight, normalise, one ssyrk each) and its mean();
- bare:   one float32 numpy product X @ X.T per scan (numpy hands it to BLAS syrk), nothing else.
The two are interleaved scan by scan (alternating which goes first) so both see the same load on a shared
machine; the headline is the median over ``--repeats`` rounds of (all add() + mean()) / (all products).
Generating the random responses is not timed.

Paper scale (the defaults): 8 scans x 8000 neurons x 5000 images -> a 5000 x 5000 target.
    .venv/bin/python benchmarks/similarity.py            # paper scale, ~1.5 GB of memory
    .venv/bin/python benchmarks/similarity.py --quick    # 2 scans x 2000 neurons x 1000 images
"""

from __future__ import annotations

import argparse
import resource
import time
import tracemalloc

import numpy as np

from pipeline.oracle.similarity import SimilarityAccumulator


def one_round(scans, n_images: int, overwrite: bool) -> tuple[float, float, list[float], np.ndarray, int]:
    """Time both jobs scan by scan, alternating which goes first, so both see the same machine load.

    Returns (target seconds: every add() plus mean(), bare seconds: every X @ X.T,
    per-scan ratios add / product, the target, the target's memory peak in bytes (tracemalloc, while
    add() or mean() runs; the responses themselves predate tracemalloc.start() and are not counted))."""
    acc = SimilarityAccumulator(n_images)
    target_s = bare_s = 0.0
    per_scan = []
    peak = 0
    for k, (X, w) in enumerate(scans):
        work = X.copy() if overwrite else X  # untimed: overwrite destroys its input
        times = {}
        for job in (("bare", "add") if k % 2 == 0 else ("add", "bare")):
            tracemalloc.reset_peak()
            start = time.perf_counter()
            if job == "bare":
                G = X @ X.T
                del G
            else:
                acc.add(work, w, overwrite=overwrite)
            times[job] = time.perf_counter() - start
            if job == "add":  # the untimed copy made for overwrite is the responses, not the target's
                copied = work.nbytes if overwrite else 0
                peak = max(peak, tracemalloc.get_traced_memory()[1] - copied)
        del work
        target_s += times["add"]
        bare_s += times["bare"]
        per_scan.append(times["add"] / times["bare"])
    tracemalloc.reset_peak()
    start = time.perf_counter()
    acc.release_buffer()
    target = acc.mean()
    target_s += time.perf_counter() - start
    peak = max(peak, tracemalloc.get_traced_memory()[1])
    return target_s, bare_s, per_scan, target, peak


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scans", type=int, default=8)
    p.add_argument("--neurons", type=int, default=8000)
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--repeats", type=int, default=3, help="alternating rounds of each measurement")
    p.add_argument("--quick", action="store_true", help="2 scans x 2000 neurons x 1000 images")
    p.add_argument("--overwrite", action="store_true",
                   help="let the accumulator use the responses as its buffer (destroys them; a copy is "
                        "made before each round, untimed)")
    a = p.parse_args(argv)
    if a.quick:
        a.scans, a.neurons, a.images = 2, 2000, 1000

    rng = np.random.default_rng(0)
    scans = [(rng.standard_normal((a.images, a.neurons), dtype=np.float32),
              rng.uniform(0.1, 3.0, size=a.neurons).astype(np.float32)) for _ in range(a.scans)]
    data_mb = sum(X.nbytes for X, _ in scans) / 2 ** 20
    print(f"{a.scans} scans x {a.neurons} neurons x {a.images} images: responses {data_mb:.0f} MiB")

    bare_times, target_times, per_scan, peaks = [], [], [], []
    tracemalloc.start()  # numpy reports its allocations to tracemalloc; the responses predate the start
    for k in range(a.repeats):
        target = None  # free the previous round's target: it is not part of this round's memory
        t, b, ratios, target, p = one_round(scans, a.images, a.overwrite)
        peaks.append(p / 2 ** 20)
        target_times.append(t)
        bare_times.append(b)
        per_scan += ratios
        print(f"round {k}: target {t:.3f} s, bare {b:.3f} s, ratio {t / b:.3f}; "
              f"per-scan add/product {' '.join(f'{x:.2f}' for x in ratios)}")
    tracemalloc.stop()
    peak = max(peaks)

    # the result is a similarity matrix (checked on the side, untimed)
    assert target.shape == (a.images, a.images) and np.isfinite(target).all()
    assert np.array_equal(target, target.T) and np.all(np.diag(target) == 1.0)
    round_ratios = np.array(target_times) / np.array(bare_times)
    ratio = float(np.median(round_ratios))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 10
    target_mb = a.images ** 2 * 4 / 2 ** 20
    print(f"round ratios {' '.join(f'{x:.3f}' for x in round_ratios)}; median per-scan add/product "
          f"{np.median(per_scan):.3f}")
    print(f"target memory peak beyond the responses (tracemalloc): {peak:.0f} MiB; the target itself "
          f"{target_mb:.0f} MiB, one scan's responses {a.images * a.neurons * 4 / 2 ** 20:.0f} MiB; "
          f"process max RSS {rss:.0f} MiB")
    print(f"similarity_target: ratio={ratio:.3f} (accumulated {a.images}x{a.images} target / bare float32 "
          f"X@X.T per scan, median of {a.repeats} interleaved rounds) scans={a.scans} neurons={a.neurons} "
          f"images={a.images} target_s={np.median(target_times):.3f} bare_s={np.median(bare_times):.3f} "
          f"min_ratio={round_ratios.min():.3f} peak_mib={peak:.0f}")

if __name__ == "__main__":
    main()
