"""Predict requests' JSON bodies: parsed once into a `PredictInput`, turned into one batch.

The envelope (an object, 1 to max_batch instances, value_range "0-1" or "0-255") is
validated by the pydantic type that also renders the OpenAPI schema
(gateway/schemas.py). The instances are checked with numpy (shape, finiteness, range,
no booleans) rather than number by number: a 28x28 instance is 784 numbers, and this is
the hot path. Those checks are exactly the instance schemas the docs show.
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from pydantic import TypeAdapter, ValidationError

from gateway.errors import (
    DeadlineExceededError,
    InvalidInputError,
    MalformedRequestError,
    PayloadTooLargeError,
)
from gateway.preprocessing import prepare_image

VALUE_RANGES = {"0-1": 1.0, "0-255": 255.0}
SHAPE_HINT = 'a 28x28 array or a flat list of 784 numbers, or {"b64": "<image bytes>"}'


@dataclass(frozen=True)
class PredictInput:
    """A validated predict body: what preprocessing needs, read once."""

    instances: list[Any]
    scale: float
    # "array", "b64" or "mixed": the metrics label, and whether images must be decoded.
    kind: str
    # Only a body with a `true` or `false` token can hold a boolean; the others skip the
    # per-number search.
    may_hold_booleans: bool

    def to_batch(self, max_pixels: int, deadline: float | None = None) -> np.ndarray:
        """All instances -> one float32 [N, 28, 28] batch in [0, 1].

        `deadline` (time.monotonic()) is checked before each image is decoded, so a
        request past its deadline stops costing CPU.
        """
        batch = np.empty((len(self.instances), 28, 28), dtype=np.float32)
        for index, item in enumerate(self.instances):
            if isinstance(item, dict):
                if deadline is not None and time.monotonic() > deadline:
                    raise DeadlineExceededError(
                        f"the request's deadline passed before instance {index} was decoded "
                        "(GATEWAY_REQUEST_TIMEOUT_SECONDS); send fewer or smaller images"
                    )
                batch[index] = b64_instance(item, index, max_pixels)
            elif isinstance(item, list):
                batch[index] = array_instance(item, index, self.scale, self.may_hold_booleans)
            else:
                raise InvalidInputError(
                    f"instance {index} is a {type(item).__name__}; each instance is {SHAPE_HINT}"
                )
        return batch


def parse_json_body(body: bytes) -> Any:
    """Decode the body as JSON, or raise a 400 saying what is wrong."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        hint = ""
        if b"NaN" in body or b"Infinity" in body or b"e400" in body.lower():
            hint = "; NaN and infinity are not JSON numbers: send finite values"
        raise MalformedRequestError(f"the body is not valid JSON: {error}{hint}") from None


def parse_predict_body(body: bytes, envelope: TypeAdapter, max_batch: int) -> PredictInput:
    """Parse and validate a predict body once; 400/413/422 with what to send instead."""
    payload = parse_json_body(body)
    if not isinstance(payload, dict):
        raise InvalidInputError('the body must be a JSON object: {"instances": [...]}')
    try:
        request = envelope.validate_python(payload)
    except ValidationError as error:
        raise envelope_error(error, payload, max_batch) from None
    kinds = {"b64" if isinstance(item, dict) else "array" for item in request.instances}
    return PredictInput(
        instances=request.instances,
        scale=VALUE_RANGES[request.value_range],
        kind=kinds.pop() if len(kinds) == 1 else "mixed",
        may_hold_booleans=b"true" in body or b"false" in body,
    )


def envelope_error(error: ValidationError, payload: dict[str, Any], max_batch: int) -> Exception:
    """The client's mistake in the envelope, said in its own terms."""
    first = error.errors(include_url=False)[0]
    kind = first["type"]
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return InvalidInputError(
            f'"value_range" must be "0-1" or "0-255", not {payload.get("value_range")!r}'
        )
    if kind == "too_long" and first["loc"][-1] == "instances":
        return PayloadTooLargeError(
            f"{len(payload['instances'])} instances is over the limit of {max_batch} per "
            "request; split the batch"
        )
    if first["loc"][-1] == "instances":
        return InvalidInputError(f'"instances" must be a non-empty list; each item is {SHAPE_HINT}')
    location = ".".join(str(part) for part in first["loc"][1:])
    return InvalidInputError(f"{location or 'body'}: {first['msg']}")


def _holds_boolean(values: Any) -> bool:
    stack = [values]
    while stack:
        item = stack.pop()
        if type(item) is bool:
            return True
        if type(item) is list:
            stack.extend(item)
    return False


def array_instance(values: Any, index: int, scale: float, check_booleans: bool) -> np.ndarray:
    """One numeric instance -> float32 [28, 28] in [0, 1]."""
    try:
        array = np.asarray(values)
    except ValueError:  # ragged nesting
        array = None
    # numpy reads a mix of numbers and booleans as numbers (true -> 1): look for them.
    if (
        array is None
        or array.dtype.kind not in "iuf"
        or (check_booleans and _holds_boolean(values))
    ):
        raise InvalidInputError(
            f"instance {index} is not a numeric array (true/false and strings are not "
            f"numbers); each instance is {SHAPE_HINT}"
        )
    if array.shape == (784,):
        array = array.reshape(28, 28)
    elif array.shape != (28, 28):
        raise InvalidInputError(
            f"instance {index} has shape {list(array.shape)}; each instance is {SHAPE_HINT}"
        )
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise InvalidInputError(f"instance {index} contains NaN or infinity")
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > scale:
        hint = ' (for 0-255 pixels, send "value_range": "0-255")' if scale == 1.0 else ""
        raise InvalidInputError(
            f"instance {index} has values in [{low:g}, {high:g}], outside [0, {scale:g}]{hint}"
        )
    return array / scale if scale != 1.0 else array


def b64_instance(value: dict[str, Any], index: int, max_pixels: int) -> np.ndarray:
    """One {"b64": ...} instance -> float32 [28, 28] via the image pipeline."""
    if set(value) != {"b64"} or not isinstance(value["b64"], str):
        raise InvalidInputError(
            f'instance {index} must be {{"b64": "<base64 image bytes>"}} and nothing else'
        )
    try:
        data = base64.b64decode(value["b64"], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInputError(f"instance {index}: b64 is not valid base64") from None
    return prepare_image(data, max_pixels)
