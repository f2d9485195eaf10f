"""Where the trainer reports: Dagster Pipes (rank 0 of a Pipes launch), stdout (a run with an
`--extras` file and no Dagster), or nowhere (the other ranks of a distributed run)."""

from __future__ import annotations

import json
from typing import Any


class Reporter:
    """Says nothing: the non-zero ranks of a distributed run."""

    def log(self, message: str) -> None: ...

    def message(self, payload: dict[str, Any]) -> None: ...

    def finish(self, metadata: dict[str, Any]) -> None: ...


class PipesReporter(Reporter):
    """Log lines, one custom message per checkpoint (or per detections file), one final materialization."""

    def __init__(self, pipes: Any):
        self.pipes = pipes

    def log(self, message: str) -> None:
        self.pipes.log.info(message)

    def message(self, payload: dict[str, Any]) -> None:
        self.pipes.report_custom_message(payload)

    def finish(self, metadata: dict[str, Any]) -> None:
        self.pipes.report_asset_materialization(metadata=metadata)


class PrintReporter(Reporter):
    def log(self, message: str) -> None:
        print(message, flush=True)

    def message(self, payload: dict[str, Any]) -> None:
        print(json.dumps(payload), flush=True)

    def finish(self, metadata: dict[str, Any]) -> None:
        print(json.dumps({"materialization": metadata}), flush=True)
