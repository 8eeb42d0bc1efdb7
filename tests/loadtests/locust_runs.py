"""Run Locust on the load tests' locustfile as a subprocess and read what it wrote."""

from __future__ import annotations

import csv
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from loadtests.run import (
    FILE_PREFIX,
    RunPlan,
    headless_options,
    locust_command,
    without_run_settings,
)

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
    """Run Locust headless, bounded by `run_time`, with its output and reports in tmp_path.

    The command is `make load`'s (loadtests.run), in one process.
    """
    plan = RunPlan(tmp_path, locust_args=headless_options(host, users, run_time, stop_timeout=3))
    args = locust_command(plan)
    completed = subprocess.run(
        args,
        env={**without_run_settings(os.environ), **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return LocustRun(
        completed.returncode, completed.stdout + completed.stderr, tmp_path / FILE_PREFIX
    )
