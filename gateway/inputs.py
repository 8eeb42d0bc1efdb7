"""Parse predict requests' instances into one float32 [N, 28, 28] batch.

Arrays are checked with numpy (shape, finiteness, range) rather than per-number pydantic
validation: a 28x28 instance is 784 numbers, and this is the hot path.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np
import orjson

from gateway.errors import InvalidInputError, MalformedRequestError, PayloadTooLargeError
from gateway.preprocessing import prepare_image

VALUE_RANGES = {"0-1": 1.0, "0-255": 255.0}
SHAPE_HINT = 'a 28x28 array or a flat list of 784 numbers, or {"b64": "<image bytes>"}'


def parse_json_body(body: bytes) -> dict[str, Any]:
    """Decode the body as a JSON object, or raise a 400 saying what is wrong."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        hint = ""
        if b"NaN" in body or b"Infinity" in body or b"e400" in body.lower():
            hint = "; NaN and infinity are not JSON numbers: send finite values"
        raise MalformedRequestError(f"the body is not valid JSON: {error}{hint}") from None
    if not isinstance(payload, dict):
        raise InvalidInputError('the body must be a JSON object: {"instances": [...]}')
    return payload


def read_instances(payload: dict[str, Any], max_batch: int) -> tuple[list[Any], float]:
    """Return the instances list and the value scale (1 or 255), validated."""
    instances = payload.get("instances")
    if not isinstance(instances, list) or not instances:
        raise InvalidInputError(f'"instances" must be a non-empty list; each item is {SHAPE_HINT}')
    if len(instances) > max_batch:
        raise PayloadTooLargeError(
            f"{len(instances)} instances is over the limit of {max_batch} per request; "
            "split the batch"
        )
    value_range = payload.get("value_range", "0-1")
    if value_range not in VALUE_RANGES:
        raise InvalidInputError(f'"value_range" must be "0-1" or "0-255", not {value_range!r}')
    return instances, VALUE_RANGES[value_range]


def array_instance(values: Any, index: int, scale: float) -> np.ndarray:
    """One numeric instance -> float32 [28, 28] in [0, 1]."""
    try:
        array = np.asarray(values)
    except ValueError:  # ragged nesting
        array = None
    if array is None or array.dtype.kind not in "iuf":
        raise InvalidInputError(
            f"instance {index} is not a numeric array; each instance is {SHAPE_HINT}"
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


def b64_instance(value: Any, index: int, max_pixels: int) -> np.ndarray:
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


def instances_kind(instances: list[Any]) -> str:
    """Metrics label for the input kind: array, b64 or mixed."""
    kinds = {"b64" if isinstance(item, dict) else "array" for item in instances}
    return kinds.pop() if len(kinds) == 1 else "mixed"


def build_batch(instances: list[Any], scale: float, max_pixels: int) -> np.ndarray:
    """All instances -> one float32 [N, 28, 28] batch in [0, 1]."""
    batch = np.empty((len(instances), 28, 28), dtype=np.float32)
    for index, item in enumerate(instances):
        if isinstance(item, dict):
            batch[index] = b64_instance(item, index, max_pixels)
        elif isinstance(item, list):
            batch[index] = array_instance(item, index, scale)
        else:
            raise InvalidInputError(f"instance {index} is a {type(item).__name__}; {SHAPE_HINT}")
    return batch
