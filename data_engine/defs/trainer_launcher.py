"""The trainer launcher resource: how the training and evaluation assets start a trainer program.

The assets only know this interface: a trainer (DESIGN.md, Trainer contract) started through Dagster
Pipes with its inputs as Pipes extras, waited for, its messages and materialization reported back.
Each profile picks an implementation (data_engine.defs.profiles): a subprocess in the trainer's own
environment locally, a container on AWS Batch in prod.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Literal

import dagster as dg

Entrypoint = Literal["train", "evaluate"]


class TrainerLauncherResource(dg.ConfigurableResource, ABC):
    """Starts one trainer invocation through Dagster Pipes and waits for it to finish."""

    @abstractmethod
    def run(
        self,
        context: dg.AssetExecutionContext,
        *,
        model: str,
        request_id: str,
        entrypoint: Entrypoint,
        extras: dict[str, Any],
    ) -> dg.PipesClientCompletedInvocation:
        """Run the trainer's `entrypoint` for `model` with `extras` as the Pipes extras.

        `request_id` identifies this invocation across retries (it is recorded in the run's
        `request.json` before the launch), so a launcher can find and reattach to an invocation that
        is still running instead of starting a second one.
        """
