"""`python -m loadtests`: run Locust into a report, rebuild, fetch and compare reports.

- `run [--workers N] [--reports-dir D] [--run-name NAME] [--master-port P]
  [--prometheus-url URL] [LOCUST OPTIONS...]`: a headless run (N workers forked by Locust's
  `--processes`, or one process for N = 0) into `D/<run>/`, then its report; exits with
  Locust's exit code, which the SLO gate sets. Options it does not know go to Locust.
- `report RUN_DIR [--prometheus-url URL]`: rebuild a run directory's report.
- `fetch --locust-url URL [--reports-dir D] [--run-name NAME] [--prometheus-url URL]`:
  download the run of a Locust master (Kubernetes, through `kubectl port-forward`), then
  build its report.
- `compare A B`: print two reports side by side, with the ratios B/A.
- `scaling [--users U] [--run-time T]`: req/s of 1 vs 2 workers against a no-op target.

PROMETHEUS_URL, when set, is the default of --prometheus-url.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from loadtests.run import DEFAULT_MASTER_PORT


def parser() -> argparse.ArgumentParser:
    """The command line of every subcommand."""
    main = argparse.ArgumentParser(prog="python -m loadtests", description=__doc__.splitlines()[0])
    commands = main.add_subparsers(dest="command", required=True)
    prometheus = {
        "default": os.environ.get("PROMETHEUS_URL") or None,
        "help": "Prometheus to read the server side from over the run's window (PROMETHEUS_URL)",
    }

    run = commands.add_parser("run", help="Run Locust headless and write the run's report")
    run.add_argument("--workers", type=int, default=0, help="Locust workers (0: one process)")
    run.add_argument("--reports-dir", type=Path, default=Path("reports"))
    run.add_argument("--run-name", default=None, help="Directory name (default: time and mode)")
    run.add_argument(
        "--master-port",
        type=int,
        default=DEFAULT_MASTER_PORT,
        help="Loopback port the master listens on for its workers",
    )
    run.add_argument("--prometheus-url", **prometheus)

    report = commands.add_parser("report", help="Rebuild the report of a run directory")
    report.add_argument("run_dir", type=Path)
    report.add_argument("--prometheus-url", **prometheus)

    fetch = commands.add_parser("fetch", help="Download a Locust master's run and report it")
    fetch.add_argument("--locust-url", default="http://127.0.0.1:8089")
    fetch.add_argument("--reports-dir", type=Path, default=Path("reports"))
    fetch.add_argument("--run-name", default=None, help="Directory name (default: <time>-cluster)")
    fetch.add_argument("--prometheus-url", **prometheus)

    compare = commands.add_parser("compare", help="Two reports side by side, with ratios B/A")
    compare.add_argument("a", type=Path, help="Run directory A (before)")
    compare.add_argument("b", type=Path, help="Run directory B (after)")

    scaling = commands.add_parser("scaling", help="1 vs 2 workers against a no-op target")
    scaling.add_argument("--reports-dir", type=Path, default=Path("reports"))
    scaling.add_argument("--users", type=int, default=32)
    scaling.add_argument("--run-time", default="20s")
    return main


def main(argv: list[str] | None = None) -> int:
    """Dispatch a subcommand; return the process exit code."""
    args, extra = parser().parse_known_args(argv)
    if extra and args.command != "run":
        parser().error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "run":
        from loadtests.run import plan_from_args, run_load_test

        plan = plan_from_args(
            args.reports_dir,
            args.run_name,
            args.workers,
            args.master_port,
            args.prometheus_url,
            extra,
        )
        return run_load_test(plan)
    if args.command == "report":
        from loadtests.report import build_report

        print(f"load report: {build_report(args.run_dir, args.prometheus_url)}")
        return 0
    if args.command == "fetch":
        from loadtests.fetch import LocustUnreachableError, default_fetch_name, fetch_run
        from loadtests.report import build_report

        run_dir = args.reports_dir / (args.run_name or default_fetch_name())
        try:
            fetch_run(args.locust_url, run_dir)
        except LocustUnreachableError as error:
            print(f"load-fetch: {error}", file=sys.stderr)
            return 2
        print(f"load report: {build_report(run_dir, args.prometheus_url)}")
        return 0
    if args.command == "compare":
        from loadtests.compare import ReportMissingError, compare_reports

        try:
            print(compare_reports(args.a, args.b), end="")
        except ReportMissingError as error:
            print(f"load-compare: {error}", file=sys.stderr)
            return 2
        return 0
    from loadtests.scaling import run_scaling

    run_scaling(args.reports_dir, users=args.users, run_time=args.run_time)
    return 0


if __name__ == "__main__":
    sys.exit(main())
