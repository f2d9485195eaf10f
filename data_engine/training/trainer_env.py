"""The reference trainer's own Python environment, made with `python -m venv` and pip from
docker/trainer/requirements.txt (never the product's environment: torch and its CUDA wheels are big,
and uv would download them where pip finds them on the machine's disk).

The environment lives in a cache folder named by a hash of the pinned requirements, so it is made
once and remade only when the pins change; `data-engine trainer-env` and the tests share it. It is
built in a side folder and renamed into place, so a crash never leaves a half-installed one in use.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

TRAINER_DIR = Path(__file__).resolve().parents[2] / "docker" / "trainer"
REQUIREMENTS = TRAINER_DIR / "requirements.txt"
CACHE_ENV = "DATA_ENGINE_TRAINER_ENV_CACHE"


def cache_dir() -> Path:
    """`$DATA_ENGINE_TRAINER_ENV_CACHE`, else `$XDG_CACHE_HOME/data-engine/trainer-env` (~/.cache by default)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "data-engine" / "trainer-env"


def requirements_hash(requirements: Path = REQUIREMENTS) -> str:
    """Of the requirement lines only: editing a comment does not remake the environment."""
    lines = [line.split("#", 1)[0].strip() for line in requirements.read_text().splitlines()]
    return hashlib.sha256("\n".join(line for line in lines if line).encode()).hexdigest()[:16]


def trainer_python(requirements: Path = REQUIREMENTS) -> Path:
    """Where the environment's interpreter is (it may not exist yet)."""
    return cache_dir() / requirements_hash(requirements) / "bin" / "python"


def ensure_trainer_env(
    requirements: Path = REQUIREMENTS, base_python: str = sys.executable, log: Callable[[str], None] = print
) -> Path:
    """The interpreter of the environment for `requirements`, made first if it does not exist."""
    python = trainer_python(requirements)
    if python.exists():
        return python
    target = python.parent.parent
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(f".{target.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits, then finds the environment made
        if python.exists():
            return python
        partial = target.with_name(f"{target.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        log(f"creating the trainer environment in {target} from {requirements} (a few minutes, once)")
        subprocess.run([base_python, "-m", "venv", str(partial)], check=True)
        subprocess.run([str(partial / "bin" / "python"), "-m", "pip", "install", "--quiet", "-r", str(requirements)], check=True)
        os.replace(partial, target)
    return python
