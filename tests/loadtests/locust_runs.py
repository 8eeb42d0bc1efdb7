"""Run Locust on the load tests' locustfile as a subprocess and read what it wrote."""

from __future__ import annotations

import csv
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.fixtures.processes import PYTHON, REPO_ROOT

LOCUSTFILE = REPO_ROOT / "loadtests" / "locustfile.py"
ALL_WEIGHTS_ZERO = {
    f"LOAD_WEIGHT_{kind}": "0" for kind in ("JSON", "IMAGE", "B64", "STATUS", "GRPC")
}


@dataclass
class LocustRun:
    """A finished Locust run: exit code, output, and the CSV/HTML/SLO files it wrote."""

    returncode: int
    output: str
    prefix: Path

    @property
    def html(self) -> Path:
        return self.prefix.parent / f"{self.prefix.name}.html"

    def stats(self) -> dict[str, dict[str, str]]:
        """Rows of `<prefix>_stats.csv` by request name ("Aggregated" for the total)."""
        with (self.prefix.parent / f"{self.prefix.name}_stats.csv").open() as file:
            return {row["Name"]: row for row in csv.DictReader(file)}

    def slo(self) -> dict:
        return json.loads((self.prefix.parent / f"{self.prefix.name}_slo.json").read_text())


def run_locust(
    tmp_path: Path,
    host: str,
    env: dict[str, str],
    users: int = 5,
    run_time: str = "8s",
    timeout: float = 120,
) -> LocustRun:
    """Run Locust headless, bounded by `run_time`, with its output and reports in tmp_path."""
    prefix = tmp_path / "load"
    # The run must see only the settings the test gives, not ones left in the caller's shell.
    base_env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("LOAD_", "SLO_", "LOCUST_"))
    }
    args = [
        PYTHON,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--only-summary",
        "--host",
        host,
        "--users",
        str(users),
        "--spawn-rate",
        str(users),
        "--run-time",
        run_time,
        "--stop-timeout",
        "3",
        "--csv",
        str(prefix),
        "--html",
        str(prefix.parent / f"{prefix.name}.html"),
    ]
    completed = subprocess.run(
        args,
        env={**base_env, **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return LocustRun(completed.returncode, completed.stdout + completed.stderr, prefix)
