"""Backoff with jitter for transient failures, and an outer deadline for everything that waits.

cvat-sdk retries only GETs on 502/503/504 (and 429 with Retry-After); POST/PATCH on 429 or 5xx,
and any 500, reach us. `with_retries` retries what `classify` calls transient, sleeping a jittered,
exponentially growing delay (at least the server's Retry-After, honoured in full), and gives up after
`attempts` tries or when the next sleep would pass the deadline. `Deadline` bounds polling loops.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    base_delay_s: float = 0.5
    max_delay_s: float = 20.0
    deadline_s: float = 120.0

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Equal jitter: uniform in [c/2, c] for c = min(max, base * 2^attempt); never less than the
        server's Retry-After, however long (the deadline, not max_delay_s, bounds what is waited)."""
        ceiling = min(self.max_delay_s, self.base_delay_s * 2**attempt)
        jittered = rng.uniform(ceiling / 2, ceiling)
        return max(jittered, retry_after or 0.0)


@dataclass(frozen=True)
class Transient:
    """`classify`'s verdict on an error: retry it (after at least `retry_after` seconds)."""

    reason: str
    retry_after: float | None = None


class Deadline:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.end - time.monotonic()


class RetriesExhausted(RuntimeError):
    """Raised from the last transient error: the message says what was tried, how often, and why."""


def with_retries(
    call: Callable[[], T],
    *,
    what: str,
    classify: Callable[[BaseException], Transient | None],
    policy: RetryPolicy = RetryPolicy(),
    before_retry: Callable[[BaseException], None] | None = None,
) -> T:
    """Run `call`; on a transient error wait and run it again. `before_retry` may re-check state
    (e.g. whether a POST the server answered with a 500 was applied after all)."""
    rng = random.Random()
    deadline = Deadline(policy.deadline_s)
    attempt = 0
    while True:
        try:
            return call()
        except Exception as error:  # noqa: BLE001 - classified below
            verdict = classify(error)
            if verdict is None:
                raise
            attempt += 1
            pause = policy.delay(attempt - 1, verdict.retry_after, rng)
            if attempt >= policy.attempts or pause > deadline.remaining():
                asked = f" (the server asked to retry after {verdict.retry_after:g}s)" if verdict.retry_after else ""
                raise RetriesExhausted(
                    f"{what}: gave up after {attempt} attempt(s) in {policy.deadline_s - deadline.remaining():.1f}s"
                    f" (retry deadline {policy.deadline_s:g}s); last error: {verdict.reason}{asked}"
                ) from error
            time.sleep(pause)
            if before_retry is not None:
                before_retry(error)


def settle_then_recheck(
    what: str,
    *,
    write: bool,
    timed_out: Callable[[BaseException], bool],
    settle_s: float,
    log: logging.Logger,
    recheck: Callable[[BaseException], None] | None = None,
) -> Callable[[BaseException], None]:
    """A `before_retry` for calls whose answer may be lost after the server acted: a `write` that timed
    out may still be applied, so wait `settle_s` before `recheck` (or the call itself) looks again."""

    def before_retry(error: BaseException) -> None:
        if write and timed_out(error):
            log.warning(f"{what}: timed out; waiting {settle_s:g}s for it to land before looking again")
            time.sleep(settle_s)
        if recheck is not None:
            recheck(error)

    return before_retry
