"""The `neural-reg` command line."""

from __future__ import annotations

import argparse
import sys


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


def _populate(args) -> int:
    from schemas import activate

    from . import workflow

    activate()
    if args.retry_failed:
        print(f"cleared {workflow.retry_failed(args.tables)} failed job(s); trying them again")
    summary = workflow.populate(args.tables, reserve_jobs=args.reserve_jobs, max_calls=args.max_calls)
    failed = 0
    for table, (done, errors) in summary.items():
        print(f"{table}: {done} computed" + (f", {len(errors)} failed" if errors else ""))
        failed += len(errors)
    if failed:
        print("see `neural-reg status` for the errors", file=sys.stderr)
    return 1 if failed else 0


def _status(args) -> int:
    from schemas import activate

    from . import workflow

    activate()
    rows = workflow.status(args.tables)
    width = max(len(r["table"]) for r in rows)
    print(f"{'table':<{width}}  {'done':>6} {'to do':>6} {'reserved':>8} {'failed':>6}")
    for r in rows:
        print(f"{r['table']:<{width}}  {r['done']:>6} {r['to_do']:>6} {r['reserved']:>8} {r['failed']:>6}")
    for r in rows:
        if r["failed"]:
            print(f"\n{r['table']}: {r['failed']} failed; last error for {r['failed_key']}:\n  {r['last_error']}\n"
                  f"  retry with: neural-reg populate {r['table'].split('.')[-1]} --retry-failed")
    return 0


def _worker(args) -> int:
    import time

    from schemas import activate

    from . import workflow

    activate()
    while True:
        summary = workflow.populate(args.tables, reserve_jobs=True, max_calls=args.max_calls)
        if args.once:
            return 0
        if not any(done for done, _ in summary.values()):
            time.sleep(args.sleep)


def _report(args) -> int:
    from schemas import activate

    from .report import build_report

    activate()
    print(f"report: {build_report(args.outdir)}")
    return 0


def _demo(args) -> int:
    from schemas import activate

    from . import demo

    activate()
    demo.run(report_dir=args.report)
    return 0


def _group(args) -> int:
    from schemas import activate, oracle, recording

    activate()
    scans = recording.Scan & ([{"animal_id": a} for a in args.animal] if args.animal else {})
    key = oracle.ScanGroup.create(args.name, scans.keys(), args.description)
    print(f"scan group {key['scan_group']}: {len(oracle.ScanGroup.Member & key)} scans")
    return 0


def _setup_paper(args) -> int:
    from schemas import activate

    from .paper import setup_paper

    activate()
    summary = setup_paper(args.scan_group, task=args.task, arch=args.arch, seeds=args.seeds, alphas=args.alphas,
                          vgg_weights=args.vgg_weights)
    _print_entered(summary)
    return 0


def _print_entered(summary: dict) -> None:
    print(f"entered {len(summary['targets'])} targets, {len(summary['regularisers'])} regularisers and "
          f"{summary['trainings']} classifiers to train" +
          (f", scored by attack set {summary['attack_set']['attack_set_hash'][:8]}" if summary["attack_set"] else ""))
    print("next: neural-reg populate (or start workers: neural-reg worker)")


def _experiment(args) -> int:
    from .experiment import load_spec, resolve

    spec = load_spec(args.file)
    if args.action == "check":
        plan = resolve(spec)  # needs no database
        print(f"{args.file}: valid; {len(plan.targets)} targets, {len(plan.regularisers)} regularisers, "
              f"{len(plan.attacks)} attacks")
        return 0
    from schemas import activate

    from .experiment import enter_experiment

    activate()
    _print_entered(enter_experiment(spec))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neural-reg", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error, not just its message")
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

    grp = sub.add_parser("group", help="a scan group: scans whose similarities are averaged into a target")
    grp.add_argument("name")
    grp.add_argument("--animal", action="append", help="only scans of this animal (repeatable; default: all)")
    grp.add_argument("--description", default="")
    grp.set_defaults(func=_group)

    paper = sub.add_parser("setup-paper", help="enter the paper's whole experiment for a scan group, in one call")
    paper.add_argument("--scan-group", required=True)
    paper.add_argument("--task", default="cifar10-gray")
    paper.add_argument("--arch", default="resnet18")
    paper.add_argument("--seeds", type=int, default=5)
    paper.add_argument("--alphas", type=float, nargs="+", default=[20.0])
    paper.add_argument("--vgg-weights", help="torchvision vgg19-dcbb9e9d.pth, for the VGG control target")
    paper.set_defaults(func=_setup_paper)

    ex = sub.add_parser("experiment", help="enter a whole experiment from a specification file (JSON)")
    ex.add_argument("action", choices=["enter", "check"],
                    help="enter: check, resolve and enter every configuration in one transaction; check: only "
                         "check and resolve")
    ex.add_argument("file", help="a JSON specification, or 'demo' / 'paper' (neural_reg/experiments/)")
    ex.set_defaults(func=_experiment)

    pop = sub.add_parser("populate", help="compute what is missing, in dependency order")
    pop.add_argument("tables", nargs="*", help="tables to populate (default: all), e.g. OracleStats Target")
    pop.add_argument("--reserve-jobs", action="store_true", help="coordinate with other workers via job tables")
    pop.add_argument("--max-calls", type=int, help="at most this many keys per table")
    pop.add_argument("--retry-failed", action="store_true", help="clear the tables' failed jobs first")
    pop.set_defaults(func=_populate)

    st = sub.add_parser("status", help="per table: done, to do, reserved, failed, with the last error")
    st.add_argument("tables", nargs="*")
    st.set_defaults(func=_status)

    wk = sub.add_parser("worker", help="populate with job reservation until stopped (a lab's worker)")
    wk.add_argument("tables", nargs="*")
    wk.add_argument("--max-calls", type=int)
    wk.add_argument("--sleep", type=float, default=60.0, help="seconds to wait when nothing is left to do")
    wk.add_argument("--once", action="store_true", help="one pass, then exit")
    wk.set_defaults(func=_worker)

    rp = sub.add_parser("report", help="the paper's figures and an HTML page from the tables")
    rp.add_argument("outdir")
    rp.set_defaults(func=_report)

    dm = sub.add_parser("demo", help="the whole pipeline on the embedded default")
    dm.add_argument("--report", default="reports/demo", help="where to write the report")
    dm.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    from pipeline.errors import NeuralRegError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except NeuralRegError as err:
        if args.debug:
            raise
        print(f"neural-reg: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
