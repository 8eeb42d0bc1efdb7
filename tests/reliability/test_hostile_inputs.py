"""Hostile inputs each get their documented 4xx, and the gateway's memory stays bounded.

All against one real gateway process (over the session model server). The last test
checks the gateway's resident memory after every other hostile request has been sent.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib

import httpx
import pytest
from PIL import Image, ImageDraw

from tests.reliability.stack import MODEL, PREDICT_PATH, rss_bytes, write_report

pytestmark = pytest.mark.reliability

IMAGE_PATH = f"/v1/models/{MODEL}/predict/image"
MAX_BODY_BYTES = 5 * 1024 * 1024  # the gateway's default GATEWAY_MAX_BODY_BYTES
# Resident-memory growth allowed over the whole hostile run. The bodies sent add up to
# well over 100 MB; a gateway that buffered or decoded them would grow far past this.
RSS_GROWTH_LIMIT_BYTES = 64 * 1024 * 1024
REPEAT = 3  # each hostile request is sent this many times, so leaks would add up

RSS_SAMPLES: dict[str, int] = {}
SENT = {"requests": 0, "5xx": 0}


def png_header_bomb(width: int, height: int) -> bytes:
    """A small, valid-looking PNG that declares width x height 8-bit gray pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    # Only the first rows' worth of zeros: a few KB that inflate to a fraction of the image.
    rows = zlib.compress(b"\x00" * (width + 1) * 64, 9)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


def post(gateway, path: str, content, content_type: str | None) -> httpx.Response:
    headers = {"content-type": content_type} if content_type else {}
    return counted(httpx.post(f"{gateway.url}{path}", content=content, headers=headers, timeout=30))


def counted(response: httpx.Response) -> httpx.Response:
    """Tally a hostile request for the report (and any 5xx it got)."""
    SENT["requests"] += 1
    SENT["5xx"] += response.status_code >= 500
    return response


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, (response.status_code, response.text[:300])
    error = response.json()["error"]
    assert error["message"], "an error must say what to fix"
    if code is not None:
        assert error["code"] == code, error


def digit_instance() -> list[list[float]]:
    return [[0.0] * 28 for _ in range(28)]


@pytest.fixture(scope="module")
def hostile_gateway(shared_gateway):
    """The shared gateway, with its resident memory sampled before the hostile run."""
    httpx.get(f"{shared_gateway.url}/readyz", timeout=10)
    RSS_SAMPLES.setdefault("before", rss_bytes(shared_gateway))
    return shared_gateway


def test_oversized_bodies_get_413_whether_declared_or_streamed(hostile_gateway) -> None:
    big = b'{"instances": [' + b"0," * (MAX_BODY_BYTES // 2) + b"0]}"
    for _ in range(REPEAT):
        assert_error(
            post(hostile_gateway, PREDICT_PATH, big, "application/json"), 413, "payload_too_large"
        )

        def chunks():  # no Content-Length: the limit must hold while the body streams in
            for _ in range(12):
                yield b"0" * (1024 * 1024)

        assert_error(
            post(hostile_gateway, IMAGE_PATH, chunks(), "image/png"), 413, "payload_too_large"
        )


@pytest.mark.parametrize("size", [(20_000, 20_000), (5_000, 5_000)])
def test_decompression_bombs_get_413_on_every_image_route(hostile_gateway, size) -> None:
    bomb = png_header_bomb(*size)
    assert len(bomb) < 64 * 1024
    for _ in range(REPEAT):
        assert_error(post(hostile_gateway, IMAGE_PATH, bomb, "image/png"), 413)
        files = {"file": ("bomb.png", bomb, "image/png")}
        response = counted(
            httpx.post(f"{hostile_gateway.url}{IMAGE_PATH}", files=files, timeout=30)
        )
        assert_error(response, 413)
        body = json.dumps({"instances": [{"b64": base64.b64encode(bomb).decode()}]})
        assert_error(post(hostile_gateway, PREDICT_PATH, body, "application/json"), 413)


def test_a_large_image_under_the_pixel_limit_is_decoded_without_running_away(
    hostile_gateway,
) -> None:
    # 2000x2000 = 4 Mpx, at the 4 Mpx limit: small on the wire, big once decoded.
    image = Image.new("L", (2000, 2000), 255)
    ImageDraw.Draw(image).line([(500, 500), (1500, 1500)], fill=0, width=100)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    assert len(buffer.getvalue()) < 512 * 1024
    for _ in range(REPEAT):
        response = post(hostile_gateway, IMAGE_PATH, buffer.getvalue(), "image/png")
        assert response.status_code == 200, response.text[:300]
        assert len(response.json()["predictions"]) == 1


@pytest.mark.parametrize("path", [PREDICT_PATH, "/v1/feedback"])
def test_deeply_nested_json_gets_a_4xx_not_a_500(hostile_gateway, path) -> None:
    depth = 100_000
    for body in ("[" * depth + "]" * depth, '{"instances": ' + "[" * depth + "]" * depth + "}"):
        response = post(hostile_gateway, path, body, "application/json")
        assert response.status_code in (400, 422), (response.status_code, response.text[:300])
        assert response.json()["error"]["message"]


def test_huge_arrays_get_413_or_422(hostile_gateway) -> None:
    too_many = json.dumps({"instances": [digit_instance()] * 65})
    assert_error(post(hostile_gateway, PREDICT_PATH, too_many, "application/json"), 413)
    long_row = json.dumps({"instances": [[0.0] * 600_000]})  # ~2.4 MB, under the body limit
    assert_error(post(hostile_gateway, PREDICT_PATH, long_row, "application/json"), 422)
    wide = json.dumps({"instances": [[[0.0] * 20_000] * 28]})
    assert_error(post(hostile_gateway, PREDICT_PATH, wide, "application/json"), 422)
    feedback = json.dumps([{"prediction_id": "x", "label": 1}] * 5000)
    response = post(hostile_gateway, "/v1/feedback", feedback, "application/json")
    assert_error(response, 422)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_nan_and_infinity_get_a_4xx_that_says_so(hostile_gateway, literal) -> None:
    row = ", ".join(["0.5"] * 27 + [literal])
    body = '{"instances": [[' + ", ".join([f"[{row}]"] * 28) + "]]}"
    response = post(hostile_gateway, PREDICT_PATH, body, "application/json")
    # Strict JSON has no NaN/Infinity (400, malformed); a parser that accepts them must
    # still refuse the instance (422). Either way the message names the problem.
    assert response.status_code in (400, 422), (response.status_code, response.text[:300])
    message = response.json()["error"]["message"].lower()
    assert "nan" in message or "infinity" in message, message


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        (PREDICT_PATH, "text/plain"),
        (PREDICT_PATH, "application/xml"),
        (PREDICT_PATH, "image/png"),
        (IMAGE_PATH, "application/json"),
        (IMAGE_PATH, "image/tiff"),
        (IMAGE_PATH, "text/html"),
        (IMAGE_PATH, None),
    ],
)
def test_wrong_content_types_get_415(hostile_gateway, path, content_type) -> None:
    body = json.dumps({"instances": [digit_instance()]})
    assert_error(post(hostile_gateway, path, body, content_type), 415, "unsupported_media_type")


@pytest.mark.parametrize(
    "body",
    [
        b"--abc\r\nbad[header\r\n\r\nx\r\n--abc--\r\n",  # '[' is not a header character
        b"--abc\r\nContent-Disposition: form-data; name=file\r\n\r\nx",  # never closed
        b"no boundary anywhere",
    ],
)
def test_malformed_multipart_gets_a_4xx_not_a_500(hostile_gateway, body) -> None:
    response = post(hostile_gateway, IMAGE_PATH, body, "multipart/form-data; boundary=abc")
    assert response.status_code in (400, 422), (response.status_code, response.text[:300])
    assert response.json()["error"]["message"]


def test_memory_stays_bounded_after_the_hostile_run(hostile_gateway) -> None:
    # Runs last in this module (pytest keeps file order): every request above has been sent.
    after = rss_bytes(hostile_gateway)
    growth = after - RSS_SAMPLES["before"]
    write_report(
        "hostile_inputs",
        {
            "requests": SENT["requests"],
            "failures": SENT["5xx"],
            "unexpected": SENT["5xx"],
            "rss_before_mb": round(RSS_SAMPLES["before"] / 2**20, 1),
            "rss_after_mb": round(after / 2**20, 1),
            "rss_growth_limit_mb": RSS_GROWTH_LIMIT_BYTES // 2**20,
        },
    )
    assert hostile_gateway.process.alive()
    assert growth <= RSS_GROWTH_LIMIT_BYTES, f"RSS grew by {growth / 2**20:.0f} MB"
    assert httpx.get(f"{hostile_gateway.url}/healthz", timeout=5).status_code == 200
