"""The optional external test step (`evaluation.mltest`): the team's own test suite run on the candidate,
filling the role Lakera's MLTest had. Its exit status is the verdict; its JSON report is attached."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any


def run_mltest(command: list[str], timeout_seconds: int, *, candidate_uri: str, test_set: Path, workdir: Path) -> dict[str, Any]:
    """Run the suite and return {passed, exit_code, command, report, error}; never raises for the suite's own failures."""
    report_path = workdir / "mltest-report.json"
    report_path.unlink(missing_ok=True)
    values = {"candidate": candidate_uri, "test_set": str(test_set), "report": str(report_path)}
    argv = [_substitute(part, values) for part in command]
    result: dict[str, Any] = {"command": argv, "passed": False, "exit_code": None, "report": None, "error": None}
    try:
        finished = subprocess.run(argv, cwd=workdir, capture_output=True, text=True, timeout=timeout_seconds, check=False)
    except FileNotFoundError:
        result["error"] = f"the mltest command {argv[0]!r} was not found; fix evaluation.mltest.command in the fleet config"
        return result
    except subprocess.TimeoutExpired:
        result["error"] = f"the mltest command ran past evaluation.mltest.timeout_seconds ({timeout_seconds} s)"
        return result
    result["exit_code"] = finished.returncode
    result["passed"] = finished.returncode == 0
    if finished.returncode != 0:
        result["error"] = f"exit status {finished.returncode}: {finished.stderr.strip()[-2000:]}"
    if report_path.exists():
        try:
            result["report"] = json.loads(report_path.read_text())
        except json.JSONDecodeError as error:
            result["passed"] = False
            result["error"] = f"its report {report_path.name} is not JSON ({error})"
    return result


def _substitute(argument: str, values: dict[str, str]) -> str:
    """Replace the `{name}` placeholders only (other braces, e.g. in inline code, stay as they are)."""
    for name, value in values.items():
        argument = argument.replace("{" + name + "}", value)
    return argument
