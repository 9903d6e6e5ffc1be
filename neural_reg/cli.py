"""neural-reg: the pipeline of Li et al. 2019 (neural regularisation of classifiers) on DataJoint.

Every command has its own help, with an example: neural-reg COMMAND --help.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _db(args) -> int:
    import dataclasses
    import os

    from .database import connect, private_server, server_up, shared_credentials, verify_login
    from .settings import load_settings

    settings = load_settings()
    if getattr(args, "backend", None):
        settings = dataclasses.replace(settings, backend=args.backend)
    shared = shared_credentials(settings)
    if args.action == "up":
        creds = server_up(settings, restart_outdated=True)
        version = verify_login(creds)  # a wrong password fails here, not at the first query
        server = private_server(settings)
        where = "shared server" if shared else f"private {settings.backend} server (data in {server.datadir})"
        print(f"database ready: {creds.user}@{creds.host}:{creds.port} ({version}), {where}")
        if (not shared and args.backend and args.backend != load_settings().backend
                and not os.environ.get("DJ_BACKEND")):
            print(f"the other commands use the backend of the settings: export DJ_BACKEND={args.backend} (or set "
                  f"database.backend in neural-reg.json) to use this server", file=sys.stderr)
    elif args.action == "down":
        if shared:
            print(f"using the shared server {shared.host}; nothing to stop")
        else:
            print("stopped" if private_server(settings).down() else "no private server was running")
    elif args.action == "status":
        if shared:
            print(f"shared {settings.backend} server {shared.host}:{shared.port} as {shared.user} (host from "
                  f"{_host_source(settings)})")
        else:
            info = private_server(settings).status()
            state = "running" if info["running"] else "stopped"
            print(f"private {settings.backend} server: {state}, port {info.get('port', '-')}, data {info['data']}"
                  + ("" if info["locked_down"] or not info["running"] else
                     "; set up by an older version: `neural-reg db up` locks it down"))
        print(f"schema prefix: {settings.prefix}")
    elif args.action == "grant":
        from . import accounts

        n = accounts.grant_role(connect(settings), settings.prefix, args.name, args.role, args.host)
        print(f"{args.name}@{args.host}: {args.role} on the schemas of prefix {settings.prefix} ({n} grants)")
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
    elif args.action == "drop":
        return _db_drop(args, settings)
    elif args.action == "remove-user":
        from . import accounts

        removed = accounts.remove_user(connect(settings), args.name, args.host)  # PostgreSQL: its privileges too
        print(f"removed {args.name}@{args.host}" if removed else f"no account {args.name}@{args.host}; nothing to do")
    return 0


def _host_source(settings) -> str:
    """Where the shared server's host came from (README, "Configuration: which setting wins")."""
    import os

    if os.environ.get("DJ_HOST"):
        return "DJ_HOST"
    try:
        if settings.config_file and json.loads(settings.config_file.read_text()).get("database", {}).get("host"):
            return str(settings.config_file)
    except (OSError, ValueError, AttributeError):
        pass
    return str(settings.datajoint_file or "settings")


def _db_drop(args, settings) -> int:
    import schemas

    from . import delete
    from .database import connect
    from .settings import check_prefix

    prefix = check_prefix(args.prefix, "PREFIX")
    connection = connect(settings)
    found = delete.prefix_schemas(prefix, connection)
    if not found:
        print(f"prefix {prefix}: no schemas on this server; nothing to drop")
        return 0
    rows = sum(n for _, tables in found for _, n in tables)
    print(f"dropping prefix {prefix} takes {len(found)} schema(s), {rows} row(s) in all (downstream first):")
    print(delete.format_schemas(found))
    if prefix == settings.prefix:
        question = (f"{prefix} is the prefix this installation uses (NEURALREG_PREFIX / neural-reg.json). Type it "
                    "to drop it:")
        expected = (prefix,)
    else:
        question, expected = f"drop these {len(found)} schema(s)? [y/N]", ("y", "yes")
    if not delete.confirm(question, yes=args.yes, expected=expected):
        print("nothing dropped")
        return 1
    schemas.drop_all(prefix, connection)
    print(f"dropped {len(found)} schema(s) of prefix {prefix}")
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
    from .resilience import WorkerStopped

    _configure_logging(args)
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
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
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
    from . import workflow

    _configure_logging(args)  # again: tests call this function without main
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


def _check_attacks(args) -> int:
    from schemas import activate

    from .attack_check import check_scores, format_rows

    activate()
    rows = check_scores(args.attack_set, limit=args.classifiers, n_samples=args.samples, norms=args.norms,
                        rtol=args.rtol, restarts=args.restarts, steps=args.steps, seed=args.seed,
                        ensembles=args.ensembles)
    print(format_rows(rows, args.rtol))
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
        control = ", an adversarially trained positive control" if plan.adversarial_train else ""
        print(f"{args.file}: valid; {len(plan.targets)} targets, {len(plan.regularisers)} regularisers{control}, "
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




def _delete(args) -> int:
    from schemas import activate

    from . import delete, export
    from .logs import format_key

    activate()
    key = export.parse_key(args.key)
    label, expr = delete.resolve(args.what, key)
    rows = delete.cascade(expr, args.part_integrity)
    total = sum(n for _, _, n in rows)
    print(f"deleting {label} {format_key(key)} takes {total} row(s), with everything downstream of it:")
    print(delete.format_cascade(rows))
    if args.part_integrity == "enforce":
        delete.check_part_integrity(rows)
    if args.dry_run:
        print("dry run: nothing deleted")
        return 0
    if not delete.confirm(f"delete these {total} row(s)? [y/N]", yes=args.yes):
        print("nothing deleted")
        return 1
    delete.delete(expr, args.part_integrity)
    print(f"deleted {total} row(s) from {len(rows)} table(s)")
    return 0


def _diagram(args) -> int:
    from schemas import activate

    from . import diagram

    diagram.check_target(args.file)  # a wrong suffix or no `dot`: said before connecting
    activate()
    print(f"diagram: {diagram.write(args.file, direction=args.direction)}")
    return 0


# -------------------------------------------------------------------------------- the parser
class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and examples as written; an option's default shown unless its help already says it (or it is
    empty: None, False, [])."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if ("default" not in text.lower() and default is not argparse.SUPPRESS and default not in (None, False)
                and default != [] and (action.option_strings or action.nargs in (argparse.OPTIONAL,))):
            text += " (default: %(default)s)"
        return text


def _static_names(module: str, variable: str) -> list[str]:
    """The keys of a dict (or the items of a tuple) assigned to ``variable`` in ``module``'s source, read without
    importing it: the help must not wait for torch. tests/unit/test_cli.py checks them against the imports."""
    path = importlib.util.find_spec(module).origin
    for node in ast.parse(Path(path).read_text()).body:
        targets = [node.target] if isinstance(node, ast.AnnAssign) else getattr(node, "targets", [])
        if any(isinstance(t, ast.Name) and t.id == variable for t in targets) and node.value is not None:
            items = node.value.keys if isinstance(node.value, ast.Dict) else getattr(node.value, "elts", [])
            return [item.value for item in items if isinstance(item, ast.Constant)]
    return []


def task_names() -> list[str]:
    return _static_names("pipeline.classifier.tasks", "TASKS")


def arch_names() -> list[str]:
    return _static_names("pipeline.classifier.resnet", "ARCHITECTURES")


def populate_table_names() -> list[str]:
    """Every auto-populated table, in dependency order (each schema module's POPULATE_ORDER)."""
    from schemas import SCHEMA_NAMES  # light: imports no schema module

    return [f"{name}.{table}" for name in SCHEMA_NAMES
            for table in _static_names(f"schemas.{name}", "POPULATE_ORDER")]


def version() -> str:
    """'neural-reg 0.1.0' and, in a git checkout, ' (commit abc1234)'."""
    from pipeline.version import code_version

    info = code_version()
    text = f"neural-reg {info['version'] or '(not installed)'}"
    return text + (f" (commit {info['git_commit'][:7]})" if info["git_commit"] else "")


class _Version(argparse.Action):
    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version())
        parser.exit()


def _add(sub, name: str, help_: str, examples: list[str], description: str | None = None):
    """A (sub)command with its one-line help, a description and its examples."""
    lines = "\n".join(f"  {e}" for e in examples)
    return sub.add_parser(name, help=help_, description=description or help_[0].upper() + help_[1:] + ".",
                          epilog=f"example{'s' if len(examples) > 1 else ''}:\n{lines}", formatter_class=_Formatter)


def _tables_help(what: str) -> str:
    return f"{what} (default: all), by class name or module.Class, any case: {', '.join(populate_table_names())}"


def build_parser() -> argparse.ArgumentParser:
    from .delete import WHAT
    from .jobs import DEFAULT_HEARTBEAT, DEFAULT_STALE_AFTER
    from .logs import LEVELS

    parser = argparse.ArgumentParser(
        prog="neural-reg", description=__doc__, formatter_class=_Formatter,
        epilog="examples:\n  neural-reg demo                      # the whole pipeline on the embedded default\n"
               "  neural-reg experiment enter demo && neural-reg populate\n"
               "  neural-reg --log-level DEBUG --no-progress worker > worker.log 2>&1")
    parser.add_argument("--version", action=_Version, help="the version (and the git commit of a checkout), then exit")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error, not just its message")
    parser.add_argument("--log-level", type=str.upper, choices=LEVELS, default=None,
                        help="the log's level: one line per event on stderr (default: $NEURALREG_LOG_LEVEL or INFO)")
    parser.add_argument("--no-progress", action="store_true",
                        help="never draw progress bars (by default they are drawn only when stderr is a terminal)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    # -- db
    db = _add(sub, "db", "the database: start, stop, inspect; set up or drop a prefix; accounts and roles",
              ["neural-reg db up", "neural-reg db status", "neural-reg db add-user alice --role analyst"])
    db_actions = db.add_subparsers(dest="action", required=True, metavar="ACTION")
    backend_help = ("the private server's kind: mysql (MariaDB or MySQL) or postgresql (default: $DJ_BACKEND, "
                    "database.backend in neural-reg.json or datajoint.json, else mysql)")
    up = _add(db_actions, "up", "start the private server (or reach the shared one) and check the login",
              ["neural-reg db up", "neural-reg db up --backend postgresql"])
    down = _add(db_actions, "down", "stop the private server", ["neural-reg db down"])
    status = _add(db_actions, "status", "which server, whether it runs, and the schema prefix",
                  ["neural-reg db status"])
    for action in (up, down, status):
        action.add_argument("--backend", choices=["mysql", "postgresql"], default=None, help=backend_help)
    _add(db_actions, "setup", "declare every schema and job table of the prefix, once (an admin), so that workers "
                              "and analysts need no DDL",
         ["neural-reg db setup   # as an admin, with NEURALREG_PREFIX=lab for the lab's prefix"])
    add_user = _add(db_actions, "add-user", "create an account with a role on the prefix's schemas; its generated "
                                            "password is printed once, to stdout",
                    ["neural-reg db add-user worker1 --role worker --host 10.0.0.%"])
    add_user.add_argument("name", help="the account's user name")
    add_user.add_argument("--role", required=True, choices=["analyst", "worker", "admin"],
                          help="analyst: read; worker: read, and write computed and job tables; admin: everything "
                               "on the prefix's schemas")
    add_user.add_argument("--host", default="%", help="where it may connect from (default %%: anywhere)")
    grant = _add(db_actions, "grant", "give an existing account a role on the prefix's schemas (again, after new "
                                      "tables: a worker's grants name them)",
                 ["neural-reg db grant worker --role worker   # docker compose's setup service does this"])
    grant.add_argument("name", help="the account's user name")
    grant.add_argument("--role", required=True, choices=["analyst", "worker", "admin"], help="as for add-user")
    grant.add_argument("--host", default="%", help="the host part of the account (default %%)")
    remove_user = _add(db_actions, "remove-user", "drop an account and its grants",
                       ["neural-reg db remove-user worker1"])
    remove_user.add_argument("name", help="the account's user name")
    remove_user.add_argument("--host", default="%", help="the host part of the account (default %%)")
    drop = _add(db_actions, "drop", "drop every schema of a prefix (all its tables and rows), downstream first",
                ["neural-reg db drop test_3fa2c1", "neural-reg db drop old_lab --yes   # no question (scripts)"],
                description="Drop every schema of PREFIX, downstream first. The schemas and their row counts are "
                            "listed first, then it asks\n(the prefix this installation uses must be typed out); "
                            "without --yes and without a terminal it refuses (exit 2).")
    drop.add_argument("prefix", metavar="PREFIX", help="the schema prefix, e.g. test_3fa2c1 for test_3fa2c1_recording")
    drop.add_argument("--yes", action="store_true", help="drop without asking")
    db.set_defaults(func=_db)

    # -- ingest
    ingest = _add(sub, "ingest", "load recordings into the recording schema (all or nothing)",
                  ["neural-reg ingest filetree data/static21067-10-18-GrayImageNet",
                   "neural-reg ingest simulate --scans 3 --seed 0"])
    src = ingest.add_subparsers(dest="source", required=True, metavar="SOURCE")
    ft = _add(src, "filetree", "a Sensorium / neuralpredictors static file tree",
              ["neural-reg ingest filetree data/static21067-10-18-GrayImageNet-94c6ff995dac583098847cfecd43e7b6",
               "neural-reg ingest filetree data/mouse3 --animal m3 --session 1 --scan 2"])
    ft.add_argument("path", help="the file tree's folder")
    ft.add_argument("--animal", help="animal id (default: from a static<animal>-<session>-<scan> folder name)")
    ft.add_argument("--session", type=int, help="session number (default: from the folder name)")
    ft.add_argument("--scan", type=int, help="scan index (default: from the folder name)")
    ft.add_argument("--image-set", help="name of the image set the stimuli belong to (default: the folder name)")
    sim = _add(src, "simulate", "simulated scans of a model mouse V1",
               ["neural-reg ingest simulate --scans 2 --neurons 200 --images 500 --seed 1"])
    sim.add_argument("--scans", type=int, default=3, help="how many scans (of one model animal, sim<seed>)")
    sim.add_argument("--neurons", type=int, default=500, help="neurons per scan")
    sim.add_argument("--images", type=int, default=1000, help="non-oracle images, each shown once")
    sim.add_argument("--oracle-images", type=int, default=50, help="oracle images, each shown --repeats times")
    sim.add_argument("--repeats", type=int, default=10, help="repeats of each oracle image")
    sim.add_argument("--seed", type=int, default=0, help="the simulator's seed (also names the animal)")
    for p in (ft, sim):
        p.set_defaults(func=_ingest)

    # -- the experiment
    grp = _add(sub, "group", "a scan group: scans whose similarities are averaged into a target",
               ["neural-reg group all-sim", "neural-reg group m1 --animal 21067 --description 'mouse 1'"])
    grp.add_argument("name", help="the group's name")
    grp.add_argument("--animal", action="append", help="only scans of this animal (repeatable; default: all)")
    grp.add_argument("--description", default="", help="a free text")
    grp.set_defaults(func=_group)

    tasks, archs = task_names(), arch_names()
    paper = _add(sub, "setup-paper", "enter the paper's whole experiment for a scan group, in one call",
                 ["neural-reg setup-paper --scan-group all-sim --task cifar10-gray --arch resnet18 --seeds 5"])
    paper.add_argument("--scan-group", required=True, help="the scan group whose similarity is the target")
    paper.add_argument("--task", default="cifar10-gray", choices=tasks, help="the classification task")
    paper.add_argument("--arch", default="resnet18", choices=archs, help="the classifier's architecture")
    paper.add_argument("--seeds", type=int, default=5, help="classifier seeds per condition")
    paper.add_argument("--alphas", type=float, nargs="+", default=None,
                       help="regularisation strengths (Eq 7, in the Eq 8 convention; default: the recipe's sweep "
                            "1 5 20 80, the paper's 20 in either reading)")
    paper.add_argument("--vgg-weights", help="torchvision vgg19-dcbb9e9d.pth, for the VGG control target")
    paper.set_defaults(func=_setup_paper)

    ex = _add(sub, "experiment", "enter a whole experiment from a specification file (JSON)",
              ["neural-reg experiment check my-experiment.json", "neural-reg experiment enter demo"])
    ex.add_argument("action", choices=["enter", "check"],
                    help="enter: check, resolve and enter every configuration in one transaction; check: only "
                         "check and resolve (no database)")
    ex.add_argument("file", help="a JSON specification, or 'demo' / 'paper' (neural_reg/experiments/)")
    ex.set_defaults(func=_experiment)

    # -- computing
    pop = _add(sub, "populate", "compute what is missing, in dependency order",
               ["neural-reg populate", "neural-reg populate OracleStats Target --max-calls 10",
                "neural-reg populate TrainedClassifier --reserve-jobs --retry-failed"],
               description="Compute what is missing, in dependency order. Each key computed is logged, one line: "
                           "time, host, table, key, duration.")
    pop.add_argument("tables", nargs="*", metavar="TABLE", help=_tables_help("tables to populate"))
    pop.add_argument("--reserve-jobs", action="store_true", help="coordinate with other workers via job tables")
    pop.add_argument("--max-calls", type=int, help="at most this many keys per table (default: all)")
    pop.add_argument("--retry-failed", action="store_true",
                     help="put the tables' failed keys back to pending first and run them (with --reserve-jobs)")
    pop.set_defaults(func=_populate)

    st = _add(sub, "status", "per table: done, to do, reserved, failed, retrying; reservations and errors",
              ["neural-reg status", "neural-reg status TrainedClassifier --json | jq '.[0].to_do'"])
    st.add_argument("tables", nargs="*", metavar="TABLE", help=_tables_help("tables to report"))
    st.add_argument("--json", action="store_true", help="the same rows as a JSON list (one object per table)")
    st.set_defaults(func=_status)

    wk = _add(sub, "worker", "populate with job reservation until stopped (a lab's worker)",
              ["neural-reg worker", "neural-reg --no-progress worker TrainedClassifier --sleep 30 >> worker.log 2>&1"],
              description="Populate with job reservation until stopped (a lab's worker): SIGTERM / SIGINT hand the "
                          "key in progress back.\nEach key computed is logged, one line: time, host, table, key, "
                          "duration.")
    wk.add_argument("tables", nargs="*", metavar="TABLE", help=_tables_help("tables to work on"))
    wk.add_argument("--max-calls", type=int, help="at most this many keys per table and pass (default: all)")
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

    jb = _add(sub, "jobs", "the job tables: list, reclaim stale reservations, retry or clear failures",
              ["neural-reg jobs", "neural-reg jobs retry TrainedClassifier",
               "neural-reg jobs refresh --stale-after 60"])
    jb.add_argument("action", nargs="?", default="list", choices=["list", "refresh", "retry", "clear"],
                    help="list (default): every job with its key, status, age, host, pid, error; refresh: stale "
                         "reservations back to pending; retry: failed keys back to pending (kept visible as "
                         "retrying); clear: delete the error rows")
    jb.add_argument("tables", nargs="*", metavar="TABLE", help=_tables_help("job tables of these tables"))
    jb.add_argument("--stale-after", type=float, default=DEFAULT_STALE_AFTER,
                    help=f"refresh: seconds without a heartbeat that make a reservation stale "
                         f"(default {DEFAULT_STALE_AFTER:g})")
    jb.set_defaults(func=_jobs)

    # -- results
    rp = _add(sub, "report", "the paper's figures and an HTML page from the tables", ["neural-reg report reports/lab"])
    rp.add_argument("outdir", help="the folder to write index.html and the figures into")
    rp.set_defaults(func=_report)

    ck = _add(sub, "check-attacks", "attack stored robustness scores with an independent ensemble (reads only)",
              ["neural-reg check-attacks --attack-set demo-v2 --classifiers 4 --samples 100"],
              description="Attack the stored per-sample minima (RobustnessScore.Norm) of some classifiers again, "
                          "with APGD-CE, APGD-DLR, targeted APGD-DLR from random starts, this project's (plus "
                          "Square for Linf) and the Adversarial Robustness Toolbox's, at (1 - rtol) x each sample's "
                          "minimum; print how many samples they beat (a trustworthy score: few). Writes nothing.")
    ck.add_argument("--attack-set", help="the attack set's name (default: the first entered)")
    ck.add_argument("--classifiers", type=int, default=4, help="at most this many classifiers, one per condition "
                    "first (default 4)")
    ck.add_argument("--samples", type=int, default=100, help="the first N samples of each score (default 100)")
    ck.add_argument("--norms", nargs="+", default=["Linf", "L2"], choices=["Linf", "L2"])
    ck.add_argument("--rtol", type=float, default=0.005, help="attack at (1 - rtol) x the minimum (default 0.005)")
    ck.add_argument("--restarts", type=int, default=1, help="random restarts per APGD loss (default 1)")
    ck.add_argument("--steps", type=int, default=100, help="APGD steps (default 100)")
    ck.add_argument("--seed", type=int, default=0)
    ck.add_argument("--ensembles", nargs="+", default=["project", "art"], choices=["project", "art"],
                    help="which ensembles attack: this project's APGD and Square, ART's APGD (default both)")
    ck.set_defaults(func=_check_attacks)

    dm = _add(sub, "demo", "the whole pipeline on the embedded default",
              ["neural-reg demo", "neural-reg demo --report reports/demo > demo.log 2>&1   # a log without bars"])
    dm.add_argument("--report", default="reports/demo", help="where to write the report")
    dm.set_defaults(func=_demo)

    exp = _add(sub, "export", "a trained classifier as a PyTorch state dict + JSON, or a scan as NWB",
               ["neural-reg export scan animal_id=sim0-g2 session=1 scan_idx=1 scan.nwb"])
    what = exp.add_subparsers(dest="what", required=True, metavar="WHAT")
    for name, help_, example in (
            ("classifier", "FILE.pt (plain state dict) and FILE.json (configuration, lineage) beside it",
             "task=digits arch=resnet18-narrow train_name=demo-cpu regulariser_name=demo-neural-alpha10 "
             "classifier_seed=0 model.pt"),
            ("scan", "FILE.nwb: responses, trials, behaviour, neurons and images in NWB",
             "animal_id=sim0-g2 session=1 scan_idx=1 scan.nwb")):
        p = _add(what, name, help_, [f"neural-reg export {name} {example}"], description=f"{help_}.")
        p.add_argument("key", nargs="+", metavar="ATTR=VALUE", help="the key, as attr=value pairs")
        p.add_argument("file", help="the output file")
        p.add_argument("--overwrite", action="store_true", help="replace the file if it exists")
        p.set_defaults(func=_export)

    dg = _add(sub, "diagram", "the DataJoint diagram of the schemas, as PNG or SVG (needs graphviz's dot)",
              ["neural-reg diagram schemas.svg", "neural-reg diagram docs/schemas.png --direction LR"])
    dg.add_argument("file", metavar="FILE.png|FILE.svg", help="the output file; its suffix says the format")
    dg.add_argument("--direction", choices=["TB", "LR"], default="TB", help="top to bottom, or left to right")
    dg.set_defaults(func=_diagram)

    dl = _add(sub, "delete", "delete a scan, a configuration or a trained classifier, with all that depends on it",
              ["neural-reg delete scan animal_id=sim0-g2 session=1 scan_idx=3",
               "neural-reg delete config noise_name=tiny --dry-run",
               "neural-reg delete classifier task=digits arch=resnet18-narrow train_name=demo-cpu "
               "regulariser_name=demo-none classifier_seed=1 --yes"],
              description="Delete one row and, with DataJoint's cascade, every row downstream of it in every schema.\n"
                          "The cascade (tables and row counts) is printed first, then it asks; without --yes and "
                          "without a terminal\nit refuses (exit 2) and deletes nothing.\n\n"
                          "  scan        recording.Scan: animal_id= session= scan_idx=\n"
                          "  config      a configuration (NoiseConfig, TrainConfig, Regulariser, AttackConfig, ...) "
                          "by its NAME_name= or NAME_hash=\n"
                          "  classifier  classifier.TrainedClassifier (as `neural-reg export classifier` names it); "
                          "its Training entry stays,\n              so populate trains it again")
    dl.add_argument("what", choices=list(WHAT), help="what KEY names")
    dl.add_argument("key", nargs="+", metavar="ATTR=VALUE", help="the key, as attr=value pairs")
    dl.add_argument("--yes", action="store_true", help="delete without asking")
    dl.add_argument("--dry-run", action="store_true", help="only print the cascade")
    dl.add_argument("--part-integrity", choices=["enforce", "cascade"], default="enforce",
                    help="enforce: refuse to delete a part table's rows without its master's (e.g. a scan in a scan "
                         "group); cascade: delete those masters too, and all that depends on them")
    dl.set_defaults(func=_delete)
    return parser


def _configure_logging(args) -> None:
    """--log-level and --no-progress (idempotent)."""
    from . import logs

    logs.setup(getattr(args, "log_level", None))
    logs.set_progress(False if getattr(args, "no_progress", False) else None)


def main(argv: list[str] | None = None) -> int:
    from pipeline.errors import NeuralRegError

    args = build_parser().parse_args(argv)
    _configure_logging(args)
    try:
        return args.func(args)
    except NeuralRegError as err:
        if args.debug:
            raise
        print(f"neural-reg: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
