"""The loop-effectiveness benchmark at a tiny size (data_engine_tests/benchmarks/loop.py): one turn of the
loop on demo data, through the product's own assets and the reference trainer, makes the production model
better on frames no model trained on. No timing here; the full benchmark also compares with random frames."""

from __future__ import annotations

from data_engine.config.models import FleetConfig
from data_engine.defs.local_launcher import TRAINER_PYTHON_ENV
from data_engine.training.trainer_env import ensure_trainer_env
from data_engine_tests.benchmarks import loop
from data_engine_tests.conftest import TEST_FLEET

# Two classes on two cameras: a detector learns them in the few dozen training steps a test can afford.
TOY = FleetConfig.model_validate({
    "warehouse": TEST_FLEET["warehouse"],
    "models": {"toy": {
        "classes": ["PET", "Can"],
        "clients": {"line": {"cameras": ["cam-01", "cam-02"]}},
        "selection": {
            "start_date": "2026-01-01", "max_frames_per_day": 100, "max_frames_per_camera_per_day": 100,
            "filters": [
                {"kind": "class_overlap", "min_iou": 0.5, "class_pairs": [["PET", "Can"]]},
                {"kind": "confidence_band", "min_score": 0.3, "max_score": 0.6},
                {"kind": "empty_frames", "max_frames": 4},
            ],
        },
        # A test split of a few frames gives a wide bootstrap interval: the overall-AP gate tolerates more.
        "gates": {"ap_tolerance": 0.05},
    }},
})
SMALL = {"epochs": 8, "batch_size": 4, "min_size": 180, "max_size": 240, "threads": 2, "seed": 0}


def test_one_turn_of_the_loop_makes_the_production_model_better(tmp_path, monkeypatch):
    monkeypatch.setenv(TRAINER_PYTHON_ENV, str(ensure_trainer_env()))
    result = loop.run_loop(
        tmp_path, model="toy", source=TOY, turns=1, frames_per_turn=40, start_frames=24, test_frames=40, frames_per_camera=36,
        hyperparameters=SMALL, arms=("selection",), log=lambda line: None,
    )
    [turn] = result["arms"]["selection"]
    assert turn.frames_reviewed == 40 and turn.label_images == 24 + 40  # the selection filled its day budget
    assert turn.promoted, "the candidate trained on the reviewed frames passed the gates"
    # Seeded data, sampling and training. The starting model (11 training frames) finds next to nothing; the
    # turn's (about 40) finds its first boxes: measured 0.0000 -> 0.0069 AP on the held-out frames.
    assert turn.ap > result["start"]["ap"] + 0.005, loop.summary(result)
