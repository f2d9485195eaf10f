"""Fault injection, armed by a test and consumed by the server.

Two kinds:
- HTTP faults, matched on method + path regex before auth and routing: an error status for the
  next N matching requests (`fail_next`), or a delay before the request is applied (`slow`; longer
  than the client's timeout, it is a request applied late, after the client resent it).
- Background-request faults, consumed when a request (task creation, export) is created:
  it fails with a message, never finishes, or (exports) yields a broken archive.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass


@dataclass
class HttpFault:
    method: str
    path: re.Pattern[str]
    remaining: int | None  # None = forever
    status: int | None = None
    retry_after: str | None = None
    detail: str = ""
    delay: float = 0.0

    def matches(self, method: str, path: str) -> bool:
        return (self.method in ("*", method)) and bool(self.path.search(path))


@dataclass
class RequestFault:
    action: str  # create | export | "*"
    kind: str  # fail | hang | truncated | invalid_json
    remaining: int
    message: str = ""


class Faults:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._http: list[HttpFault] = []
        self._requests: list[RequestFault] = []

    # --- HTTP level -------------------------------------------------------------------------

    def fail_next(
        self,
        method: str,
        path: str,
        *,
        status: int = 503,
        times: int = 1,
        retry_after: float | None = None,
        detail: str = "",
    ) -> None:
        """Answer the next `times` requests matching METHOD + path regex with `status`.

        429 carries `Retry-After` (default 0 s, CVAT's throttling always sends one).
        """
        if status == 429 and retry_after is None:
            retry_after = 0
        with self._lock:
            self._http.append(
                HttpFault(
                    method=method.upper(),
                    path=re.compile(path),
                    remaining=times,
                    status=status,
                    retry_after=None if retry_after is None else str(retry_after),
                    detail=detail or f"injected fault {status}",
                )
            )

    def slow(self, method: str, path: str, *, seconds: float, times: int | None = None) -> None:
        """Delay matching requests by `seconds` (forever, or for the next `times`) before they are handled:
        with `seconds` above the client's timeout, CVAT applies the request after the client gave up on it."""
        with self._lock:
            self._http.append(HttpFault(method.upper(), re.compile(path), times, delay=seconds))

    def take_http(self, method: str, path: str) -> tuple[float, HttpFault | None]:
        """Consume the faults matching a request: (total delay, first error fault or None)."""
        delay, error = 0.0, None
        with self._lock:
            for fault in list(self._http):
                if not fault.matches(method, path):
                    continue
                if fault.status is not None and error is not None:
                    continue
                if fault.status is not None:
                    error = fault
                else:
                    delay += fault.delay
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._http.remove(fault)
        return delay, error

    # --- background requests ----------------------------------------------------------------

    def fail_requests(self, action: str = "export", *, message: str = "Injected failure", times: int = 1) -> None:
        """The next `times` background requests of `action` end with status `failed`."""
        self._add_request_fault(action, "fail", times, message)

    def hang_requests(self, action: str = "export", *, times: int = 1) -> None:
        """The next `times` background requests of `action` stay `started` forever."""
        self._add_request_fault(action, "hang", times)

    def corrupt_exports(self, kind: str = "truncated", *, times: int = 1) -> None:
        """The next exports finish but serve a broken zip ('truncated') or broken JSON ('invalid_json')."""
        if kind not in ("truncated", "invalid_json"):
            raise ValueError(kind)
        self._add_request_fault("export", kind, times)

    def _add_request_fault(self, action: str, kind: str, times: int, message: str = "") -> None:
        with self._lock:
            self._requests.append(RequestFault(action, kind, times, message))

    def take_request_fault(self, action: str) -> RequestFault | None:
        with self._lock:
            for fault in self._requests:
                if fault.action in ("*", action):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._requests.remove(fault)
                    return fault
        return None

    def clear(self) -> None:
        with self._lock:
            self._http.clear()
            self._requests.clear()
