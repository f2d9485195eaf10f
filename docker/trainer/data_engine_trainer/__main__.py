"""`python -m data_engine_trainer {train,evaluate}`: started through Dagster Pipes by the product (the
extras carry the inputs), or by hand with `--extras FILE` (no Dagster; reports go to stdout)."""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterator
from typing import Any

from data_engine_trainer.distributed import Processes, relaunch_under_torchrun, under_torchrun, wanted_processes
from data_engine_trainer.reporting import PipesReporter, PrintReporter, Reporter


@contextlib.contextmanager
def reporting(extras_file: str | None, processes: Processes) -> Iterator[tuple[dict[str, Any] | None, Reporter]]:
    """Rank 0's extras and reporter; other ranks get None (the extras are broadcast) and a silent one."""
    if not processes.is_main:
        yield None, Reporter()
    elif extras_file:
        with open(extras_file) as handle:
            yield json.load(handle), PrintReporter()
    else:
        from dagster_pipes import open_dagster_pipes

        with open_dagster_pipes(**pipes_channels()) as pipes:
            yield dict(pipes.extras), PipesReporter(pipes)


def pipes_channels() -> dict[str, Any]:
    """How the launcher passes the Pipes context and reads the messages: through S3 when its parameters
    name a bucket (the AWS Batch launcher), else dagster-pipes' defaults (the local launcher's files)."""
    from dagster_pipes import PipesEnvVarParamsLoader, PipesS3ContextLoader, PipesS3MessageWriter

    if "bucket" not in PipesEnvVarParamsLoader().load_context_params():
        return {}
    import boto3

    s3 = boto3.client("s3")
    return {"context_loader": PipesS3ContextLoader(client=s3), "message_writer": PipesS3MessageWriter(client=s3)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m data_engine_trainer", description=__doc__)
    parser.add_argument("entrypoint", choices=["train", "evaluate"])
    parser.add_argument("--extras", help="a JSON file of extras, to run without Dagster Pipes")
    args = parser.parse_args(argv)
    if args.entrypoint == "train" and not under_torchrun() and wanted_processes() > 1:
        relaunch_under_torchrun(wanted_processes())
        return
    from data_engine_trainer.evaluate import evaluate
    from data_engine_trainer.train import train

    processes = Processes.start()
    try:
        with reporting(args.extras, processes) as (extras, reporter):
            entrypoint = {"train": train, "evaluate": evaluate}[args.entrypoint]
            entrypoint(processes.broadcast(extras), reporter, processes)
    finally:
        processes.stop()


if __name__ == "__main__":
    main()
