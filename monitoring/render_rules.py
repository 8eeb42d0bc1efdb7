"""Render the rule templates in monitoring/templates/ into monitoring/rules/.

A template is a rule file with `${name}` placeholders for its windows and `for:`
durations. Production values are below; tests render the same templates with shorter
ones into a directory of their own, so a rule under test is the rule in production with
only its time scale changed. `make monitoring-rules` writes the production files;
tests/monitoring/test_rules.py fails when they are stale.

    python monitoring/render_rules.py            # write monitoring/rules/*.yml
    python monitoring/render_rules.py --check    # exit 1 if a rendered file is stale
"""

from __future__ import annotations

import string
import sys
from pathlib import Path

MONITORING_DIR = Path(__file__).resolve().parent
TEMPLATES_DIR = MONITORING_DIR / "templates"
RULES_DIR = MONITORING_DIR / "rules"
PRODUCTION = {"drift.yml": {"window": "30m", "for": "15m"}}
HEADER = (
    "# Generated from monitoring/templates/{name} by monitoring/render_rules.py: do not edit.\n"
)


def render(name: str, **values: str) -> str:
    """The template `name` with `values` (defaults: production) filled in.

    Prometheus' own `{{ $labels.x }}` and `$value` are not placeholders (safe_substitute
    leaves names it is not given), but a placeholder left unfilled is an error.
    """
    filled = {**PRODUCTION[name], **values}
    text = string.Template((TEMPLATES_DIR / name).read_text()).safe_substitute(filled)
    for key in PRODUCTION[name]:
        if "${" + key + "}" in text:
            raise ValueError(f"{name}: ${{{key}}} left unfilled")
    return HEADER.format(name=name) + text


def render_all(directory: Path = RULES_DIR, **values: str) -> list[Path]:
    """Write every template, rendered, into `directory`; return the files."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in sorted(PRODUCTION):
        path = directory / name
        path.write_text(render(name, **values))
        written.append(path)
    return written


def stale() -> list[str]:
    """Rendered rule files that differ from their template's production rendering."""
    return [
        name
        for name in sorted(PRODUCTION)
        if not (RULES_DIR / name).exists() or (RULES_DIR / name).read_text() != render(name)
    ]


def main(argv: list[str]) -> int:
    if "--check" in argv:
        outdated = stale()
        for name in outdated:
            print(f"monitoring/rules/{name} is stale: run `make monitoring-rules`", file=sys.stderr)
        return 1 if outdated else 0
    for path in render_all():
        print(f"wrote {path.relative_to(MONITORING_DIR.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
