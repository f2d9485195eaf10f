"""The local profile's trainer launcher: the trainer as a subprocess in its own environment, through
Dagster's PipesSubprocessClient (the context and messages travel through temporary files)."""

# No `from __future__ import annotations`: Dagster reads the fields' annotations at class creation.
from pathlib import Path
from typing import Any

import dagster as dg

from data_engine.defs.trainer_launcher import Entrypoint, TrainerLauncherResource

# Environment variable naming the trainer's interpreter; it overrides the models' training.local_python.
TRAINER_PYTHON_ENV = "DATA_ENGINE_TRAINER_PYTHON"


class LocalTrainerLauncher(TrainerLauncherResource):
    """Runs `<python> -m data_engine_trainer <entrypoint>` with `trainer_dir` on its path. Frames are read
    from `frames_root` (the local object store: `s3://bucket/key` is `<frames_root>/bucket/key`), which
    the launcher adds to the extras. A cancelled run stops the subprocess (SIGINT)."""

    # Paths come from the profile and config (defs/profiles.py), never from run config.
    trainer_dir: dg.ResourceDependency[str]
    frames_root: dg.ResourceDependency[str]
    python: dg.ResourceDependency[str | None] = None  # from DATA_ENGINE_TRAINER_PYTHON; wins over model_pythons
    model_pythons: dg.ResourceDependency[dict[str, str]] = {}  # training.local_python per model

    def interpreter(self, model: str) -> str:
        """The trainer's interpreter for `model`; without one configured, `data-engine trainer-env`'s."""
        from data_engine.training.trainer_env import trainer_python

        python = self.python or self.model_pythons.get(model) or str(trainer_python())
        if not Path(python).exists():
            raise dg.Failure(
                f"the trainer's interpreter {python} does not exist: create the trainer environment with"
                f" `data-engine trainer-env`, or point {TRAINER_PYTHON_ENV} (or training.local_python) at one"
            )
        return python

    def run(
        self,
        context: dg.AssetExecutionContext,
        *,
        model: str,
        request_id: str,
        entrypoint: Entrypoint,
        extras: dict[str, Any],
    ) -> dg.PipesClientCompletedInvocation:
        python = self.interpreter(model)
        context.log.info(f"request {request_id}: {python} -m data_engine_trainer {entrypoint} (in {self.trainer_dir})")
        # OMP_WAIT_POLICY=PASSIVE: torch's idle threads yield the CPU, which keeps a busy laptop responsive.
        client = dg.PipesSubprocessClient(env={"PYTHONPATH": self.trainer_dir, "OMP_WAIT_POLICY": "PASSIVE"}, cwd=self.trainer_dir)
        return client.run(
            command=[python, "-m", "data_engine_trainer", entrypoint],
            context=context,
            extras={**extras, "frames_root": self.frames_root},
        )
