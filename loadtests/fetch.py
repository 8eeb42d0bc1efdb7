"""Fetch a run from a Locust master's web UI, for runs inside Kubernetes.

The in-cluster master keeps its web UI on 127.0.0.1 (reachable by `kubectl port-forward`
only) and does not exit after a run. `fetch_run` downloads what the UI serves (the stats,
the per-second history, failures, exceptions and Locust's HTML report) into a run
directory under the same file names a local run writes, then builds the same report.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from loadtests.run import FILE_PREFIX, write_run_file

# The master's download URL and the local file it becomes.
DOWNLOADS = {
    "/stats/requests/csv": f"{FILE_PREFIX}_stats.csv",
    "/stats/requests_full_history/csv": f"{FILE_PREFIX}_stats_history.csv",
    "/stats/failures/csv": f"{FILE_PREFIX}_failures.csv",
    "/exceptions/csv": f"{FILE_PREFIX}_exceptions.csv",
    "/stats/report?download=1": f"{FILE_PREFIX}.html",
}
# Without --csv-full-history the master has no history; the report then has no charts.
OPTIONAL = {"/stats/requests_full_history/csv"}
TIMEOUT_SECONDS = 30.0


class LocustUnreachableError(RuntimeError):
    """The Locust master's web UI did not answer."""


def download(url: str) -> bytes | None:
    """GET `url`; None on a 404."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
            return response.read()
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise LocustUnreachableError(f"{url}: HTTP {error.code}") from error
    except (urllib.error.URLError, OSError) as error:
        raise LocustUnreachableError(
            f"no Locust master at {url} ({error}); is `kubectl port-forward` running?"
        ) from error


def master_state(locust_url: str) -> dict:
    """The master's /stats/requests JSON (state, user count, workers)."""
    body = download(f"{locust_url.rstrip('/')}/stats/requests")
    return json.loads(body or b"{}")


def fetch_run(locust_url: str, run_dir: Path) -> Path:
    """Download a master's current run into `run_dir`; return the directory."""
    state = master_state(locust_url)
    run_dir.mkdir(parents=True, exist_ok=True)
    for path, name in DOWNLOADS.items():
        body = download(f"{locust_url.rstrip('/')}{path}")
        if body is None:
            if path in OPTIONAL:
                continue
            raise LocustUnreachableError(f"{locust_url}{path}: not found")
        (run_dir / name).write_bytes(body)
    write_run_file(
        run_dir,
        {
            "name": run_dir.name,
            "source": f"Locust master at {locust_url}",
            "master_state": state.get("state"),
            "workers_connected": state.get("worker_count"),
            "fetched_at": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    )
    return run_dir


def default_fetch_name(now: datetime | None = None) -> str:
    """`<UTC time>-cluster`."""
    return f"{(now or datetime.now(UTC)):%Y%m%dT%H%M%SZ}-cluster"
