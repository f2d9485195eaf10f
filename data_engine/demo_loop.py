"""`data-engine demo`: the whole loop on a laptop, unattended. It writes demo data into a fresh
DATA_ENGINE_HOME, starts Label Studio and Dagster (`data-engine dev`: webserver and daemon) there, turns
declarative automation on, and then, turn by turn, asks Dagster for one day's selection per model while
the simulated reviewer works in Label Studio. Everything after the selection run is the deployment's own
automation: review tasks follow the candidates, the review sensor merges submitted batches into a label
version, the auto-training sensor trains on it, and evaluation and promotion follow the checkpoint.

This process only watches: it reads the label store, the model store and the evaluation reports (the
same files the assets write), prints what happened per model and turn, and stops at the first failed
Dagster run. Turn 0 is the bootstrap (training on the imported initial labels) when there are some.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from data_engine.config import FleetConfig, load_fleet_config
from data_engine.config.loader import config_path
from data_engine.reviewer import ReviewerSettings

LOCATION = "data_engine.definitions"  # the code location's name in workspace.yaml
# The frames at their own size (smaller, the objects get too small for the stride-8 features), the
# narrowest backbone and two-convolution heads: a step costs a fraction of width 32's, and in side-by-side
# runs on the same 180 frames it learned faster per step too (validation mAP after 180 steps, learning
# rate 0.002 to 0.003: 0.032 at width 8, 0.008 at width 16, 0.004 at width 32; the demo's earlier settings,
# width 32 with four-convolution heads at 160x224, 0.008). Twenty epochs reach a validation mAP of about 0.4 to 0.6 on the demo's first label versions. One thread per training,
# as every model trains at once.
DEMO_HYPERPARAMETERS = {
    "epochs": 20, "batch_size": 4, "learning_rate": 0.003, "width": 8, "head_convs": 2, "min_size": 240, "max_size": 320, "threads": 1, "seed": 0,
}  # fmt: skip
DEMO_SPLIT_RATIOS = {"train": 0.6, "val": 0.2, "test": 0.2}
# A demo test split holds tens of frames: the shipped gates, sized for thousands, would reject a better
# candidate on the noise of a few frames (a class with a handful of boxes; a bootstrap interval of ΔAP
# about ±0.1 wide: measured [-0.023, +0.163] for a candidate 0.07 better on a test split of 24 frames).
DEMO_GATES = {"ap_tolerance": 0.05, "class_max_drop": 0.1, "robustness_max_extra_drop": 0.05}
POLL_S = 3.0
GATE_FAILURE = "DagsterAssetCheckFailedError"  # what a step raises when a blocking asset check fails


class DemoError(RuntimeError):
    """The demo cannot start or a stage failed; the message says where to look."""


@dataclass(frozen=True)
class DemoOptions:
    home: Path
    models: tuple[str, ...]
    turns: int = 2
    frames_per_camera: int = 24
    review_frames: int = 40  # selection budget per model and day (max_frames_per_day)
    initial_frames: int = 120  # demo frames imported as the first label version; 0: start without labels
    dagster_port: int = 3000
    annotation_port: int = 8080
    reviewer: ReviewerSettings = field(default_factory=ReviewerSettings)
    turn_timeout_s: float = 1800.0
    exit_when_done: bool = False
    held_out_frames: int = 100  # frames of a day never reviewed, on which each turn's production model is scored
    epochs: int = DEMO_HYPERPARAMETERS["epochs"]

    def __post_init__(self) -> None:
        for name in ("turns", "frames_per_camera", "review_frames", "held_out_frames", "epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} is {getattr(self, name)}; it is at least 1")
        if self.initial_frames < 0:
            raise ValueError(f"initial-frames is {self.initial_frames}; it is 0 (no initial labels) or more")
        if self.turn_timeout_s <= 0:
            raise ValueError(f"turn-timeout is {self.turn_timeout_s}; it is a positive number of seconds")
        if not self.models:
            raise ValueError("no models: name at least one with --models")


@dataclass
class Turn:
    """One model's turn of the loop, as the stores show it."""

    model: str
    number: int
    day: dt.date | None  # None: the bootstrap turn on the initial labels
    label_before: str | None
    label_version: str | None = None
    images: int = 0
    candidate: str | None = None
    candidate_ap: float | None = None
    production_before: float | None = None
    production_after: float | None = None
    decision: str | None = None
    held_out_before: float | None = None  # the production model's AP on the held-out frames
    held_out_after: float | None = None
    events: list[str] = field(default_factory=list)


def demo_fleet(source: dict[str, Any], options: DemoOptions) -> dict[str, Any]:
    """The fleet config the demo runs: the chosen models of `source`, each training after every merge,
    with small trainings, splits and gates for small label sets, and the demo's review budget."""
    unknown = sorted(set(options.models) - set(source["models"]))
    if unknown:
        raise ValueError(f"models {unknown} are not in the fleet config {config_path()}; it has {sorted(source['models'])}")
    fleet = {key: value for key, value in source.items() if key != "models"}
    fleet["models"] = {}
    for model in options.models:
        config = json.loads(json.dumps(source["models"][model]))  # a deep copy
        selection = config.setdefault("selection", {})
        selection["max_frames_per_day"] = options.review_frames
        selection["max_frames_per_camera_per_day"] = options.review_frames
        # A turn labels tens of frames: a fifth each for validation and test keeps neither empty.
        config.setdefault("labels", {})["split_ratios"] = DEMO_SPLIT_RATIOS
        training = config.setdefault("training", {})
        training["hyperparameters"] = {**training.get("hyperparameters", {}), **DEMO_HYPERPARAMETERS, "epochs": options.epochs}
        training["auto"] = {"min_new_reviewed_images": 1}
        config["gates"] = {**config.get("gates", {}), **DEMO_GATES}
        config["review_automation"] = True
        fleet["models"][model] = config
    return fleet


def prepare(options: DemoOptions, out: Callable[[str], None]) -> tuple[FleetConfig, list[dt.date], dict[str, str]]:
    """Demo data, the demo's fleet config, initial labels and held-out frames (`<home>/held-out/<model>.json`)
    in a fresh home; the turns' days and the children's environment."""
    from data_engine.demo import demo_label_set, write_demo_warehouse
    from data_engine.labels import LabelPolicy, LabelStore, import_label_set, label_store_uri
    from data_engine.settings import Settings

    home = options.home
    if (home / "warehouse.duckdb").exists():
        raise DemoError(f"{home} already holds a demo (warehouse.duckdb): delete the folder, or pick another with --home")
    home.mkdir(parents=True, exist_ok=True)
    fleet_file = home / "demo-fleet.yaml"
    fleet_file.write_text(yaml.safe_dump(demo_fleet(yaml.safe_load(config_path().read_text()), options), sort_keys=False))
    config = load_fleet_config(fleet_file)
    end = dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1)
    days = [end - dt.timedelta(days=options.turns - 1 - i) for i in range(options.turns)]
    held_out_day = days[0] - dt.timedelta(days=1)  # written, never selected for review
    counts = write_demo_warehouse(
        config, home / "warehouse.duckdb", home / "objects", end_date=end, days=options.turns + 1, frames_per_camera_per_day=options.frames_per_camera
    )
    out(f"demo data: {counts['frames']} frames of {options.turns + 1} day(s) in {home / 'warehouse.duckdb'}")
    for model in options.models:
        classes = list(config.models[model].classes)
        held_out = demo_label_set(home / "warehouse.duckdb", model, classes, options.held_out_frames, days=[held_out_day])
        held_out_path(home, model).parent.mkdir(exist_ok=True)
        held_out_path(home, model).write_text(json.dumps(held_out))
        out(f"{model}: {len(held_out['images'])} frames of {held_out_day}, never reviewed, held out to score each turn's production model")
        if options.initial_frames:
            labels = LabelStore.from_uri(label_store_uri(Settings("local", home), config, model))
            coco = demo_label_set(home / "warehouse.duckdb", model, classes, options.initial_frames, days=days)
            policy = LabelPolicy.from_config(config.models[model].labels)
            version = import_label_set(labels, model, coco, classes, policy, source_name="data-engine demo", created_by="data-engine demo")
            out(f"{model}: {len(coco['images'])} demo frames imported as the initial label version {version}")
    env = {k: v for k, v in os.environ.items() if k not in ("CVAT_URL", "LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY", "DAGSTER_HOME")}
    env |= {"DATA_ENGINE_PROFILE": "local", "DATA_ENGINE_HOME": str(home), "DATA_ENGINE_CONFIG": str(fleet_file)}
    return config, days, env


def held_out_path(home: Path, model: str) -> Path:
    return home / "held-out" / f"{model}.json"


@contextmanager
def running_dagster(home: Path, env: dict[str, str], port: int, startup_timeout_s: float = 600.0) -> Iterator[str]:
    """`data-engine dev` (webserver, daemon, code location) in the background; its URL once it answers."""
    from data_engine.annotation.label_studio_server import port_in_use, stop

    if port_in_use(port):
        raise DemoError(f"port {port} is in use: stop what listens there, or pick another with --dagster-port")
    url = f"http://127.0.0.1:{port}"
    log_path = home / "dagster.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "data_engine.cli", "dev", "--port", str(port)],
            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + startup_timeout_s
        while not _answers(f"{url}/server_info"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise DemoError(f"Dagster did not start on {url} (log {log_path})")
            time.sleep(1)
        yield url
    finally:
        stop(process, grace_s=30)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5):
            return True
    except OSError:
        return False


class Dagster:
    """The few GraphQL calls the demo makes: what the UI sends when a person clicks."""

    def __init__(self, url: str):
        self.url = url

    def query(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.url}/graphql", data=json.dumps({"query": query, "variables": variables or {}}).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            body = json.load(response)
        if body.get("errors"):
            raise DemoError(f"Dagster GraphQL: {body['errors'][0].get('message')}")
        return body["data"]

    def start_sensor(self, name: str, timeout_s: float = 300.0) -> None:
        """Turn a sensor on (waiting for the code location to load)."""
        selector = {"repositoryLocationName": LOCATION, "repositoryName": "__repository__", "sensorName": name}
        deadline = time.monotonic() + timeout_s
        while True:
            answer = self.query(
                "mutation($s: SensorSelector!) { startSensor(sensorSelector: $s) { __typename ... on PythonError { message } } }", {"s": selector}
            )["startSensor"]
            if answer["__typename"] == "Sensor":
                return
            if time.monotonic() > deadline:
                raise DemoError(f"could not start the sensor {name}: {answer}")
            time.sleep(2)

    def launch_selection(self, model: str, day: dt.date) -> str:
        tags = {"dagster/partition": f"{day.isoformat()}|{model}", "dagster/partition/date": day.isoformat(), "dagster/partition/model": model}
        params = {
            "selector": {"repositoryLocationName": LOCATION, "repositoryName": "__repository__", "jobName": "selection_job"},
            "runConfigData": {},
            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
        }
        answer = self.query(
            "mutation($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename"
            " ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } ... on Error { message } } }",
            {"p": params},
        )["launchRun"]
        if answer["__typename"] != "LaunchRunSuccess":
            raise DemoError(f"launching the selection of {model} on {day}: {answer}")
        return answer["run"]["runId"]

    def failed_runs(self) -> list[dict[str, str]]:
        """Failed runs, except those a promotion gate stopped: `evaluation_report` fails when a gate (a blocking
        asset check) does not pass, which is the loop keeping production (the Watcher reports it), not a fault."""
        data = self.query(
            "{ runsOrError(filter: {statuses: [FAILURE]}) { ... on Runs { results { runId jobName eventConnection { events {"
            " __typename ... on ExecutionStepFailureEvent { stepKey error { className } } } } } } } }"
        )
        failed = []
        for run in data["runsOrError"]["results"]:
            steps = [event for event in run.pop("eventConnection")["events"] if event["__typename"] == "ExecutionStepFailureEvent"]
            if not steps or any(step["stepKey"] != "evaluation_report" or (step["error"] or {}).get("className") != GATE_FAILURE for step in steps):
                failed.append(run)
        return failed


class Watcher:
    """Reads what the assets wrote, so each turn's progress shows up without Dagster's help."""

    def __init__(self, home: Path, config: FleetConfig):
        from data_engine.labels import LabelStore, label_store_uri
        from data_engine.settings import Settings
        from data_engine.training import ModelStore, model_store_uri

        self.home, self.config = home, config
        settings = Settings("local", home)
        self.labels = {model: LabelStore.from_uri(label_store_uri(settings, config, model)) for model in config.models}
        self.models = {model: ModelStore.from_uri(model_store_uri(settings, config, model)) for model in config.models}
        self.held_out_scores: dict[str, float] = {}

    def production_checkpoint(self, model: str) -> str | None:
        from data_engine.evaluation.promotion import ProductionPointer

        current = ProductionPointer(self.models[model].objects).current(model)
        return current.record["checkpoint_uri"] if current else None

    def held_out_ap(self, model: str, checkpoint_uri: str | None, python: str) -> float | None:
        """The checkpoint's AP on the model's held-out frames (scored once per checkpoint); None without one."""
        from data_engine.demo_held_out import held_out_ap

        if checkpoint_uri is None:
            return None
        if checkpoint_uri not in self.held_out_scores:
            truth = json.loads(held_out_path(self.home, model).read_text())
            self.held_out_scores[checkpoint_uri] = held_out_ap(python, checkpoint_uri, truth, self.home / "objects")
        return self.held_out_scores[checkpoint_uri]

    def latest_label_version(self, model: str) -> str | None:
        head = self.labels[model].latest(model)
        return head.version if head else None

    def selected_nothing(self, model: str, day: dt.date) -> bool:
        import pyarrow.parquet as pq

        path = self.home / "objects" / "assets" / "review_candidates" / model / f"{day.isoformat()}.parquet"
        return path.exists() and pq.read_metadata(path).num_rows == 0

    def advance(self, turn: Turn) -> None:
        """Move `turn` on by what the stores hold now; each step is noted once, in `events`."""
        from data_engine.evaluation.gates import evaluate_gates, failed
        from data_engine.evaluation.promotion import ProductionPointer

        model = turn.model
        objects = self.models[model].objects
        if turn.label_version is None:
            version = self.latest_label_version(model)
            if version is not None and (turn.day is None or version != turn.label_before):
                manifest = self.labels[model].manifest(model, version)
                turn.label_version, turn.images = version, int(manifest["counts"]["images"])
                merged = len(manifest.get("merged_tasks", []))
                turn.events.append(f"label version {version}: {turn.images} images" + (f" ({merged} review batch(es) merged)" if merged else ""))
            elif turn.day is not None and self.selected_nothing(model, turn.day):
                turn.decision = "nothing selected for review"
                turn.events.append(f"the selection of {turn.day} found no frame to review")
            return
        if turn.candidate is None:
            for key in objects.list(f"{model}/candidates/"):
                record = json.loads(objects.get(key))
                if record["label_version"] == turn.label_version:
                    turn.candidate = record["candidate_id"]
                    turn.events.append(f"trained candidate {turn.candidate} ({record['selection_metric']} on validation {record['selected_value']:.3f})")
            return
        pointer = ProductionPointer(objects)
        key = f"{model}/evaluations/{turn.candidate}/report.json"
        if turn.candidate_ap is None:
            if key not in objects.list(f"{model}/evaluations/{turn.candidate}/"):
                return
            report = json.loads(objects.get(key))
            scores = report["scores"]
            turn.candidate_ap = scores["candidate"]["ap"]
            turn.production_before = (scores.get("production") or {}).get("ap")
            gates = failed(evaluate_gates(report, self.config.models[model].gates, mltest_configured=self.config.models[model].evaluation.mltest is not None))
            before = f"production {turn.production_before:.3f}" if turn.production_before is not None else "no production model yet"
            turn.events.append(f"evaluated on the test split: candidate AP {turn.candidate_ap:.3f}, {before}")
            if gates:
                turn.decision = "kept production: gates failed (" + ", ".join(g.name for g in gates) + ")"
                turn.production_after = turn.production_before
            return
        current = pointer.current(model)
        if current is not None and current.record["candidate"] == turn.candidate:
            turn.decision = "promoted to production"
            turn.production_after = turn.candidate_ap


def _ap(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def run_demo(options: DemoOptions, out: Callable[[str], None] = print) -> list[Turn]:
    """Run the loop for the options' models and turns; the turns, as printed."""
    from data_engine.annotation.label_studio import LabelStudioBackend
    from data_engine.annotation.label_studio_server import credentials_path, running_label_studio
    from data_engine.annotation.label_studio_server import prepare as prepare_server
    from data_engine.defs.local_launcher import TRAINER_PYTHON_ENV
    from data_engine.reviewer import ReviewerUnavailable, review_demo_model
    from data_engine.training.trainer_env import ensure_trainer_env

    config, days, env = prepare(options, out)
    trainer_python = os.environ.get(TRAINER_PYTHON_ENV) or str(ensure_trainer_env(log=out))
    credentials = prepare_server(options.home, options.annotation_port)
    turns: list[Turn] = []
    with ExitStack() as stack:
        out(f"starting Label Studio on {credentials.url} (the first start sets up its database: minutes)")
        stack.enter_context(running_label_studio(options.home, credentials, options.home / "label-studio.log"))
        out(f"starting Dagster on http://127.0.0.1:{options.dagster_port} (log {options.home / 'dagster.log'})")
        dagster = Dagster(stack.enter_context(running_dagster(options.home, env, options.dagster_port)))
        # On by default with an annotation server; starting it is a no-op then, and waits for the code location.
        dagster.start_sensor("review_automation_sensor")
        out(
            f"Dagster UI {dagster.url}: Runs (each stage's run), Automation (sensors), Assets > evaluation_report (AP, gates, charts)."
            f" Label Studio {credentials.url}: log in as {credentials.email}, password in {credentials_path(options.home)}"
        )
        backend = stack.enter_context(LabelStudioBackend(credentials.url, credentials.token, objects_root=options.home / "objects"))
        watcher = Watcher(options.home, config)
        failed_before = {run["runId"] for run in dagster.failed_runs()}
        plan = ([None] if options.initial_frames else []) + list(days)
        for number, day in enumerate(plan, start=0 if options.initial_frames else 1):
            current = [Turn(m, number, day, watcher.latest_label_version(m)) for m in options.models]
            production_before = {m: watcher.production_checkpoint(m) for m in options.models}
            out(f"--- turn {number}: " + (f"selection of {day}" if day else "training on the initial labels"))
            for turn in current:
                if day is not None:
                    dagster.launch_selection(turn.model, day)
            deadline = time.monotonic() + options.turn_timeout_s
            while any(turn.decision is None for turn in current):
                for turn in current:
                    if turn.decision is None and turn.label_version is None and day is not None:
                        try:
                            summary = review_demo_model(backend, config, turn.model, options.reviewer, options.home, options.home / "warehouse.duckdb")
                        except ReviewerUnavailable:
                            pass  # the warehouse is busy with a selection run: the next poll reviews
                        else:
                            if summary.submitted or summary.skipped or summary.rejected:
                                turn.events.append("reviewer: " + summary.line(turn.model).split(": ", 1)[1])
                    watcher.advance(turn)
                    for event in turn.events:
                        out(f"{turn.model} turn {turn.number}: {event}")
                    turn.events.clear()
                failures = [run for run in dagster.failed_runs() if run["runId"] not in failed_before]
                if failures:
                    raise DemoError(f"Dagster run {failures[0]['runId']} ({failures[0]['jobName']}) failed: see {dagster.url}/runs/{failures[0]['runId']}")
                if time.monotonic() > deadline:
                    raise DemoError(f"turn {number} did not finish within {options.turn_timeout_s:.0f} s: see {dagster.url}/runs")
                time.sleep(POLL_S)
            for turn in current:
                turn.held_out_before = watcher.held_out_ap(turn.model, production_before[turn.model], trainer_python)
                turn.held_out_after = watcher.held_out_ap(turn.model, watcher.production_checkpoint(turn.model), trainer_python)
                out(f"{turn.model} turn {turn.number}: {turn.decision}; production AP {_ap(turn.held_out_before)} -> {_ap(turn.held_out_after)}"
                    f" on the held-out frames ({_ap(turn.production_before)} -> {_ap(turn.production_after)} on the test split)")
            turns += current
        out(f"summary: AP of the production model before -> after each turn on each model's held-out frames of"
            f" {days[0] - dt.timedelta(days=1)} (the same frames every turn; in brackets, on the turn's test split):")
        for turn in turns:
            out(f"  {turn.model} turn {turn.number} ({turn.day or 'initial labels'}): {_ap(turn.held_out_before)} -> {_ap(turn.held_out_after)}"
                f"  ({_ap(turn.production_before)} -> {_ap(turn.production_after)})  {turn.decision}")
        if not options.exit_when_done:
            out(f"the loop is done; Dagster ({dagster.url}) and Label Studio ({credentials.url}) keep running until Ctrl-C")
            try:
                signal.pause()  # until Ctrl-C
            except KeyboardInterrupt:
                pass
    return turns

