"""AWS API requests per minute while the Batch launcher watches a long training job.

    uv run python -m data_engine_tests.benchmarks.batch_polling [--minutes 240] [--log-every-s 30]

A scripted job stays RUNNING for N simulated minutes and its container logs a line every
`--log-every-s` seconds. Three pollers watch it, counting describe_jobs and get_log_events calls:

- product: `BatchJobs.watch` with the `LogFollower` of data_engine.training.batch and the default
  `training.batch` intervals (10 s growing to 120 s, jittered), on a simulated clock;
- baseline: a naive fixed-interval poller, describe_jobs and get_log_events every 6 s (the delay of
  the ECS waiter PipesECSClient uses), on the same simulated clock;
- dagster-aws's PipesCloudWatchLogReader tail (`tail_cloudwatch_events`), which has no pause between
  calls, measured for `--tail-seconds` of real time against the same in-memory log stream and scaled
  to a minute.

Batch's and CloudWatch Logs' request quotas are per account and region (GetLogEvents: a few per
second), shared by every job the team runs, so requests per minute is the figure that matters.
"""

from __future__ import annotations

import argparse
import random
import threading
import time
from typing import Any

from data_engine.config.models import BatchTrainingConfig
from data_engine.training.batch import BatchJobs, LogFollower

NAIVE_INTERVAL_S = 6.0
STREAM = "detector-train/default/task-1"


class SimulatedClock:
    def __init__(self) -> None:
        self.now = 0.0

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class FakeBatch:
    """describe_jobs of one job RUNNING until `ends_at` (simulated seconds), then SUCCEEDED."""

    def __init__(self, clock: Any, ends_at: float):
        self.clock, self.ends_at, self.calls = clock, ends_at, 0

    def describe_jobs(self, jobs: list[str]) -> dict[str, Any]:
        self.calls += 1
        status = "RUNNING" if self.clock() < self.ends_at else "SUCCEEDED"
        return {"jobs": [{"jobId": jobs[0], "jobName": "train-m-r", "status": status, "container": {"logStreamName": STREAM}, "attempts": []}]}


class FakeLogs:
    """get_log_events over a stream that gains a line every `every_s` seconds of `clock` until `ends_at`."""

    class exceptions:  # noqa: N801 (boto3's shape)
        ResourceNotFoundException = KeyError
        ThrottlingException = RuntimeError

    def __init__(self, clock: Any, every_s: float, ends_at: float = float("inf")):
        self.clock, self.every_s, self.ends_at, self.calls = clock, every_s, ends_at, 0

    def get_log_events(self, **kwargs: Any) -> dict[str, Any]:
        self.calls += 1
        start = int(kwargs.get("nextToken", "f/0").split("/")[1])
        end = int(min(self.clock(), self.ends_at) // self.every_s)
        events = [{"timestamp": i, "message": f"line {i}"} for i in range(start, end)]
        return {"events": events, "nextForwardToken": f"f/{end}"}


def product(minutes: float, log_every_s: float) -> tuple[int, int, int]:
    clock = SimulatedClock()
    batch, logs = FakeBatch(lambda: clock.now, minutes * 60), FakeLogs(lambda: clock.now, log_every_s, minutes * 60)
    lines: list[str] = []
    follower = LogFollower(logs, "/aws/batch/job", lines.append)
    config = BatchTrainingConfig(job_queue="q", job_definition="d", image="i")
    jobs = BatchJobs(batch, clock=lambda: clock.now, sleep=clock.sleep, rng=random.Random(0))
    jobs.watch("job-1", config, lambda job: follower.follow(job["container"]["logStreamName"]))
    follower.drain()  # as the launcher does once the job is over
    return batch.calls, logs.calls, len(lines)


def baseline(minutes: float, log_every_s: float) -> tuple[int, int, int]:
    clock = SimulatedClock()
    batch, logs = FakeBatch(lambda: clock.now, minutes * 60), FakeLogs(lambda: clock.now, log_every_s, minutes * 60)
    lines, token = 0, None
    while True:
        job = batch.describe_jobs(jobs=["job-1"])["jobs"][0]
        page = logs.get_log_events(logGroupName="/aws/batch/job", logStreamName=STREAM, startFromHead=True, **({"nextToken": token} if token else {}))
        lines, token = lines + len(page["events"]), page["nextForwardToken"]
        if job["status"] == "SUCCEEDED":
            return batch.calls, logs.calls, lines
        clock.sleep(NAIVE_INTERVAL_S)


def dagster_aws_tail_per_minute(seconds: float, log_every_s: float) -> float:
    from dagster_aws.pipes.message_readers import tail_cloudwatch_events

    started = time.monotonic()
    logs = FakeLogs(lambda: time.monotonic() - started, log_every_s)
    stop = threading.Event()

    def tail() -> None:
        for _ in tail_cloudwatch_events(logs, "/aws/batch/job", STREAM):
            if stop.is_set():
                return

    thread = threading.Thread(target=tail, daemon=True)
    thread.start()
    time.sleep(seconds)
    calls = logs.calls
    stop.set()  # the tail only looks at this when a line arrives
    return calls / seconds * 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=240, help="simulated minutes the job runs")
    parser.add_argument("--log-every-s", type=float, default=30, help="seconds between the container's log lines")
    parser.add_argument("--tail-seconds", type=float, default=2, help="real seconds to run dagster-aws's tail")
    args = parser.parse_args()

    ours = product(args.minutes, args.log_every_s)
    naive = baseline(args.minutes, args.log_every_s)
    assert ours[2] == naive[2], f"the pollers forwarded different line counts: {ours[2]} vs {naive[2]}"
    print(f"job RUNNING {args.minutes:g} simulated minutes, a log line every {args.log_every_s:g} s ({ours[2]} lines)")
    print(f"{'poller':<34} {'describe_jobs/min':>18} {'get_log_events/min':>19} {'total/min':>10}")
    for name, (describes, log_calls, _) in (("product (10 s -> 120 s, jittered)", ours), (f"naive fixed {NAIVE_INTERVAL_S:g} s", naive)):
        print(f"{name:<34} {describes / args.minutes:>18.2f} {log_calls / args.minutes:>19.2f} {(describes + log_calls) / args.minutes:>10.2f}")
    ratio = (naive[0] + naive[1]) / (ours[0] + ours[1])
    print(f"baseline / product requests: {ratio:.1f}x fewer requests per minute")
    tail = dagster_aws_tail_per_minute(args.tail_seconds, args.log_every_s)
    print(f"dagster-aws PipesCloudWatchLogReader tail: {tail:,.0f} get_log_events/min (over {args.tail_seconds:g} real s, in-memory stream)")


if __name__ == "__main__":
    main()
