"""Paper-size rows in the table (``<ndarray>`` LONGBLOBs, as before) and in the store (``<npfile@bulk>``), side by
side in one run: insert and fetch of a 6000 x 8000 float32 scan (in 32 MB row blocks, as recording.Responses
keeps it) and of a 5000 x 5000 float32 target (one row, as target.Target keeps it).

Both ways run against the same server in one process, on tables of their own under a fresh schema prefix
(dropped at the end, objects included); the store is whatever this machine's store setting is (by default the
folder <home>/store, next to the private server's data; NEURALREG_STORE points it elsewhere, e.g. a bucket).
Each measurement is the best of --repeats runs. The headline is the total in-table time over the total store time.
"""

import argparse
import secrets
import time
import warnings

import numpy as np

warnings.filterwarnings("ignore")

BLOCK_BYTES = 32 * 2**20  # as schemas.recording


def timed(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=6000)
    parser.add_argument("--neurons", type=int, default=8000)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import datajoint as dj

    import schemas
    from neural_reg import stores

    rng = np.random.default_rng(0)
    scan = rng.gamma(2.0, 1.0, size=(args.trials, args.neurons)).astype(np.float32)
    target = rng.uniform(-1, 1, size=(args.images, args.images)).astype(np.float32)
    block_rows = max(1, BLOCK_BYTES // (4 * args.neurons))
    starts = list(range(0, args.trials, block_rows))

    prefix = f"bench_{secrets.token_hex(3)}"
    connection = schemas.activate(prefix)  # connects, configures the store `bulk`
    spec = dj.config.stores[stores.STORE]
    database = f"{prefix}_storage"
    schema = dj.Schema(database, connection=connection)
    tables = {}
    for way, column in (("table", "<ndarray>"), ("store", "<npfile@bulk>")):
        tables[way, "scan"] = schema(type(f"Scan{way.title()}", (dj.Manual,), {"definition": f"""
            block : int16
            ---
            first_row : int32
            responses : {column}
            """}))
        tables[way, "target"] = schema(type(f"Target{way.title()}", (dj.Manual,), {"definition": f"""
            target_id : int16
            ---
            similarity : {column}
            """}))

    def insert_scan(table):
        table.delete_quick()
        with connection.transaction:
            for b, start in enumerate(starts):
                table.insert1({"block": b, "first_row": start, "responses": scan[start:start + block_rows]})

    def fetch_scan(table):
        return np.concatenate(list(table.to_arrays("responses", order_by="block")), axis=0)

    def insert_target(table):
        table.delete_quick()
        table.insert1({"target_id": 1, "similarity": target})

    def fetch_target(table):
        return (table & {"target_id": 1}).fetch1("similarity")

    seconds = {}
    try:
        for what, insert, fetch, data in (("scan", insert_scan, fetch_scan, scan),
                                          ("target", insert_target, fetch_target, target)):
            for way in ("table", "store"):  # side by side, each measured on its own table
                table = tables[way, what]()
                seconds[way, what, "insert"], _ = timed(lambda: insert(table), args.repeats)
                seconds[way, what, "fetch"], back = timed(lambda: fetch(table), args.repeats)
                assert back.dtype == data.dtype and np.array_equal(back, data), f"{way} {what}: not what was written"
                del back
    finally:  # the tables and every object written (repeats leave the replaced rows' objects until here)
        schema.drop(prompt=False)
        stores.drop_objects(database, config=connection._config)
        schemas.drop_all(prefix, connection)

    store_label = stores.describe(spec)
    print(f"scan {args.trials} x {args.neurons} float32 ({scan.nbytes / 2**20:.0f} MiB, {len(starts)} rows of "
          f"<= {block_rows} trials); target {args.images} x {args.images} float32 ({target.nbytes / 2**20:.0f} MiB, "
          f"one row); store {spec['protocol']}: {store_label}; best of {args.repeats}")
    print(f"{'':8} {'in-table insert':>16} {'fetch':>8} {'store insert':>14} {'fetch':>8}")
    for what in ("scan", "target"):
        print(f"{what:8} {seconds['table', what, 'insert']:>14.2f} s {seconds['table', what, 'fetch']:>6.2f} s "
              f"{seconds['store', what, 'insert']:>12.2f} s {seconds['store', what, 'fetch']:>6.2f} s")
    table_total = sum(v for (way, _, _), v in seconds.items() if way == "table")
    store_total = sum(v for (way, _, _), v in seconds.items() if way == "store")
    parts = " ".join(f"{way}_{what}_{op}_s={seconds[way, what, op]:.2f}" for way in ("table", "store")
                     for what in ("scan", "target") for op in ("insert", "fetch"))
    print(f"storage: ratio={table_total / store_total:.2f} (in-table seconds / store seconds, insert + fetch of a "
          f"paper-size scan and target) {parts}")


if __name__ == "__main__":
    main()
