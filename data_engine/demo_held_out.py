"""The demo's yardstick: the production model's AP on one fixed held-out set of demo frames per model.

The evaluation report scores a candidate and production on the test split of the candidate's label
version, and that split grows with every review, so its numbers of successive turns are not on the same
frames. The demo therefore also scores each turn's production model on frames of a day that is never
selected for review, labelled with the demo's hidden truth: the same frames for every turn, so AP before
and after compares across turns. The trainer's own `evaluate` entrypoint predicts (run by hand, as its
`--extras` CLI allows) and the product's COCO scoring counts the AP.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any


def held_out_ap(python: str, checkpoint_uri: str, truth: dict[str, Any], frames_root: Path) -> float:
    """AP@[.50:.95] of the checkpoint on `truth` (COCO; file_name = frame URI)."""
    from data_engine.evaluation.coco_metrics import coco_evaluation
    from data_engine.evaluation.evaluate import evaluation_extras, read_detections
    from data_engine.evaluation.report import align_detections
    from data_engine.objectstore import LocalObjectStore
    from data_engine.training.trainer_env import TRAINER_DIR

    with tempfile.TemporaryDirectory(prefix="demo-held-out-") as workdir:
        extras = evaluation_extras([checkpoint_uri], truth, str(Path(workdir) / "detections"), []) | {"frames_root": str(frames_root)}
        extras_file = Path(workdir) / "extras.json"
        extras_file.write_text(json.dumps(extras))
        env = os.environ | {"PYTHONPATH": str(TRAINER_DIR), "OMP_WAIT_POLICY": "PASSIVE"}
        finished = subprocess.run(
            [python, "-m", "data_engine_trainer", "evaluate", "--extras", str(extras_file)],
            cwd=TRAINER_DIR, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        )
        if finished.returncode != 0:
            raise RuntimeError(f"the trainer's evaluate entrypoint failed on the held-out frames: {finished.stderr.strip()[-2000:]}")
        documents = read_detections(LocalObjectStore(Path(workdir)), "detections")
    return coco_evaluation(truth, align_detections(truth, documents[(checkpoint_uri, None)], checkpoint_uri))["ap"]
