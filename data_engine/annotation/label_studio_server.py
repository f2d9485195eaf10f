"""Label Studio, the local profile's annotation server: its tool environment, its settings, its process.

Label Studio runs from its own uv project (`label_studio_tool/`, installed from its lock on first use
into `~/.cache/data-engine/label-studio-tool`, or `$DATA_ENGINE_TOOLS/label-studio-tool`; never into the
product's venv), on SQLite in `$DATA_ENGINE_HOME/label-studio`, listening on loopback only,
with analytics, the PyPI version check and sign-up without an invite link turned off. Its first start
creates the admin user and an API token; both are kept in `credentials.json` (mode 600) next to the
database, which is where the product's annotation resource finds them.

Frames are served by Label Studio itself from `$DATA_ENGINE_HOME` (its local-files document root): a
task's image is `/data/local-files/?d=objects/<bucket>/<key>`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

TOOL_PROJECT = Path(__file__).resolve().parent / "label_studio_tool"
HOST = "127.0.0.1"
DEFAULT_PORT = 8080
ADMIN_EMAIL = "admin@data-engine.local"


class ServerError(RuntimeError):
    """Label Studio could not be installed, started, or reached; the message says what to do."""


@dataclass(frozen=True)
class Credentials:
    """Where the server listens and who the pipeline is on it (the admin user and its API token)."""

    url: str
    email: str
    password: str
    token: str

    @classmethod
    def new(cls, port: int) -> Credentials:
        return cls(
            url=f"http://{HOST}:{port}", email=ADMIN_EMAIL, password=secrets.token_urlsafe(12), token=secrets.token_hex(20)
        )

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> Credentials | None:
        """The saved credentials, or None before the first start."""
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except ValueError as error:
            raise ServerError(f"{path} is not valid JSON ({error}); delete it and the folder next to it to start afresh") from None
        try:
            return cls(**{name: str(data[name]) for name in ("url", "email", "password", "token")})
        except KeyError as missing:
            raise ServerError(f"{path} has no {missing}; delete it and the folder next to it to start afresh") from None


def server_dir(home: Path) -> Path:
    return home / "label-studio"


def credentials_path(home: Path) -> Path:
    return server_dir(home) / "credentials.json"


def tool_env() -> Path:
    """Where Label Studio's tool environment lives: outside the repository and the product's venv."""
    tools = os.environ.get("DATA_ENGINE_TOOLS") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "data-engine"
    return Path(tools) / "label-studio-tool"


def install_tool() -> Path:
    """The `label-studio` executable, installing its tool environment from the lock when missing."""
    executable = tool_env() / "bin" / "label-studio"
    if not executable.exists():
        uv = os.environ.get("UV") or shutil.which("uv")
        command = ["uv", "sync", "--frozen", "--no-install-project", "--project", str(TOOL_PROJECT)]
        if uv is None:
            raise ServerError("uv installs Label Studio's tool environment: pip install uv, then run data-engine annotation-server again")
        env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"} | {"UV_PROJECT_ENVIRONMENT": str(tool_env())}
        result = subprocess.run([uv, *command[1:]], env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0 or not executable.exists():
            raise ServerError(f"installing Label Studio into {tool_env()} failed ({' '.join(command)}):\n{result.stderr[-2000:]}")
    return executable


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def server_command(home: Path, credentials: Credentials) -> tuple[list[str], dict[str, str]]:
    """argv and environment of a Label Studio serving `home`'s frames on the credentials' loopback port."""
    port = int(credentials.url.rsplit(":", 1)[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON", "LABEL_STUDIO_", "DJANGO_"))}
    env.update(
        {
            "LABEL_STUDIO_BASE_DATA_DIR": str(server_dir(home)),
            # Privacy and offline use: no usage analytics, no PyPI version check, no error reporting.
            "LABEL_STUDIO_COLLECT_ANALYTICS": "false",
            "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",
            "SENTRY_DSN": "",
            "FRONTEND_SENTRY_DSN": "",
            # Only the admin made here (and people it invites) can sign in.
            "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
            # The frames: LS serves files under the document root to projects with a local storage there.
            "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
            "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(home),
            # Read by LS's start on every start: the user is created once, then only found.
            "LABEL_STUDIO_USERNAME": credentials.email,
            "LABEL_STUDIO_PASSWORD": credentials.password,
            "LABEL_STUDIO_USER_TOKEN": credentials.token,
        }
    )
    argv = [
        str(install_tool()),
        "start",
        "--no-browser",
        "--internal-host",
        HOST,
        "--port",
        str(port),
        # The token above is a plain API token ("Authorization: Token ..."), which LS 1.23 accepts
        # only when the organization (made at the first start) allows it.
        "--enable-legacy-api-token",
        "--log-level",
        "WARNING",
    ]
    return argv, env


def prepare(home: Path, port: int = DEFAULT_PORT) -> Credentials:
    """The server's credentials, made (with a random password and token) before its first start."""
    path = credentials_path(home)
    credentials = Credentials.load(path)
    if credentials is None:
        credentials = Credentials.new(port)
        credentials.save(path)
    return credentials


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def running_label_studio(home: Path, credentials: Credentials, log_path: Path, startup_timeout_s: float = 600.0) -> Iterator[subprocess.Popen]:
    """Label Studio in the background for the block (tests, scripts); stopped with its process group."""
    argv, env = server_command(home, credentials)
    port = int(credentials.url.rsplit(":", 1)[1])
    if port_in_use(port):
        raise ServerError(f"port {port} is in use; stop what listens there or start Label Studio on another port")
    with open(log_path, "ab") as log:
        process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + startup_timeout_s
        while not ready(credentials.url):
            if process.poll() is not None:
                raise ServerError(f"Label Studio exited with rc={process.returncode} while starting; log {log_path}")
            if time.monotonic() > deadline:
                raise ServerError(f"Label Studio did not answer on {credentials.url} within {startup_timeout_s:.0f}s; log {log_path}")
            time.sleep(0.5)
        yield process
    finally:
        stop(process)


def stop(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=grace_s)
