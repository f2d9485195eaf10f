"""`data-engine`: commands that are not Dagster runs: start Dagster on a persistent instance, start the
local profile's annotation server (Label Studio), demo data for the local profile, the demo's simulated reviewer, and the training-label versions of a model (list them, import a base label set,
roll `latest` back)."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
from pathlib import Path

from data_engine.config import ConfigError, load_fleet_config
from data_engine.settings import Settings, current_settings

# `data-engine dev` runs the repository's instance settings and workspace (see _dev).
REPOSITORY = Path(__file__).resolve().parents[1]

# What a shell reports for a command killed by SIGPIPE (128 + 13), as `yes | head -1` does.
BROKEN_PIPE_EXIT = 141


def main(argv: list[str] | None = None) -> int:
    """The console script: `run`, quiet when the reader of stdout goes away (`... | head -1`)."""
    try:
        code = run(argv)
        sys.stdout.flush()  # a closed pipe shows up here, while it can still be handled
    except BrokenPipeError:
        # Nothing more can be printed; point stdout at devnull so the interpreter's final flush is quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return BROKEN_PIPE_EXIT
    return code


def run(argv: list[str] | None = None) -> int:
    try:
        config = load_fleet_config()
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    models = list(config.models)
    parser = argparse.ArgumentParser(prog="data-engine")
    commands = parser.add_subparsers(dest="command", required=True)
    dev = commands.add_parser(
        "dev", help="start Dagster (UI, daemon, code location) on the instance kept in $DATA_ENGINE_HOME/dagster"
    )
    dev.add_argument("--host", default="127.0.0.1", help="address the UI listens on (default: 127.0.0.1)")
    dev.add_argument("--port", type=int, default=3000, help="port of the UI (default: 3000)")
    server = commands.add_parser(
        "annotation-server", help="start Label Studio, the local profile's annotation server (user and API token made on first start)"
    )
    server.add_argument("--port", type=int, help="loopback port (default: the one of the first start, else 8080)")
    demo = commands.add_parser("demo-data", help="write the local profile's DuckDB warehouse with synthetic data")
    demo.add_argument("--home", type=Path, help="folder to write into (default: DATA_ENGINE_HOME or ./.data_engine)")
    demo.add_argument("--end-date", type=dt.date.fromisoformat, help="last day of data, YYYY-MM-DD (default: yesterday, UTC)")
    demo.add_argument("--days", type=int, default=7, help="number of days (default: 7)")
    demo.add_argument("--frames-per-camera", type=int, default=24, help="frames per camera per day (default: 24)")
    labels = commands.add_parser("labels", help="training-label versions of a model (the profile's label store)")
    label_commands = labels.add_subparsers(dest="labels_command", required=True)
    model_help = f"a model of the fleet config: {', '.join(models)}"
    versions = label_commands.add_parser("versions", help="list a model's label versions, oldest first; * marks latest")
    versions.add_argument("--model", required=True, choices=models, metavar="MODEL", help=model_help)
    rollback = label_commands.add_parser("rollback", help="point a model's latest label version at an earlier version")
    rollback.add_argument("--model", required=True, choices=models, metavar="MODEL", help=model_help)
    rollback.add_argument("--version", required=True, help="a version id of that model, as `labels versions` lists them")
    rollback.add_argument("--reason", default="", help="why (recorded in latest.json)")
    base = label_commands.add_parser(
        "import", help="make an existing COCO file (file_name = frame URI) the model's latest version, e.g. before the first merge"
    )
    base.add_argument("--model", required=True, choices=models, metavar="MODEL", help=model_help)
    base.add_argument("--coco", type=Path, required=True, help="path of the COCO JSON file")
    demo_labels = label_commands.add_parser(
        "import-demo", help="make demo frames, labelled with the boxes drawn into them, the model's latest version (local profile)"
    )
    demo_labels.add_argument("--model", required=True, choices=models, metavar="MODEL", help=model_help)
    demo_labels.add_argument("--frames", type=int, default=200, help="number of demo frames (default: 200)")
    reviewer = commands.add_parser(
        "reviewer", help="the simulated reviewer of the demo: review open frames in the local Label Studio toward the demo's ground truth"
    )
    reviewer_commands = reviewer.add_subparsers(dest="reviewer_command", required=True)
    review_run = reviewer_commands.add_parser("run", help="one pass over a model's open frames: reject, skip, or correct and submit")
    review_run.add_argument("--model", required=True, choices=models, metavar="MODEL", help=model_help)
    _reviewer_arguments(review_run)
    review_run.add_argument("--max-frames", type=int, help="frames to act on in this pass (default: every open frame)")
    loop = commands.add_parser(
        "demo",
        help="the whole loop unattended: demo data, Label Studio, Dagster with automation on, and the simulated reviewer;"
        " prints each model's turns and the production model's test AP",
    )
    loop.add_argument("--home", type=Path, help="a new folder for the demo (default: DATA_ENGINE_HOME/demo)")
    loop.add_argument("--models", nargs="+", choices=models, metavar="MODEL", help=f"{model_help} (default: all)")
    loop.add_argument("--turns", type=int, default=2, help="loop turns, one demo day each (default: 2)")
    loop.add_argument("--frames-per-camera", type=int, default=24, help="demo frames per camera and day (default: 24)")
    loop.add_argument("--review-frames", type=int, default=40, help="frames selected for review per model and day (default: 40)")
    loop.add_argument("--initial-frames", type=int, default=120, help="demo frames of the initial label version; 0: none (default: 120)")
    loop.add_argument(
        "--held-out-frames", type=int, default=100, help="frames of a day never reviewed that score each turn's production model (default: 100)"
    )
    loop.add_argument("--epochs", type=int, help="epochs of each training (default: the demo's, in `<home>/demo-fleet.yaml`)")
    loop.add_argument("--dagster-port", type=int, default=3000, help="port of the Dagster UI (default: 3000)")
    loop.add_argument("--annotation-port", type=int, default=8080, help="port of Label Studio on its first start (default: 8080)")
    loop.add_argument("--turn-timeout", type=float, default=1800.0, help="seconds a turn may take before the demo gives up (default: 1800)")
    loop.add_argument("--exit-when-done", action="store_true", help="stop the servers after the last turn (default: keep them for the UI)")
    _reviewer_arguments(loop)
    trainer_env = commands.add_parser(
        "trainer-env", help="create the reference trainer's own environment (pip, from docker/trainer/requirements.txt) and print its interpreter"
    )
    trainer_env.add_argument("--requirements", type=Path, help="a requirements file (default: docker/trainer/requirements.txt)")
    models = commands.add_parser("models", help="a model's production pointer (the profile's model store)")
    model_commands = models.add_subparsers(dest="models_command", required=True)
    production = model_commands.add_parser("production", help="list where a model's production pointer has been, newest first")
    production.add_argument("--model", required=True)
    model_rollback = model_commands.add_parser("rollback", help="point a model's production back at a model that was production before")
    model_rollback.add_argument("--model", required=True)
    model_rollback.add_argument("--to", required=True, dest="to_candidate", help="a candidate id, as `models production` lists them")
    model_rollback.add_argument("--reason", required=True, help="why (recorded in production.json and its history)")
    args = parser.parse_args(argv)
    if args.command == "trainer-env":
        return _trainer_env(args)
    if args.command == "dev":
        return _dev(current_settings(), args.host, args.port)
    if args.command == "annotation-server":
        return _annotation_server(current_settings().home, args.port)
    if args.command == "demo-data":
        from data_engine.demo import write_demo_warehouse

        settings = current_settings()
        home = args.home.resolve() if args.home else settings.home
        end_date = args.end_date or dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1)
        counts = write_demo_warehouse(
            config,
            home / "warehouse.duckdb",
            home / "objects",
            end_date=end_date,
            days=args.days,
            frames_per_camera_per_day=args.frames_per_camera,
        )
        print(f"wrote {counts['frames']} frames and {counts['predictions']} prediction rows to {home / 'warehouse.duckdb'}")
    if args.command == "reviewer":
        return _reviewer(args, config)
    if args.command == "demo":
        return _demo(args, list(config.models))
    if args.command == "labels":
        return _labels(args, config)
    if args.command == "models":
        return _models(args, config)
    return 0


def _dev(settings: Settings, host: str, port: int) -> int:
    """Replace this process with `dagster dev` on a persistent instance: `$DATA_ENGINE_HOME/dagster`
    with the repository's dagster.yaml, so run history lives as long as the outputs next to it (a bare
    `dagster dev` keeps it in a temporary folder removed on exit). It runs from that folder, since
    `dagster dev` run from the repository would warn that the dagster.yaml there is not used."""
    instance_settings, workspace = REPOSITORY / "dagster.yaml", REPOSITORY / "workspace.yaml"
    if not instance_settings.is_file() or not workspace.is_file():
        print(f"data-engine dev runs from a clone of the repository: {instance_settings} or {workspace} is missing", file=sys.stderr)
        return 2
    dagster_home = settings.dagster_home
    dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(instance_settings, dagster_home / "dagster.yaml")  # every start: the repository's settings
    env = dict(os.environ, DAGSTER_HOME=str(dagster_home), DATA_ENGINE_HOME=str(settings.home))
    if env.get("DATA_ENGINE_CONFIG"):
        env["DATA_ENGINE_CONFIG"] = str(Path(env["DATA_ENGINE_CONFIG"]).resolve())  # the folder changes below
    # Dagster 1.13 marks its own `dagster dev` as superseded by the `dg` CLI on every start; the command
    # is supported and is what this project runs, so that notice is hidden here (only that one).
    env["PYTHONWARNINGS"] = ",".join(filter(None, [env.get("PYTHONWARNINGS"), "ignore:Function `dev_command` is superseded"]))
    print(f"Dagster instance: {dagster_home} (stop with Ctrl-C)", flush=True)
    os.chdir(dagster_home)
    dagster = str(Path(sys.executable).parent / "dagster")  # the one installed next to this Python
    os.execve(dagster, [dagster, "dev", "-w", str(workspace), "--host", host, "--port", str(port)], env)
    return 0  # not reached: execve replaced this process


def _annotation_server(home: Path, port: int | None) -> int:
    """Replace this process with Label Studio (its own tool environment, installed on first use)."""
    import dataclasses

    from data_engine.annotation import label_studio_server as ls

    try:
        credentials = ls.prepare(home, port or ls.DEFAULT_PORT)
        if port is not None and not credentials.url.endswith(f":{port}"):
            credentials = dataclasses.replace(credentials, url=f"http://{ls.HOST}:{port}")
            credentials.save(ls.credentials_path(home))
        if ls.port_in_use(int(credentials.url.rsplit(":", 1)[1])):
            print(f"{credentials.url} is in use: stop what listens there, or pick a free port with --port", file=sys.stderr)
            return 2
        argv, env = ls.server_command(home, credentials)
    except ls.ServerError as error:
        print(error, file=sys.stderr)
        return 2
    print(
        f"Label Studio on {credentials.url}: log in as {credentials.email}, password in {ls.credentials_path(home)}"
        " (the first start sets up its database, which takes a few minutes; stop with Ctrl-C)",
        flush=True,
    )
    os.execve(argv[0], argv, env)
    return 0  # not reached: execve replaced this process


def _labels(args: argparse.Namespace, config) -> int:
    import getpass

    from data_engine.labels import LabelStore, LabelStoreError, PointerMoved, label_store_uri, rollback_labels
    from data_engine.objectstore import ObjectStoreError

    try:
        store = LabelStore.from_uri(label_store_uri(current_settings(), config, args.model))
        if args.labels_command == "versions":
            return _versions(store, args.model)
        if args.labels_command in ("import", "import-demo"):
            return _import(store, args, config)
        pointer = rollback_labels(
            store, args.model, args.version, rolled_back_by=f"{getpass.getuser()} (data-engine labels rollback)", reason=args.reason
        )
    except (LabelStoreError, PointerMoved, ObjectStoreError) as error:
        print(error, file=sys.stderr)
        return 1
    if pointer is None:
        print(f"{args.model}: {args.version} is already the latest label version; nothing changed")
        return 0
    print(
        f"{args.model}: latest label version is now {pointer.version} (was {pointer.record['previous'] or '-'})"
        f" at {store.describe(args.model)}"
    )
    return 0


def _versions(store, model: str) -> int:
    """One line per version; an unreadable latest.json or manifest is reported, and the listing goes on."""
    from data_engine.labels import LabelStoreError

    code = 0
    try:
        head = store.latest(model)
    except LabelStoreError as error:
        print(error, file=sys.stderr)
        head, code = None, 1
    versions = store.versions(model)
    if not versions:
        print(f"no label versions of {model!r} at {store.describe(model)}")
    for version in versions:
        try:
            manifest = store.manifest(model, version)
        except LabelStoreError as error:
            print(f"? {version}  unreadable: {error}")
            code = 1
            continue
        counts = manifest.get("counts", {})
        print(
            f"{'*' if head and head.version == version else ' '} {version}  {manifest.get('source', '?'):6}"
            f"  images={counts.get('images', '?')} annotations={counts.get('annotations', '?')}"
            f"  tasks={len(manifest.get('merged_tasks', []))} parent={manifest.get('parent') or '-'}"
        )
    return code


def _models(args: argparse.Namespace, config) -> int:
    import getpass

    from data_engine.evaluation.promotion import ProductionMoved, ProductionPointer, PromotionRefused
    from data_engine.training import ModelStore, ModelStoreError, model_store_uri

    try:
        store = ModelStore.from_uri(model_store_uri(current_settings(), config, args.model))
        pointer = ProductionPointer(store.objects, config.models[args.model].promotion.ssm_parameter)
        if args.models_command == "production":
            history = pointer.history(args.model)
            if not history:
                print(f"{args.model} has no production model yet ({pointer.describe(args.model)})")
            for entry in reversed(history):
                print(f"{entry['sequence']:4d} {entry['candidate']}  {entry['action']:8} {entry['moved_at']}  by {entry['moved_by']}: {entry['reason']}")
            return 0
        record = pointer.rollback(args.model, args.to_candidate, reason=args.reason, moved_by=f"{getpass.getuser()} (data-engine models rollback)")
    except (ModelStoreError, PromotionRefused, ProductionMoved) as error:
        print(error, file=sys.stderr)
        return 1
    print(f"{args.model}: production is now {record['candidate']} (was {record['previous']}) at {pointer.describe(args.model)}")
    return 0


def _import(store, args: argparse.Namespace, config) -> int:
    import getpass
    import json

    from data_engine.labels import LabelPolicy, import_label_set

    classes = list(config.models[args.model].classes)
    if args.labels_command == "import-demo":
        from data_engine.demo import demo_label_set

        warehouse = current_settings().warehouse_path
        if not warehouse.exists():
            print(f"no demo warehouse at {warehouse}: run `data-engine demo-data` first", file=sys.stderr)
            return 1
        source = f"{args.frames} demo frames of {warehouse}"
    else:
        source = str(args.coco)
    try:
        coco = demo_label_set(warehouse, args.model, classes, args.frames) if args.labels_command == "import-demo" else json.loads(args.coco.read_text())
        version = import_label_set(
            store,
            args.model,
            coco,
            classes,
            LabelPolicy.from_config(config.models[args.model].labels),
            source_name=source,
            created_by=f"{getpass.getuser()} (data-engine labels {args.labels_command})",
        )
    except (OSError, ValueError) as error:  # ExportError is a ValueError, and so are JSON syntax errors
        print(f"cannot import {source} as the labels of {args.model!r}: {error}", file=sys.stderr)
        return 1
    print(f"{args.model}: imported {source} as label version {version}, now latest, at {store.describe(args.model)}")
    return 0


def _reviewer_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--error-rate", type=float, default=0.05, help="reviewer: chance of a mistake per object (default: 0.05)")
    parser.add_argument("--skip-rate", type=float, default=0.05, help="reviewer: chance a frame is skipped for a later pass (default: 0.05)")
    parser.add_argument("--reject-rate", type=float, default=0.01, help="reviewer: chance a frame is removed as unusable (default: 0.01)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the reviewer's choices (default: 0)")


def _demo(args: argparse.Namespace, models: list[str]) -> int:
    from data_engine.annotation.backend import AnnotationError
    from data_engine.annotation.label_studio_server import ServerError
    from data_engine.demo_loop import DemoError, DemoOptions, run_demo
    from data_engine.reviewer import ReviewerSettings

    try:
        options = DemoOptions(
            home=(args.home or current_settings().home / "demo").resolve(),
            models=tuple(args.models or models),
            turns=args.turns,
            frames_per_camera=args.frames_per_camera,
            review_frames=args.review_frames,
            initial_frames=args.initial_frames,
            held_out_frames=args.held_out_frames,
            **({"epochs": args.epochs} if args.epochs is not None else {}),
            dagster_port=args.dagster_port,
            annotation_port=args.annotation_port,
            reviewer=ReviewerSettings(args.error_rate, args.skip_rate, args.reject_rate, args.seed),
            turn_timeout_s=args.turn_timeout,
            exit_when_done=args.exit_when_done,
        )
    except ValueError as error:
        print(f"data-engine demo: {error}", file=sys.stderr)
        return 2
    try:
        run_demo(options, out=lambda line: print(line, flush=True))
    except (DemoError, ServerError, AnnotationError) as error:
        print(f"data-engine demo: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # the servers were stopped on the way out
        print(f"data-engine demo: stopped; its data stays in {options.home}", file=sys.stderr)
        return 130
    return 0


def _reviewer(args: argparse.Namespace, config) -> int:
    from data_engine.annotation.backend import AnnotationError
    from data_engine.defs.reviewer import review_from_cli
    from data_engine.reviewer import ReviewerSettings, ReviewerUnavailable

    try:
        settings = ReviewerSettings(args.error_rate, args.skip_rate, args.reject_rate, args.seed, args.max_frames)
    except ValueError as error:
        print(f"data-engine reviewer run: {error}", file=sys.stderr)
        return 2
    try:
        summary = review_from_cli(current_settings(), config, args.model, settings)
    except (ReviewerUnavailable, AnnotationError) as error:
        print(error, file=sys.stderr)
        return 1
    print(summary.line(args.model))
    return 0

def _trainer_env(args: argparse.Namespace) -> int:
    import subprocess

    from data_engine.training.trainer_env import REQUIREMENTS, ensure_trainer_env

    requirements = args.requirements or REQUIREMENTS
    if not requirements.is_file():
        print(f"no requirements file at {requirements}; pass --requirements PATH", file=sys.stderr)
        return 2
    try:
        python = ensure_trainer_env(requirements, log=lambda line: print(line, file=sys.stderr))
    except subprocess.CalledProcessError as error:
        print(f"creating the trainer environment failed: {error}", file=sys.stderr)
        return 1
    print(python)
    return 0


if __name__ == "__main__":
    sys.exit(main())
