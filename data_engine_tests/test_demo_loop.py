"""`data-engine demo` for real: demo data, Label Studio, `data-engine dev` (webserver, daemon, code location),
automation turned on through GraphQL, and the simulated reviewer, for one model and one turn. The slowest
test of the suite (about ten Dagster runs and sensor ticks); it asserts that the loop completed, not that
the AP rose (the loop benchmark does that)."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from data_engine import cli
from data_engine.annotation.label_studio_server import credentials_path, free_port, server_dir
from data_engine.evaluation.promotion import ProductionPointer
from data_engine.labels import LabelStore
from data_engine.training import ModelStore
from data_engine_tests.servers.label_studio import credentials_for_tests, template

MODEL = "municipals"


def test_the_demo_takes_a_model_from_selection_to_a_promotion_decision_unattended(local_env, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DATA_ENGINE_CONFIG")  # the shipped fleet, as a user runs it
    home = tmp_path / "demo"
    # Label Studio's database from the migrated template the session's server starts from (a first start migrates for minutes)
    shutil.copytree(template(), server_dir(home))
    credentials_for_tests().save(credentials_path(home))
    argv = ["demo", "--home", str(home), "--models", MODEL, "--turns", "1", "--frames-per-camera", "10", "--review-frames", "40"]
    argv += ["--initial-frames", "0", "--held-out-frames", "20", "--epochs", "2", "--dagster-port", str(free_port())]
    argv += ["--skip-rate", "0.1", "--reject-rate", "0.05", "--exit-when-done"]
    code = cli.run(argv)
    out, err = capsys.readouterr()
    assert code == 0, f"{out}\n{err}\n{(home / 'dagster.log').read_text()[-5000:]}"

    labels = LabelStore.local(home / "labels")
    version = labels.latest(MODEL).version
    manifest = labels.manifest(MODEL, version)
    assert manifest["merged_tasks"]  # the label version came from reviewed batches
    models = ModelStore.from_uri(str(home / "models"))
    [candidate] = [json.loads(models.objects.get(key)) for key in models.objects.list(f"{MODEL}/candidates/")]
    assert candidate["label_version"] == version
    report = json.loads(models.objects.get(f"{MODEL}/evaluations/{candidate['candidate_id']}/report.json"))
    production = ProductionPointer(models.objects).current(MODEL)
    promoted = production is not None and production.record["candidate"] == candidate["candidate_id"]
    decision = "promoted to production" if promoted else "kept production: gates failed"
    assert f"{MODEL} turn 1: {decision}" in out
    assert f"candidate AP {report['scores']['candidate']['ap']:.3f}" in out
    assert f"{MODEL} turn 1: label version {version}" in out
    assert "Dagster UI http://127.0.0.1:" in out
    # the demo's fleet config: the chosen model, training after every merge
    fleet = yaml.safe_load((home / "demo-fleet.yaml").read_text())
    assert list(fleet["models"]) == [MODEL] and fleet["models"][MODEL]["training"]["auto"] == {"min_new_reviewed_images": 1}
    assert manifest["counts"]["images"] >= 20  # enough for a validation and a test split
    assert fleet["models"][MODEL]["training"]["hyperparameters"]["epochs"] == 2
    # the yardstick: frames of the day before the turn's, none of them reviewed, scored with their truth
    held_out = json.loads((home / "held-out" / f"{MODEL}.json").read_text())
    assert len(held_out["images"]) == 20 and held_out["annotations"]
    reviewed = {image["file_name"] for image in labels.label_set(MODEL, version)["images"]}
    assert not reviewed & {image["file_name"] for image in held_out["images"]}
    assert len({image["captured_at"][:10] for image in held_out["images"]}) == 1
    assert f"{MODEL} turn 1: {decision}; production AP - -> " in out and " on the held-out frames (- -> " in out


@pytest.mark.parametrize(
    ("argument", "message"),
    [(["--turns", "0"], "turns is 0"), (["--initial-frames", "-1"], "initial-frames is -1"), (["--error-rate", "2"], "error-rate is 2")],
)
def test_bad_demo_arguments_are_refused_before_anything_starts(local_env, tmp_path, argument, message, capsys):
    assert cli.run(["demo", "--home", str(tmp_path / "demo"), *argument]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()


def test_a_demo_home_that_holds_a_demo_is_not_overwritten(local_env, tmp_path, capsys):
    home = tmp_path / "demo"
    home.mkdir()
    (home / "warehouse.duckdb").write_bytes(b"an earlier demo")
    assert cli.run(["demo", "--home", str(home), "--exit-when-done"]) == 1
    assert "already holds a demo" in capsys.readouterr().err
    assert (home / "warehouse.duckdb").read_bytes() == b"an earlier demo"
