"""Start/stop the ``bqemulator`` BigQuery emulator for tests.

The emulator lives in its own uv project (``data_engine_tests/servers/bqemulator``) because it pins
``sqlglot<30.12`` and ``duckdb==1.5.5``, which conflict with the main environment. Tests run in the
main venv and only talk to the emulator over HTTP (REST API) and gRPC (Storage API).

Install the tool environment once (CI and local)::

    uv sync --frozen --project data_engine_tests/servers/bqemulator

Offline startup: bqemulator runs ``INSTALL spatial; LOAD spatial`` when it starts, which would
download from extensions.duckdb.org. We pre-install the extension from the
``duckdb-extension-spatial`` wheel into a DuckDB extension directory under ``workdir`` and point the
emulator process's ``HOME`` there (DuckDB's default extension directory is
``$HOME/.duckdb/extensions``), so nothing depends on or touches the user's ``~/.duckdb``.

Known emulator gaps (see data_engine_tests/test_bigquery_emulator.py): ``dry_run`` reports
``total_bytes_processed == 0`` and ``maximum_bytes_billed`` is not enforced, so cost/pruning checks
cannot be tested against it; read query results over REST (``create_bqstorage_client=False``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from data_engine_tests.servers.ports import free_ports

if TYPE_CHECKING:
    from google.cloud import bigquery

TOOL_PROJECT_DIR = Path(__file__).resolve().parent / "bqemulator"
TOOL_VENV = TOOL_PROJECT_DIR / ".venv"
BQEMULATOR_BIN = TOOL_VENV / "bin" / "bqemulator"
TOOL_PYTHON = TOOL_VENV / "bin" / "python"
INSTALL_HINT = "uv sync --frozen --project data_engine_tests/servers/bqemulator"

HOST = "127.0.0.1"
DEFAULT_STARTUP_TIMEOUT_S = 60.0

# Runs in the tool venv's interpreter (duckdb 1.5.5): copies the spatial extension shipped in the
# duckdb-extension-spatial wheel into the extension directory given as argv[1].
_INSTALL_SPATIAL_SCRIPT = r"""
import sys
from pathlib import Path

import duckdb
import duckdb_extension_spatial

ext_dir = sys.argv[1]
candidates = sorted(
    Path(duckdb_extension_spatial.__file__).parent.glob(
        f"extensions/v{duckdb.__version__}/spatial.duckdb_extension"
    )
)
if not candidates:
    sys.exit(
        f"no spatial extension for duckdb {duckdb.__version__} in "
        f"{Path(duckdb_extension_spatial.__file__).parent}; duckdb and "
        "duckdb-extension-spatial versions must match exactly"
    )
con = duckdb.connect()
con.execute("SET autoinstall_known_extensions = false")
con.execute(f"SET extension_directory = '{ext_dir}'")
con.execute(f"INSTALL '{candidates[0]}'")
con.execute("LOAD spatial")
print(con.execute("SELECT ST_AsText(ST_Point(1, 2))").fetchone()[0])
"""


class BigQueryEmulatorError(RuntimeError):
    """The emulator is not installed, failed to start, or died."""


@dataclass(frozen=True)
class BigQueryEmulator:
    project: str
    rest_port: int
    grpc_port: int
    log_path: Path
    process: subprocess.Popen[bytes]

    @property
    def host_port(self) -> str:
        """REST ``host:port`` (the value of ``BIGQUERY_EMULATOR_HOST``)."""
        return f"{HOST}:{self.rest_port}"

    @property
    def grpc_host_port(self) -> str:
        """Storage Read/Write API ``host:port`` (use an insecure gRPC channel)."""
        return f"{HOST}:{self.grpc_port}"

    @property
    def rest_url(self) -> str:
        return f"http://{self.host_port}"

    def client(self, *, raise_on_query_errors: bool = True) -> bigquery.Client:
        """A ``google.cloud.bigquery.Client`` talking to this emulator with anonymous credentials.

        bqemulator 1.4.0 answers a *failed* ``jobs.query`` (the fast path behind
        ``Client.query_and_wait``) with HTTP 200, ``jobComplete: true``, no rows and an ``errors``
        list, where BigQuery answers HTTP 400. The client library ignores ``errors`` there, so
        ``query_and_wait`` would silently return an empty result for a broken query. With
        ``raise_on_query_errors`` (default) the returned client raises ``BadRequest`` instead,
        like BigQuery does.
        """
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import bigquery

        cls = _client_class() if raise_on_query_errors else bigquery.Client
        return cls(
            project=self.project,
            credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=self.rest_url),
        )

    def log_tail(self, max_chars: int = 4000) -> str:
        return _tail(self.log_path, max_chars)


def _client_class() -> type[bigquery.Client]:
    from google.api_core import exceptions
    from google.cloud import bigquery

    class EmulatorBigQueryClient(bigquery.Client):
        """Raises on failed ``jobs.query`` responses that bqemulator returns with HTTP 200."""

        def _call_api(self, retry, span_name=None, *args, **kwargs):  # type: ignore[no-untyped-def]
            response = super()._call_api(retry, span_name, *args, **kwargs)
            if (
                kwargs.get("method") == "POST"
                and str(kwargs.get("path", "")).endswith("/queries")
                and isinstance(response, dict)
                and response.get("jobComplete")
                and response.get("errors")
                and not (response.get("schema") or {}).get("fields")
            ):
                errors = response["errors"]
                message = "; ".join(str(e.get("message", e)) for e in errors)
                reason = str(errors[0].get("reason", "")) if isinstance(errors[0], dict) else ""
                status = {"notFound": 404, "duplicate": 409, "accessDenied": 403}.get(reason, 400)
                raise exceptions.from_http_status(
                    status, f"bqemulator: query failed: {message}", errors=errors
                )
            return response

    return EmulatorBigQueryClient


def _tail(path: Path, max_chars: int = 4000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "<no log>"
    return text[-max_chars:]


def _tcp_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


def _ready(rest_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{rest_port}/readyz", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def require_installed() -> None:
    """Install the emulator's tool environment from its lock on first use (`uv run` exports $UV)."""
    if is_installed():
        return
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv:
        subprocess.run([uv, "sync", "--frozen", "--project", str(TOOL_PROJECT_DIR)], check=False, capture_output=True)
    if not is_installed():
        raise BigQueryEmulatorError(
            f"bqemulator tool environment not found at {TOOL_VENV}. Install it with:\n    {INSTALL_HINT}"
        )


def is_installed() -> bool:
    return BQEMULATOR_BIN.exists() and TOOL_PYTHON.exists()


def _install_spatial_extension(home: Path, env: dict[str, str]) -> None:
    ext_dir = home / ".duckdb" / "extensions"
    ext_dir.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [str(TOOL_PYTHON), "-c", _INSTALL_SPATIAL_SCRIPT, str(ext_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise BigQueryEmulatorError(
            "installing the DuckDB spatial extension from the duckdb-extension-spatial wheel failed "
            f"(rc={result.returncode}):\n{result.stdout}\n{result.stderr}\n"
            f"Reinstall the tool env with: {INSTALL_HINT}"
        )


def _terminate(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    # The emulator runs in its own session/process group; signal the whole group so workers die too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=grace_s)
    else:
        # The leader exited; make sure nothing it spawned in its group survives.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def running_bqemulator(
    workdir: Path,
    project: str = "test-project",
    startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S,
    log_level: str = "info",
) -> Iterator[BigQueryEmulator]:
    """Run an ephemeral (in-memory) bqemulator on free loopback ports for the duration of the block.

    ``workdir`` holds the emulator's HOME (DuckDB extension directory), upload staging directory and
    ``bqemulator.log``.
    """
    require_installed()
    workdir = Path(workdir).resolve()
    home = workdir / "home"
    uploads = workdir / "uploads"
    for d in (home, uploads):
        d.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "bqemulator.log"

    env = {k: v for k, v in os.environ.items() if not k.startswith(("BQEMU_", "VIRTUAL_ENV", "PYTHON"))}
    env.update(
        {
            # DuckDB resolves its default extension directory from HOME (~/.duckdb/extensions).
            "HOME": str(home),
            "XDG_CACHE_HOME": str(home / ".cache"),
            # avro would be INSTALLed from extensions.duckdb.org at boot (best effort); skip the
            # network attempt. Avro load/extract jobs are not used by our tests.
            "BQEMU_ENABLE_FORMAT_EXTENSIONS": "false",
            "BQEMU_UPLOAD_STAGING_DIR": str(uploads),
            "BQEMU_METRICS_ENABLED": "false",
            "BQEMU_TRACING_ENABLED": "false",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
    )
    _install_spatial_extension(home, env)

    rest_port, grpc_port = free_ports(2)
    cmd = [
        str(BQEMULATOR_BIN),
        "start",
        "--rest-host",
        HOST,
        "--rest-port",
        str(rest_port),
        "--grpc-host",
        HOST,
        "--grpc-port",
        str(grpc_port),
        "--project",
        project,
        "--ephemeral",
        "--log-level",
        log_level,
        "--log-format",
        "json",
    ]
    with open(log_path, "ab") as log:
        log.write(f"$ {' '.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            cmd,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    emulator = BigQueryEmulator(
        project=project, rest_port=rest_port, grpc_port=grpc_port, log_path=log_path, process=proc
    )
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            if proc.poll() is not None:
                raise BigQueryEmulatorError(
                    f"bqemulator exited with rc={proc.returncode} during startup; log {log_path}:\n"
                    f"{emulator.log_tail()}"
                )
            if _ready(rest_port) and _tcp_open(grpc_port):
                break
            if time.monotonic() > deadline:
                raise BigQueryEmulatorError(
                    f"bqemulator not ready on {emulator.host_port} (gRPC {grpc_port}) within "
                    f"{startup_timeout_s:.0f}s; log {log_path}:\n{emulator.log_tail()}"
                )
            time.sleep(0.1)
        yield emulator
    finally:
        _terminate(proc)
