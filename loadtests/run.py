"""Run Locust headless, in one process or as a master with workers, into a report directory.

`make load` and `make load-distributed` call `run_load_test`: Locust writes its CSV and
HTML into `reports/<run>/`, then `report.build_report` adds the summary, the charts and the
server side. The exit code is Locust's, which the locustfile's SLO gate sets.

A distributed run uses Locust's own engine: `--processes N` forks N workers that connect to
the master on a loopback port; the master shares the users out, aggregates the workers'
stats and writes the reports. Workers are forked after the locustfile is imported, so they
run the same user classes, shape and options as the master.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

LOCUSTFILE = Path(__file__).absolute().parent / "locustfile.py"
# Locust's files in a run directory: locust_stats.csv, locust.html, locust_slo.json, ...
FILE_PREFIX = "locust"
RUN_FILE = "run.json"
DEFAULT_MASTER_PORT = 5557
# Recorded in run.json so a report says how it was made; never the API key. mk/load.mk's
# own variables reach the environment too, but Locust gets them as options (locust_args).
RECORDED_ENV_PREFIXES = ("LOAD_", "SLO_")
RUN_SETTING_PREFIXES = (*RECORDED_ENV_PREFIXES, "LOCUST_")
NOT_RECORDED_ENV = {
    "LOAD_API_KEY",
    "LOAD_HOST",
    "LOAD_USERS",
    "LOAD_SPAWN_RATE",
    "LOAD_RUN_TIME",
    "LOAD_RUN",
}


@dataclass(frozen=True)
class RunPlan:
    """One load run: where its files go, how many workers, and Locust's own options."""

    run_dir: Path
    workers: int = 0
    master_port: int = DEFAULT_MASTER_PORT
    locust_args: tuple[str, ...] = ()
    prometheus_url: str | None = None
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    def __post_init__(self) -> None:
        if self.workers < 0:
            raise ValueError(f"WORKERS must be 0 (one process) or more, got {self.workers}")


def default_run_name(workers: int, now: datetime | None = None) -> str:
    """`<UTC time>-local` or `<UTC time>-<N>workers`: sortable, and says how it ran."""
    now = now or datetime.now(UTC)
    mode = f"{workers}workers" if workers else "local"
    return f"{now:%Y%m%dT%H%M%SZ}-{mode}"


def headless_options(
    host: str, users: int, run_time: str, spawn_rate: float | None = None, stop_timeout: int = 5
) -> tuple[str, ...]:
    """Locust's options for a bounded run: target, peak users, spawn rate, length."""
    return (
        "--host",
        host,
        "--users",
        str(users),
        "--spawn-rate",
        f"{spawn_rate if spawn_rate is not None else users:g}",
        "--run-time",
        run_time,
        "--stop-timeout",
        str(stop_timeout),
    )


def locust_command(plan: RunPlan) -> list[str]:
    """The Locust command line of a plan: headless, bounded, reports into its run directory."""
    prefix = plan.run_dir / FILE_PREFIX
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--only-summary",
        "--csv",
        str(prefix),
        # Every request kind every second, not only the total: the charts plot them.
        "--csv-full-history",
        "--html",
        f"{prefix}.html",
    ]
    if plan.workers:
        port = str(plan.master_port)
        command += [
            "--processes",
            str(plan.workers),
            # The workers are on this machine: the master listens on loopback only.
            "--master-bind-host",
            "127.0.0.1",
            "--master-bind-port",
            port,
            "--master-port",
            port,
        ]
    return command + list(plan.locust_args)


def without_run_settings(env: Mapping[str, str]) -> dict[str, str]:
    """`env` without any LOAD_*, SLO_* or LOCUST_* variable: for a run that must see only the
    settings its caller gives, not ones left in a shell."""
    return {key: value for key, value in env.items() if not key.startswith(RUN_SETTING_PREFIXES)}


def recorded_env(env: Mapping[str, str]) -> dict[str, str]:
    """The scenario's settings from the environment (LOAD_*, SLO_*), without secrets and
    without mk/load.mk's variables."""
    return {
        key: value
        for key, value in sorted(env.items())
        if key.startswith(RECORDED_ENV_PREFIXES) and key not in NOT_RECORDED_ENV
    }


def write_run_file(run_dir: Path, document: dict) -> None:
    """Write run.json: what ran, when, and how it ended."""
    (run_dir / RUN_FILE).write_text(json.dumps(document, indent=2) + "\n")


def start_locust(plan: RunPlan) -> tuple[subprocess.Popen, dict]:
    """Start Locust for `plan`; return the process and the run record written so far."""
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    command = locust_command(plan)
    record = {
        "name": plan.run_dir.name,
        "workers": plan.workers,
        "locust_args": list(plan.locust_args),
        "settings": recorded_env(plan.env),
        "prometheus_url": plan.prometheus_url,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_run_file(plan.run_dir, record)
    return subprocess.Popen(command, env=dict(plan.env)), record


def finish_run(plan: RunPlan, process: subprocess.Popen, record: dict) -> int:
    """Wait for Locust, record how it ended, build the report; return Locust's exit code."""
    from loadtests.report import build_report

    try:
        exit_code = process.wait()
    except KeyboardInterrupt:  # Ctrl-C reaches Locust too: it stops and writes its files
        exit_code = process.wait()
    record.update(finished_at=datetime.now(UTC).isoformat(timespec="seconds"), exit_code=exit_code)
    write_run_file(plan.run_dir, record)
    summary = build_report(plan.run_dir, prometheus_url=plan.prometheus_url)
    print(f"load report: {summary}", flush=True)
    return exit_code


def run_load_test(plan: RunPlan) -> int:
    """Run Locust as planned and write the report; return Locust's exit code."""
    process, record = start_locust(plan)
    return finish_run(plan, process, record)


def plan_from_args(
    reports_dir: Path,
    run_name: str | None,
    workers: int,
    master_port: int,
    prometheus_url: str | None,
    locust_args: Sequence[str],
) -> RunPlan:
    """A RunPlan from the command line's values."""
    name = run_name or default_run_name(workers)
    return RunPlan(
        run_dir=reports_dir / name,
        workers=workers,
        master_port=master_port,
        locust_args=tuple(locust_args),
        prometheus_url=prometheus_url or None,
    )
