"""Ingest and load-back time of a paper-size scan (6000 trials x 8000 neurons, about 200 MB of responses).

Prints the wall time of `ingest_scan` (validation, images, 6000 trial rows, response blocks, one transaction)
and of loading the trials x neurons matrix back in one query, against reading the same matrix from a local
.npy file (the floor for getting 200 MB into memory). Uses its own schema prefix, dropped at the end.
"""

import argparse
import secrets
import tempfile
import time
import warnings

import numpy as np

warnings.filterwarnings("ignore")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--neurons", type=int, default=8000)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--oracle-images", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    import schemas
    from pipeline.recording.simulator import simulate_scans
    from schemas import recording

    scan = simulate_scans(n_scans=1, n_neurons=args.neurons, n_images=args.images,
                          n_oracle_images=args.oracle_images, n_repeats=args.repeats, seed=3)[0]
    scan.extra.clear()
    prefix = f"bench_{secrets.token_hex(3)}"
    connection = schemas.activate(prefix)
    try:
        t0 = time.perf_counter()
        key = recording.ingest_scan(scan, {"animal_id": "bench", "session": 1, "scan_idx": 1}, "bench", "simulator")
        ingest = time.perf_counter() - t0
        t0 = time.perf_counter()
        matrix = recording.load_responses(key)
        load = time.perf_counter() - t0
        with tempfile.NamedTemporaryFile(suffix=".npy") as f:
            np.save(f.name, matrix)
            t0 = time.perf_counter()
            np.load(f.name)
            floor = time.perf_counter() - t0
    finally:
        schemas.drop_all(prefix, connection)
    mb = matrix.nbytes / 2**20
    print(f"scan: {matrix.shape[0]} trials x {matrix.shape[1]} neurons, {mb:.0f} MiB of responses")
    print(f"ingest (validate + write, one transaction): {ingest:.1f} s")
    print(f"load the trials x neurons matrix (one query): {load:.2f} s; np.load of the same .npy: {floor:.2f} s")
    print(f"ingest: ratio={load / floor:.2f} (one-query load / np.load from a local file) "
          f"ingest_s={ingest:.1f} load_s={load:.2f}")


if __name__ == "__main__":
    main()
