"""The `neural-reg` command line."""

from __future__ import annotations

import argparse
import sys


def _db(args) -> int:
    from .database import PrivateServer, connect, server_up, shared_credentials, verify_login
    from .settings import load_settings

    settings = load_settings()
    shared = shared_credentials(settings)
    if args.action == "up":
        creds = server_up(settings, restart_outdated=True)
        version = verify_login(creds)  # a wrong password fails here, not at the first query
        where = "shared server" if shared else f"private server (data in {settings.home / 'mysql'})"
        print(f"database ready: {creds.user}@{creds.host}:{creds.port} ({version}), {where}")
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
            print(f"private server: {state}, port {info.get('port', '-')}, data {info['data']}"
                  + ("" if info["locked_down"] or not info["running"] else
                     "; set up by an older version: `neural-reg db up` locks it down"))
        print(f"schema prefix: {settings.prefix}")
    elif args.action == "setup":
        import schemas

        from . import accounts

        connection = connect(settings)
        summary = schemas.setup(settings.prefix, connection)
        print(f"prefix {summary['prefix']}: {len(summary['schemas'])} schemas, {summary['tables']} tables and job "
              f"tables, {len(summary['declared'])} declared now")
        workers = accounts.refresh_worker_grants(connection, settings.prefix)
        if workers is None:
            print("worker grants not refreshed (this account may not read mysql.tables_priv): after new tables, "
                  "the server's root runs `neural-reg db setup` too", file=sys.stderr)
        elif workers:
            print(f"grants of {len(workers)} worker account(s) brought up to date: {', '.join(workers)}")
        print("next: neural-reg db add-user NAME --role analyst|worker|admin")
    elif args.action == "add-user":
        from . import accounts

        password = accounts.add_user(connect(settings), settings.prefix, args.name, args.role, args.host)
        print(password, flush=True)  # the one time it is shown; stored nowhere
        print(f"created {args.name}@{args.host}: {args.role} on the schemas of prefix {settings.prefix}. Its "
              "password, printed on stdout, is shown this once and stored nowhere: put it in your secret store now "
              f"(e.g. {args.name}'s password_file, mode 0600, or WORKER_PASS for docker compose).", file=sys.stderr)
    elif args.action == "remove-user":
        from . import accounts

        removed = accounts.remove_user(connect(settings), args.name, args.host)
        print(f"removed {args.name}@{args.host}" if removed else f"no account {args.name}@{args.host}; nothing to do")
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

    from . import logs, workflow
    from .resilience import WorkerStopped

    logs.setup()
    activate()
    reserve = args.reserve_jobs or args.retry_failed  # a retried key that fails again is recorded again
    if args.retry_failed:
        print(f"{workflow.retry_failed(args.tables)} failed job(s) back to pending; trying them again")
    try:
        summary = workflow.populate(args.tables, reserve_jobs=reserve, max_calls=args.max_calls)
    except WorkerStopped as stopped:
        print(f"stopped by {stopped.signame}; the key in progress is back to pending")
        return 0
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
    from .jobs import format_age, format_holder, format_key

    activate()
    rows = workflow.status(args.tables)
    width = max(len(r["table"]) for r in rows)
    print(f"{'table':<{width}}  {'done':>6} {'to do':>6} {'reserved':>8} {'failed':>6} {'retrying':>8}")
    for r in rows:
        print(f"{r['table']:<{width}}  {r['done']:>6} {r['to_do']:>6} {r['reserved']:>8} {r['failed']:>6} "
              f"{r['retrying']:>8}")
    for r in rows:
        for job in r["reservations"]:
            print(f"{r['table']} {format_key(job['key'])}: reserved {format_age(job['age_s'])} ago by "
                  f"{format_holder(job)}")
    for r in rows:
        if r["failed"]:
            print(f"\n{r['table']}: {r['failed']} failed; last error for {r['failed_key']}:\n  {r['last_error']}\n"
                  f"  retry with: neural-reg populate {r['table'].split('.')[-1]} --retry-failed   "
                  f"(or `neural-reg jobs retry {r['table'].split('.')[-1]}` for the workers)")
    if any(r["retrying"] for r in rows):
        print("\nretrying: failed keys put back to pending, shown until they succeed (`neural-reg jobs list`)")
    return 0


def _worker(args, tables=None) -> int:
    """`neural-reg worker`; ``tables`` replaces the pipeline's tables (then no schema is activated)."""
    from . import logs, workflow

    logs.setup()
    if tables is None:
        from schemas import activate

        activate()
    result = workflow.work(args.tables, tables=tables, once=args.once, sleep=args.sleep, max_calls=args.max_calls,
                           stale_after=args.stale_after, heartbeat=args.heartbeat, max_backoff=args.max_backoff)
    computed, failed = sum(result.computed.values()), sum(len(e) for e in result.errors.values())
    ending = f"stopped by {result.stopped}" if result.stopped else "done"
    print(f"worker {ending}: {computed} computed, {failed} failed, {result.reclaimed} stale reservation(s) "
          f"reclaimed, {len(result.released)} handed back", flush=True)
    return 0


def _jobs(args) -> int:
    from schemas import activate

    from . import workflow
    from .jobs import format_age, format_holder, format_key

    activate()
    if args.action == "list":
        rows = workflow.jobs_list(args.tables)
        for job in rows:
            who = format_holder(job) if job["status"] == "reserved" else (
                f"{job['host']} pid {job['pid']}" if job["host"] else "")
            error = f"  {job['error_message']}" if job["error_message"] else ""
            print(f"{job['table']}  {format_key(job['key'])}  {job['status']}  {format_age(job['age_s'])}"
                  f"{'  ' + who if who else ''}{error}")
        print(f"{len(rows)} job(s)")
    elif args.action == "refresh":
        reclaimed = workflow.jobs_refresh(args.tables, stale_after=args.stale_after)
        for job in reclaimed:
            print(f"{job['table']}  {format_key(job['key'])}: back to pending ({job['reason']})")
        print(f"{len(reclaimed)} stale reservation(s) reclaimed")
    elif args.action == "retry":
        print(f"{workflow.retry_failed(args.tables)} failed job(s) back to pending (shown as retrying until they "
              "succeed); workers take them, or: neural-reg populate --reserve-jobs")
    else:
        print(f"{workflow.jobs_clear(args.tables)} error row(s) deleted")
    return 0


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


def _export(args) -> int:
    from schemas import activate

    from . import export

    activate()
    key = export.parse_key(args.key)
    if args.what == "classifier":
        pt, meta = export.export_classifier(key, args.file, overwrite=args.overwrite)
        print(f"classifier exported: {pt} (state dict, torch.load(..., weights_only=True)) and {meta} "
              "(configuration, lineage, how to build it)")
    else:
        path = export.export_scan(key, args.file, overwrite=args.overwrite)
        print(f"scan exported: {path} (NWB; read back with neural_reg.export.read_scan_nwb)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neural-reg", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error, not just its message")
    sub = parser.add_subparsers(dest="command", required=True)

    db = sub.add_parser("db", help="the database: start, stop, inspect; set up a prefix; accounts and roles")
    db_actions = db.add_subparsers(dest="action", required=True)
    db_actions.add_parser("up", help="start the private server (or reach the shared one) and check the login")
    db_actions.add_parser("down", help="stop the private server")
    db_actions.add_parser("status", help="which server, whether it runs, and the schema prefix")
    db_actions.add_parser("setup", help="declare every schema and job table of the prefix, once (an admin), so "
                                        "that workers and analysts need no DDL")
    add_user = db_actions.add_parser("add-user", help="create an account with a role on the prefix's schemas; its "
                                                      "generated password is printed once, to stdout")
    add_user.add_argument("name")
    add_user.add_argument("--role", required=True, choices=["analyst", "worker", "admin"],
                          help="analyst: read; worker: read, and write computed and job tables; admin: everything "
                               "on the prefix's schemas")
    add_user.add_argument("--host", default="%", help="where it may connect from (default %%: anywhere)")
    remove_user = db_actions.add_parser("remove-user", help="drop an account and its grants")
    remove_user.add_argument("name")
    remove_user.add_argument("--host", default="%")
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
    pop.add_argument("--retry-failed", action="store_true",
                     help="put the tables' failed keys back to pending first and run them (with --reserve-jobs)")
    pop.set_defaults(func=_populate)

    st = sub.add_parser("status", help="per table: done, to do, reserved, failed, retrying; reservations and errors")
    st.add_argument("tables", nargs="*")
    st.set_defaults(func=_status)

    from .jobs import DEFAULT_HEARTBEAT, DEFAULT_STALE_AFTER

    wk = sub.add_parser("worker", help="populate with job reservation until stopped (a lab's worker)")
    wk.add_argument("tables", nargs="*")
    wk.add_argument("--max-calls", type=int)
    wk.add_argument("--sleep", type=float, default=60.0, help="seconds to wait when nothing is left to do")
    wk.add_argument("--once", action="store_true", help="one pass, then exit")
    wk.add_argument("--stale-after", type=float, default=DEFAULT_STALE_AFTER,
                    help="seconds without a heartbeat after which another worker's reservation is taken over "
                         f"(default {DEFAULT_STALE_AFTER:g}; a dead pid on this host: at once)")
    wk.add_argument("--heartbeat", type=float, default=DEFAULT_HEARTBEAT,
                    help=f"seconds between this worker's heartbeats (default {DEFAULT_HEARTBEAT:g})")
    wk.add_argument("--max-backoff", type=float, default=30.0,
                    help="longest wait between attempts to reach a database that went away (default 30)")
    wk.set_defaults(func=_worker)

    jb = sub.add_parser("jobs", help="the job tables: list, reclaim stale reservations, retry or clear failures")
    jb.add_argument("action", nargs="?", default="list", choices=["list", "refresh", "retry", "clear"],
                    help="list (default): every job with its key, status, age, host, pid, error; refresh: stale "
                         "reservations back to pending; retry: failed keys back to pending (kept visible as "
                         "retrying); clear: delete the error rows")
    jb.add_argument("tables", nargs="*")
    jb.add_argument("--stale-after", type=float, default=DEFAULT_STALE_AFTER,
                    help=f"refresh: seconds without a heartbeat that make a reservation stale "
                         f"({DEFAULT_STALE_AFTER:g})")
    jb.set_defaults(func=_jobs)

    rp = sub.add_parser("report", help="the paper's figures and an HTML page from the tables")
    rp.add_argument("outdir")
    rp.set_defaults(func=_report)

    dm = sub.add_parser("demo", help="the whole pipeline on the embedded default")
    dm.add_argument("--report", default="reports/demo", help="where to write the report")
    dm.set_defaults(func=_demo)
    exp = sub.add_parser("export", help="a trained classifier as a PyTorch state dict + JSON, or a scan as NWB")
    what = exp.add_subparsers(dest="what", required=True)
    for name, help_, example in (
            ("classifier", "FILE.pt (plain state dict) and FILE.json (configuration, lineage) beside it",
             "task=digits arch=resnet18-narrow train_name=demo-cpu regulariser_name=demo-neural-alpha10 "
             "classifier_seed=0 model.pt"),
            ("scan", "FILE.nwb: responses, trials, behaviour, neurons and images in NWB",
             "animal_id=sim0 session=1 scan_idx=1 scan.nwb")):
        p = what.add_parser(name, help=help_, description=f"{help_}. Example: neural-reg export {name} {example}")
        p.add_argument("key", nargs="+", metavar="ATTR=VALUE", help="the key, as attr=value pairs")
        p.add_argument("file", help="the output file")
        p.add_argument("--overwrite", action="store_true", help="replace the file if it exists")
        p.set_defaults(func=_export)
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
