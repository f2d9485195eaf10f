"""A throwaway PostgreSQL server for tests, started and stopped by the test itself.

PostgreSQL refuses to run as root, and CI runs as root: then the server runs as the `postgres` user
(`runuser`) from a temp dir that user owns. The cluster uses trust auth and listens on 127.0.0.1 only.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from data_engine_tests.servers.ports import free_port

DB_NAME = "data_engine_test"
SUPERUSER = "postgres"
STARTUP_TIMEOUT_S = 60


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    db: str

    def url(self, db: str | None = None, scheme: str = "postgresql") -> str:
        """Connection URL; no password needed (trust auth).

        The default suits libpq/psycopg2. For SQLAlchemy pass scheme="postgresql+psycopg2":
        SQLAlchemy 2.1 maps plain "postgresql" to psycopg 3, which is not installed.
        """
        return f"{scheme}://{self.user}@{self.host}:{self.port}/{db or self.db}"


def postgres_bin_dir() -> Path:
    """Directory of the server binaries: from `pg_ctl` on PATH, else the newest /usr/lib/postgresql/*/bin."""
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
    if not candidates:
        raise FileNotFoundError("no PostgreSQL server binaries (pg_ctl) on PATH or in /usr/lib/postgresql/*/bin")
    return Path(candidates[-1])


@contextmanager
def running_postgres(workdir: Path) -> Iterator[PostgresServer]:
    """Start a fresh cluster on a free 127.0.0.1 port, create `DB_NAME`, yield it, stop it.

    The cluster lives in a short temp dir (not `workdir`): the postgres user must be able to reach it,
    which pytest's 0700 tmp dirs forbid, and unix-socket paths are limited to ~107 bytes. The server
    log is copied to `workdir/postgres.log` on exit for debugging.
    """
    as_root = os.geteuid() == 0
    run_as = ["runuser", "-u", SUPERUSER, "--"] if as_root else []
    bin_dir = postgres_bin_dir()
    base = Path(tempfile.mkdtemp(prefix="pg-"))
    if as_root:
        shutil.chown(base, SUPERUSER, SUPERUSER)
    data, log = base / "db", base / "server.log"
    port = free_port()

    def run(*args: str) -> None:
        proc = subprocess.run([*run_as, *args], capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            log_tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
            raise RuntimeError(f"{args[0]} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}\n{log_tail}")

    pg_ctl = str(bin_dir / "pg_ctl")
    try:
        run(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", SUPERUSER, "--no-sync")
        # -w waits until the server accepts connections (or the timeout passes, then it fails).
        opts = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
        run(pg_ctl, "-D", str(data), "-o", opts, "-l", str(log), "-w", "-t", str(STARTUP_TIMEOUT_S), "start")
        run(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", SUPERUSER, DB_NAME)
        yield PostgresServer(host="127.0.0.1", port=port, user=SUPERUSER, db=DB_NAME)
    finally:
        try:
            if (data / "postmaster.pid").exists():  # also after a start that timed out
                run(pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop")
        finally:
            if log.exists():
                Path(workdir).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(log, Path(workdir) / "postgres.log")
            shutil.rmtree(base, ignore_errors=True)
