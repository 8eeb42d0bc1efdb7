"""The web page for people, at `/`: draw or photograph a digit, see what the model reads.

Static HTML (`webpage.html`), CSS and plain JavaScript (`static/`), served by the gateway
itself, so the page works offline and in a locked-down cluster: nothing comes from a CDN,
and the page's Content-Security-Policy tells the browser to load nothing from elsewhere.
The page calls the same /v1 API as any client, with the API key a person types when
GATEWAY_API_KEYS is set; `/` and `/ui/` themselves are public, like /healthz.
"""

from __future__ import annotations

import html
from pathlib import Path

from fastapi import FastAPI, Response
from fastapi.staticfiles import StaticFiles

from gateway.config import Settings

PAGE_TEMPLATE = Path(__file__).parent / "webpage.html"
STATIC_DIR = Path(__file__).parent / "static"
# data: and blob: for the images the page makes itself (the drawing, the upload's preview).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def render_page(settings: Settings) -> bytes:
    """The page, told the default model and whether it must ask for an API key."""
    values = {
        "default_model": html.escape(settings.default_model, quote=True),
        "api_keys": "required" if settings.api_keys else "none",
    }
    page = PAGE_TEMPLATE.read_text(encoding="utf-8")
    for name, value in values.items():
        page = page.replace("{{" + name + "}}", value)
    return page.encode("utf-8")


def add_webpage(app: FastAPI, settings: Settings) -> None:
    """GET / (the page) and /ui/ (its script and style sheet), outside the OpenAPI document."""
    page = render_page(settings)

    async def index() -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)

    app.add_api_route("/", index, methods=["GET"], include_in_schema=False)
    app.mount("/ui", StaticFiles(directory=STATIC_DIR), name="webpage")
