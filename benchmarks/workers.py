"""Populate throughput with 1 and 2 worker processes on CPU-bound keys, and the job-reservation cost per key.

Throughput: N keys whose make burns a fixed amount of pure-Python CPU (about --key-seconds each), computed by one
worker process, then (the same N keys again, rows deleted) by two worker processes started together; each
process is `neural-reg worker --once` on the benchmark's table (``neural_reg.workflow.work``), started and
connected first, then released at the same instant, so the wall time is the populate itself. The ratio of the
two throughputs is the scaling (on an n-core machine at most min(2, n); the database server shares the CPUs).

Reservation overhead: M keys whose make does nothing, populated in this process by the worker's code path
(job table: refresh, reserve, heartbeat, complete) and by DataJoint's plain populate (no job table); the
difference per key is what coordinating workers costs. DataJoint's own ``populate(reserve_jobs=True)`` is
shown beside it. Uses its own schema, dropped at the end.
"""

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

import neural_reg  # noqa: E402,F401  (its warning filters, before DataJoint)


def burn(iterations: int) -> int:
    total = 0
    for i in range(iterations):
        total += i * i % 7
    return total


def declare(schema):
    import datajoint as dj

    @schema
    class Item(dj.Manual):
        definition = """
        item : int32
        ---
        iterations : int64
        """

    @schema
    class Burn(dj.Computed):
        definition = """
        -> Item
        ---
        total : int64
        """

        def make(self, key):
            self.insert1(dict(key, total=burn(int((Item & key).fetch1("iterations")))))

    @schema
    class Noop(dj.Computed):
        definition = """
        -> Item
        """

        def make(self, key):
            self.insert1(key)

    return Item, Burn, Noop


def child(database: str, ready: str, go: str) -> int:
    """A worker process: connect, say ready, wait for the go, then one pass of the worker over Burn."""
    import datajoint as dj

    from neural_reg import workflow
    from neural_reg.database import connect

    _, burn_table, _ = declare(dj.Schema(database, connection=connect()))
    Path(ready).touch()
    while not Path(go).exists():
        time.sleep(0.005)
    workflow.work(tables=[burn_table], once=True)
    return 0


def run_bare(n: int, keys: int, iterations: int) -> float:
    """Wall time of the same CPU work in n bare processes (no database): the machine's own scaling."""
    import multiprocessing as mp

    with mp.get_context("fork").Pool(n) as pool:
        pool.map(int, [0] * n)  # started before the clock
        t0 = time.perf_counter()
        pool.map(burn, [iterations] * keys, chunksize=1)
        return time.perf_counter() - t0


def run_workers(n: int, database: str, tmp: Path) -> float:
    """Wall time of n worker processes populating Burn, from the go signal to the last exit."""
    tmp.mkdir(parents=True, exist_ok=True)
    go = tmp / f"go-{n}"
    procs, readies = [], []
    for i in range(n):
        ready = tmp / f"ready-{n}-{i}"
        readies.append(ready)
        procs.append(subprocess.Popen([sys.executable, str(HERE), "--child", database, str(ready), str(go)],
                                      cwd=ROOT))
    while not all(r.exists() for r in readies):
        if any(p.poll() is not None for p in procs):
            raise SystemExit("a worker process exited before it was ready")
        time.sleep(0.01)
    t0 = time.perf_counter()
    go.touch()
    codes = [p.wait() for p in procs]
    elapsed = time.perf_counter() - t0
    if any(codes):
        raise SystemExit(f"worker exit codes {codes}")
    return elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keys", type=int, default=24, help="CPU-bound keys per throughput run")
    parser.add_argument("--key-seconds", type=float, default=0.25, help="CPU per key (calibrated here)")
    parser.add_argument("--overhead-keys", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5, help="1- and 2-worker runs, alternating; medians")
    parser.add_argument("--child", nargs=3, metavar=("DATABASE", "READY", "GO"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sys.exit(child(*args.child))

    import tempfile

    import datajoint as dj

    from neural_reg import workflow
    from neural_reg.database import connect

    # calibrate: iterations for about key-seconds of CPU
    t0 = time.perf_counter()
    burn(1_000_000)
    iterations = int(1_000_000 * args.key_seconds / (time.perf_counter() - t0))

    connection = connect()
    schema = dj.Schema(f"bench_{secrets.token_hex(3)}_workers", connection=connection)
    try:
        item, burn_table, noop = declare(schema)
        item.insert([{"item": i, "iterations": iterations} for i in range(args.keys)])
        load = os.getloadavg()[0]
        with tempfile.TemporaryDirectory() as tmp:
            runs, bare = {1: [], 2: []}, {1: [], 2: []}
            for round_ in range(args.rounds):  # alternating, so a change in the machine's load hits both
                for n in (1, 2):
                    burn_table.delete_quick()
                    runs[n].append(run_workers(n, schema.database, Path(tmp) / f"{round_}"))
                    assert len(burn_table()) == args.keys, f"{len(burn_table())} of {args.keys} keys computed"
                    bare[n].append(run_bare(n, args.keys, iterations))
        times = {n: statistics.median(t) for n, t in runs.items()}
        rate = {n: args.keys / t for n, t in times.items()}
        ratios = [a / b for a, b in zip(runs[1], runs[2])]
        bare_ratio = statistics.median(a / b for a, b in zip(bare[1], bare[2]))

        # reservation overhead: the same no-op keys, three ways, in this process
        extra = [{"item": i, "iterations": 0} for i in range(args.keys, args.keys + args.overhead_keys)]
        item.insert(extra)
        restriction = f"item >= {args.keys}"

        def timed(fn):
            (noop & restriction).delete_quick()
            t = time.perf_counter()
            fn()
            return (time.perf_counter() - t) / args.overhead_keys * 1e3

        burn_table.delete_quick()
        (item & f"item < {args.keys}").delete_quick()
        plain = timed(lambda: noop.populate())
        ours = timed(lambda: workflow.work(tables=[noop], once=True))
        theirs = timed(lambda: noop.populate(reserve_jobs=True))
    finally:
        schema.drop(prompt=False)

    cores = os.cpu_count()
    print(f"{args.keys} CPU-bound keys of {args.key_seconds:.2f} s each, {cores} CPU core(s), server on this machine, "
          f"load average {load:.1f} at the start")
    for n in (1, 2):
        print(f"  {n} worker process{'es' if n > 1 else ''}: median {times[n]:.2f} s, {rate[n]:.2f} keys/s "
              f"(runs: {', '.join(f'{t:.2f}' for t in runs[n])} s)")
    print(f"  ratio per round (paired; its median is the ratio below): {', '.join(f'{r:.2f}' for r in ratios)}")
    print(f"  the same CPU work in 1 and 2 bare processes (no database, no jobs): ratio {bare_ratio:.2f}, "
          "what this machine allows")
    print(f"reservation overhead on {args.overhead_keys} no-op keys: plain populate {plain:.2f} ms/key; neural-reg "
          f"worker {ours:.2f} ms/key (+{ours - plain:.2f}); DataJoint reserve_jobs {theirs:.2f} ms/key "
          f"(+{theirs - plain:.2f})")
    print(f"workers: ratio={statistics.median(ratios):.2f} (2 workers / 1 worker keys/s) keys_per_s_1={rate[1]:.2f} "
          f"keys_per_s_2={rate[2]:.2f} bare_process_ratio={bare_ratio:.2f} "
          f"reservation_overhead_ms_per_key={ours - plain:.2f} cores={cores} load={load:.1f}")


if __name__ == "__main__":
    main()
