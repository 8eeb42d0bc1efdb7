"""`python -m gateway`: serve the gateway with uvicorn (settings from GATEWAY_* env)."""

from __future__ import annotations

import logging
import sys

from pydantic import ValidationError

from gateway.app import create_app
from gateway.config import get_settings
from gateway.memory import tune_allocator
from gateway.server import run


def describe_settings_error(error: ValidationError) -> str:
    """Each problem with its variable name; never the values (they include secrets)."""
    lines = []
    for item in error.errors(include_url=False, include_input=False):
        field = ".".join(str(part) for part in item["loc"])
        where = f"GATEWAY_{field.upper()}: " if field else ""
        lines.append(f"  {where}{item['msg'].removeprefix('Value error, ')}")
    return "\n".join(lines)


def main() -> int:
    """Validate the settings, then serve until SIGTERM/SIGINT."""
    try:
        settings = get_settings()
    except ValidationError as error:
        print(f"gateway: invalid configuration:\n{describe_settings_error(error)}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    tune_allocator()
    run(create_app(settings), settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
