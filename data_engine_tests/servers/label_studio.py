"""The real Label Studio for tests, started once per session through the product's own launcher
(data_engine.annotation.label_studio_server), on a free loopback port.

A fresh Label Studio migrates its SQLite database on first start, which takes minutes on a busy machine.
So the first session makes a migrated data folder once, as a template next to the tool environment
(`<tool env>/data-engine-test-template`), and every session starts from a copy of it in seconds.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import requests

from data_engine.annotation.label_studio_server import (
    ADMIN_EMAIL,
    Credentials,
    free_port,
    install_tool,
    running_label_studio,
    server_dir,
    tool_env,
)

PASSWORD = "test-password-1"
TOKEN = "data-engine-test-token-0123456789"


def credentials_for_tests() -> Credentials:
    return Credentials(url=f"http://127.0.0.1:{free_port()}", email=ADMIN_EMAIL, password=PASSWORD, token=TOKEN)


def template() -> Path:
    install_tool()
    template = tool_env() / "data-engine-test-template"
    if (template / "label_studio.sqlite3").exists():
        return template
    with tempfile.TemporaryDirectory(dir=tool_env()) as scratch:
        home = Path(scratch)
        credentials = credentials_for_tests()
        credentials.save(home / "credentials.json")
        with running_label_studio(home, credentials, home / "label-studio.log"):
            pass
        shutil.rmtree(template, ignore_errors=True)
        server_dir(home).rename(template)
    return template


@contextlib.contextmanager
def running_test_label_studio(root: Path) -> Iterator[Credentials]:
    """Label Studio serving frames under `root` (each test's DATA_ENGINE_HOME lies below it)."""
    shutil.copytree(template(), server_dir(root))
    credentials = credentials_for_tests()
    with running_label_studio(root, credentials, root / "label-studio.log"):
        yield credentials


def delete_all_projects(credentials: Credentials) -> None:
    """A clean server for the next test (projects take their tasks and storages with them)."""
    headers = {"Authorization": f"Token {credentials.token}"}
    projects = requests.get(f"{credentials.url}/api/projects", headers=headers, params={"page_size": 1000}, timeout=30)
    projects.raise_for_status()
    for project in projects.json()["results"]:
        requests.delete(f"{credentials.url}/api/projects/{project['id']}", headers=headers, timeout=30).raise_for_status()
