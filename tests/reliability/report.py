"""`python -m tests.reliability.report`: the reliability figures as a markdown table.

Reads the JSON summaries the scenarios wrote to reports/reliability/ (make test-reliability).
"""

from __future__ import annotations

import json
import sys

from tests.reliability.stack import REPORT_DIR

# failures: answers other than 200 (a 503 while the model server is down is one);
# unexpected: answers the scenario does not allow (a 500, a drop, a 503 without Retry-After).
COLUMNS = ("scenario", "requests", "failures", "unexpected", "recovery_seconds", "statuses")


def render_table() -> str:
    """One row per scenario report, in name order."""
    rows = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    for path in sorted(REPORT_DIR.glob("*.json")):
        report = json.loads(path.read_text())
        cells = [report.get(column, "") for column in COLUMNS]
        rows.append(
            "| "
            + " | ".join(json.dumps(c) if isinstance(c, dict) else str(c) for c in cells)
            + " |"
        )
    return "\n".join(rows)


def main() -> int:
    """Print the table; exit 1 when there are no reports yet."""
    if not any(REPORT_DIR.glob("*.json")):
        print(f"no reports in {REPORT_DIR}: run `make test-reliability` first", file=sys.stderr)
        return 1
    print(render_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
