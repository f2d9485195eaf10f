"""Run the fake CVAT on a free loopback port in a background thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from .app import CvatApp
from .faults import Faults
from .state import FakeCvatState


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr; the state keeps its own request log."""

    def log_request(self, *args, **kwargs) -> None:
        pass


@dataclass
class CvatServer:
    url: str
    state: FakeCvatState
    httpd: BaseWSGIServer

    @property
    def token(self) -> str:
        return self.state.token

    @property
    def faults(self) -> Faults:
        return self.state.faults

    def make_client(self, **config):
        """A cvat-sdk client logged in with the server's token (`config` sets `Client.config` fields)."""
        from cvat_sdk import make_client

        client = make_client(self.url, access_token=self.token)
        for key, value in config.items():
            setattr(client.config, key, value)
        return client


@contextmanager
def running_cvat_server(*, request_delay: float = 0.0, state: FakeCvatState | None = None) -> Iterator[CvatServer]:
    """`with running_cvat_server() as server:` -> a fresh fake CVAT at `server.url`."""
    state = state or FakeCvatState(request_delay=request_delay)
    httpd = make_server("127.0.0.1", 0, CvatApp(state), threaded=True, request_handler=_QuietHandler)
    url = f"http://127.0.0.1:{httpd.server_port}"
    state.base_url = url
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-cvat", daemon=True)
    thread.start()
    try:
        yield CvatServer(url=url, state=state, httpd=httpd)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
