"""Plays the trainer container of a Batch job in the tests (moto cannot run containers): a separate
process that talks Pipes to Dagster exactly as a container would, with dagster-pipes' S3 context
loader and message writer, from the bootstrap environment the launcher submitted with the job.

    python -m data_engine_tests.batch_container ENV_JSON [--crash]

`--crash` stops the process hard after its first messages are uploaded, as a spot reclaim would.
"""

from __future__ import annotations

import json
import os
import sys
import time

import boto3
from dagster_pipes import PipesMappingParamsLoader, PipesS3ContextLoader, PipesS3MessageWriter, open_dagster_pipes


def main(environment: dict[str, str], crash: bool) -> None:
    s3 = boto3.client("s3")
    attempt = int(environment.get("AWS_BATCH_JOB_ATTEMPT", "1"))
    with open_dagster_pipes(
        context_loader=PipesS3ContextLoader(client=s3),
        message_writer=PipesS3MessageWriter(client=s3, interval=0.1),
        params_loader=PipesMappingParamsLoader(environment),
    ) as pipes:
        pipes.log.info(f"attempt {attempt} training on label version {pipes.extras['label_version']}")
        if crash:
            time.sleep(1.5)  # let the writer upload the chunk, then die without a closing message
            os._exit(137)
        pipes.report_custom_message({"checkpoint": "epoch-1", "attempt": attempt})
        pipes.report_asset_materialization(metadata={"attempt": attempt, "epochs": 2})


if __name__ == "__main__":
    main(json.loads(sys.argv[1]), crash="--crash" in sys.argv[2:])
