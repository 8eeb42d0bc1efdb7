"""`python -m gateway`: serve the gateway with uvicorn (settings from GATEWAY_* env)."""

from __future__ import annotations

import logging
import sys

import uvicorn
from pydantic import ValidationError

from gateway.app import create_app
from gateway.config import get_settings


def main() -> int:
    """Validate the settings, then run uvicorn until SIGTERM/SIGINT."""
    try:
        settings = get_settings()
    except ValidationError as error:
        print(f"gateway: invalid configuration:\n{error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        log_level=settings.log_level,
        # Request logs cost throughput; the metrics and X-Request-ID cover them.
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
