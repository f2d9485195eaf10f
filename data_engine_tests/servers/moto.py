"""An in-process moto server for AWS APIs SeaweedFS does not cover (Batch, SSM, Logs, IAM...)."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from moto.server import ThreadedMotoServer


@dataclass(frozen=True)
class MotoServer:
    endpoint_url: str

    def env(self) -> dict[str, str]:
        """The standard AWS variables; botocore honours AWS_ENDPOINT_URL for every service."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def reset(self) -> None:
        """Forget all AWS state (the Batch config below survives a reset)."""
        _post(self.endpoint_url + "/moto-api/reset")


def _post(url: str, payload: dict | None = None) -> None:
    data = json.dumps(payload).encode() if payload is not None else b""
    with urllib.request.urlopen(urllib.request.Request(url, data=data, method="POST"), timeout=10):
        pass


@contextmanager
def running_moto() -> Iterator[MotoServer]:
    """Run moto on a free 127.0.0.1 port, with Batch jobs simulated instead of run in Docker.

    With `use_docker: false` moto's batch_simple marks a job SUCCEEDED inside submit_job (set
    MOTO_SIMPLE_BATCH_FAIL_AFTER to make it fail); no Docker engine is needed.
    """
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint_url = f"http://{host}:{port}"
        _post(endpoint_url + "/moto-api/config", {"batch": {"use_docker": False}})
        yield MotoServer(endpoint_url=endpoint_url)
    finally:
        server.stop()
