"""The `neural-reg` command line."""

from __future__ import annotations

import argparse
import sys
import warnings

warnings.filterwarnings("ignore", message=".*datajoint.json.*")
warnings.filterwarnings("ignore", message=".*MariaDB is not officially supported.*")


def _db(args) -> int:
    from .database import PrivateServer, server_up, shared_credentials
    from .settings import load_settings

    settings = load_settings()
    shared = shared_credentials(settings)
    if args.action == "up":
        creds = server_up(settings)
        where = "shared server" if shared else f"private server (data in {settings.home / 'mysql'})"
        print(f"database ready: {creds.user}@{creds.host}:{creds.port}, {where}")
    elif args.action == "down":
        if shared:
            print(f"using the shared server {shared.host}; nothing to stop")
        else:
            print("stopped" if PrivateServer(settings.home).down() else "no private server was running")
    elif args.action == "status":
        if shared:
            print(f"shared server {shared.host}:{shared.port} as {shared.user}")
        else:
            info = PrivateServer(settings.home).status()
            state = "running" if info["running"] else "stopped"
            print(f"private server: {state}, port {info.get('port', '-')}, data {info['data']}")
        print(f"schema prefix: {settings.prefix}")
    return 0


def _ingest(args) -> int:
    from schemas import activate

    from .workflow import ingest_filetree, ingest_simulated

    activate()
    if args.source == "filetree":
        key = ingest_filetree(args.path, animal_id=args.animal, session=args.session, scan_idx=args.scan,
                              image_set=args.image_set)
        print(f"ingested scan {key}")
    else:
        keys = ingest_simulated(n_scans=args.scans, n_neurons=args.neurons, n_images=args.images,
                                n_oracle_images=args.oracle_images, n_repeats=args.repeats, seed=args.seed)
        for key in keys:
            print(f"ingested scan {key}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neural-reg", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    db = sub.add_parser("db", help="start, stop or inspect the database server")
    db.add_argument("action", choices=["up", "down", "status"])
    db.set_defaults(func=_db)

    ingest = sub.add_parser("ingest", help="load recordings into the recording schema (all or nothing)")
    src = ingest.add_subparsers(dest="source", required=True)
    ft = src.add_parser("filetree", help="a Sensorium / neuralpredictors static file tree")
    ft.add_argument("path")
    ft.add_argument("--animal", help="animal id (default: from a static<animal>-<session>-<scan> folder name)")
    ft.add_argument("--session", type=int)
    ft.add_argument("--scan", type=int)
    ft.add_argument("--image-set", help="name of the image set the stimuli belong to (default: the folder name)")
    sim = src.add_parser("simulate", help="simulated scans of a model mouse V1")
    sim.add_argument("--scans", type=int, default=3)
    sim.add_argument("--neurons", type=int, default=500)
    sim.add_argument("--images", type=int, default=1000, help="non-oracle images, each shown once")
    sim.add_argument("--oracle-images", type=int, default=50)
    sim.add_argument("--repeats", type=int, default=10)
    sim.add_argument("--seed", type=int, default=0)
    for p in (ft, sim):
        p.set_defaults(func=_ingest)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .database import DatabaseError
    from .recording.scan_data import RecordingError
    from .settings import SettingsError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (RecordingError, DatabaseError, SettingsError) as err:
        print(f"neural-reg: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
