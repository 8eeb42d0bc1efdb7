"""TF Serving's REST JSON <-> numpy, as util/json_tensor.cc does it, text for text.

Requests are read as rapidjson reads them (serving/protocol/rapidjson.py); the number
types it tells apart decide what a typed tensor accepts (`1.0` is not an int32, and
`2147483648` is not one either), and the error texts are json_tensor.cc's.

Responses are written as rapidjson's PrettyWriter writes them, with json_tensor.cc's
WriteDecimal for floats (six significant digits, nine or seventeen when six do not
round-trip, ".0" on whole numbers), so the bytes match tensorflow_model_server's.

Two paths: Python's json module plus numpy handle the common request (numbers in
rectangular lists); anything it cannot decide exactly (booleans, nulls, strings, ragged
lists, out-of-range values, Inf, parse errors) is redone by a faithful element-by-element
port of json_tensor.cc, which also writes TF Serving's error messages.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from tensorflow.core.framework import types_pb2

from serving.errors import InvalidArgumentError, UnimplementedError
from serving.protocol.rapidjson import (
    PrettyWriter,
    debug_string,
    json_string,
    json_type_string,
    members,
    parse,
)
from serving.tensor_proto import dtype_name, numpy_dtype

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
UINT32_MAX = 2**32 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
UINT64_MAX = 2**64 - 1
BASE64_KEY = "b64"
BYTES_SUFFIX = "_bytes"


def parse_document(body: bytes) -> dict:
    """ParseJson plus its check that the root is an object."""
    document = parse(body)
    if not isinstance(document, dict):
        raise InvalidArgumentError(f"JSON Value: {debug_string(document)} Is not object")
    return document


def write_decimal(value: float, is_float32: bool) -> str:
    """json_tensor.cc WriteDecimal: %g (six digits), or max_digits10 when that does not
    round-trip, ".0" on a whole number; NaN, Infinity, -Infinity as bare tokens."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    # printf's %g, which absl::StrCat(float) and StrFormat("%.*g") use.
    text = f"{value:g}"
    if is_float32:
        if np.float32(float(text)) != np.float32(value):
            text = f"{value:.9g}"
    elif float(text) != value:
        text = f"{value:.17g}"
    if "." not in text and "e" not in text:
        text += ".0"
    return text


# -------------------------------------------------------------------------------------
# Request -> tensors (FillPredictRequestFromJson)
# -------------------------------------------------------------------------------------


def _format_error(document: Any, *parts: str) -> InvalidArgumentError:
    return InvalidArgumentError(f"JSON Value: {debug_string(document)} " + "".join(parts))


def _type_error(value: Any, dtype: int) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"JSON Value: {debug_string(value)} Type: {json_type_string(value)} is not of "
        f"expected type: {dtype_name(dtype)}"
    )


def _is_b64_object(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and len(members(value)) == 1
        and isinstance(value.get(BASE64_KEY), str)
    )


_BASE64_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
_ASCII_SPACE = frozenset(b" \t\n\v\f\r")


def _b64decode(text: str) -> bytes:
    """absl::Base64Unescape: whitespace skipped, '=' or '.' as padding, and the padding
    either absent or exactly what the length calls for."""
    data = text.encode("utf-8", "surrogateescape")
    symbols = bytearray()
    index = 0
    while index < len(data):
        char = data[index]
        if char in _BASE64_ALPHABET:
            symbols.append(char)
        elif char in (ord("="), ord(".")) or char == 0:
            break
        elif char not in _ASCII_SPACE:
            raise InvalidArgumentError("Unable to base64 decode")
        index += 1
    padding = 0
    for char in data[index:]:
        if char == 0:
            break
        if char in (ord("="), ord(".")):
            padding += 1
        elif char not in _ASCII_SPACE:
            raise InvalidArgumentError("Unable to base64 decode")
    leftover = len(symbols) % 4
    expected = {0: 0, 2: 2, 3: 1}.get(leftover)
    if expected is None or padding not in (0, expected):
        raise InvalidArgumentError("Unable to base64 decode")
    return base64.b64decode(bytes(symbols) + b"=" * ((4 - leftover) % 4))


def _decode_b64_object(value: Any) -> bytes:
    if not _is_b64_object(value):
        raise InvalidArgumentError(
            f"JSON Value: {debug_string(value)} not formatted correctly for base64 data"
        )
    return _b64decode(value[BASE64_KEY])


def _add_value(value: Any, dtype: int, out: list) -> None:
    """AddValueToTensor: one leaf value, type- and range-checked for `dtype`."""
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if dtype in (types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE):
        if not is_number:
            raise _type_error(value, dtype)
        out.append(float(value))
        return
    if dtype == types_pb2.DT_STRING:
        if not isinstance(value, str):
            raise _type_error(value, dtype)
        out.append(value.encode("utf-8", "surrogateescape"))
        return
    if dtype == types_pb2.DT_BOOL:
        if not isinstance(value, bool):
            raise _type_error(value, dtype)
        out.append(value)
        return
    ranges = {
        types_pb2.DT_INT32: (INT32_MIN, INT32_MAX),
        types_pb2.DT_INT16: (INT32_MIN, INT32_MAX),
        types_pb2.DT_INT8: (INT32_MIN, INT32_MAX),
        types_pb2.DT_UINT8: (INT32_MIN, INT32_MAX),
        types_pb2.DT_INT64: (INT64_MIN, INT64_MAX),
        types_pb2.DT_UINT32: (0, UINT32_MAX),
        types_pb2.DT_UINT64: (0, UINT64_MAX),
    }
    bounds = ranges.get(dtype)
    if bounds is None:
        raise UnimplementedError(
            f"Conversion of JSON Value: {debug_string(value)} to type: {dtype_name(dtype)}"
        )
    if not (type(value) is int and bounds[0] <= value <= bounds[1]):
        raise _type_error(value, dtype)
    out.append(value)


def _dense_shape(value: Any) -> list[int]:
    """GetDenseTensorShape: the sizes along the first element of each level."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _fill(value: Any, shape: list[int], dtype: int, out: list) -> None:
    """FillTensorProto, with an explicit stack (no recursion limit on deep lists)."""
    rank = len(shape)
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if not isinstance(item, list):
            if level != rank:
                raise InvalidArgumentError(
                    f"JSON Value: {debug_string(item)} found at incorrect level: {level + 1} "
                    f"in the JSON DOM. Expected at level: {rank}"
                )
            if isinstance(item, dict):
                if dtype != types_pb2.DT_STRING:
                    raise _type_error(item, dtype)
                out.append(_decode_b64_object(item))
            else:
                _add_value(item, dtype, out)
            continue
        if level >= rank:
            raise InvalidArgumentError(
                f"Encountered list at unexpected level: {level} expected < {rank}"
            )
        if len(item) != shape[level]:
            raise InvalidArgumentError(
                f"Encountered list at unexpected size: {len(item)} at level: {level} "
                f"expected size: {shape[level]}"
            )
        stack.extend((child, level + 1) for child in reversed(item))


def _to_array(values: list, shape: Sequence[int], dtype: int) -> np.ndarray:
    """The decoded TensorProto of these values (Tensor::FromProto's casts included)."""
    target = numpy_dtype(dtype)
    if dtype == types_pb2.DT_STRING:
        array = np.empty(len(values), dtype=object)
        array[:] = values
    elif dtype in (types_pb2.DT_INT16, types_pb2.DT_INT8, types_pb2.DT_UINT8):
        array = np.array(values, dtype=np.int32).astype(target)  # int_val, then a C cast
    else:
        array = np.array(values, dtype=target)
    return array.reshape(tuple(shape))


def _fast_array(value: Any, dtype: int) -> np.ndarray | None:
    """numpy's reading of a numeric value when it provably equals json_tensor.cc's;
    None when only the element-by-element path can decide."""
    if dtype in (types_pb2.DT_STRING, types_pb2.DT_BOOL, types_pb2.DT_HALF):
        return None
    try:
        raw = np.array(value)
    except (ValueError, TypeError, OverflowError, RecursionError):
        return None
    kind = raw.dtype.kind
    if kind not in "iuf" or raw.size == 0:
        return None
    if dtype in (types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE):
        if kind == "f" and not np.isfinite(raw).all():
            return None  # NaN/Inf tokens and overflows: let the exact path look
        return raw.astype(numpy_dtype(dtype))
    if kind == "f":
        return None
    low, high = int(raw.min()), int(raw.max())
    if dtype in (types_pb2.DT_INT32, types_pb2.DT_INT16, types_pb2.DT_INT8, types_pb2.DT_UINT8):
        if low < INT32_MIN or high > INT32_MAX:
            return None
        return raw.astype(np.int32).astype(numpy_dtype(dtype))
    if dtype == types_pb2.DT_INT64:
        return raw.astype(np.int64) if high <= INT64_MAX else None
    if dtype == types_pb2.DT_UINT32:
        return raw.astype(np.uint32) if low >= 0 and high <= UINT32_MAX else None
    if dtype == types_pb2.DT_UINT64:
        return raw.astype(np.uint64) if low >= 0 else None
    return None


def literals_absent(body: bytes) -> bool:
    """True when the body holds no `true`, `false` or `null`: numpy would read booleans
    as numbers and nulls as objects, so only then may the numeric fast path run. (Checked
    on the bytes, in C, rather than by walking every value in Python.)"""
    return b"true" not in body and b"false" not in body and b"null" not in body


def tensor_from_json(value: Any, dtype: int, fast: bool = False) -> np.ndarray:
    """One tensor from its JSON value (the "inputs" form): shape from the first elements,
    every element checked for its level and type."""
    if (
        fast
        and dtype not in (types_pb2.DT_STRING, types_pb2.DT_BOOL, types_pb2.DT_HALF)
        and isinstance(value, list)
    ):
        array = _fast_array(value, dtype)
        if array is not None and list(array.shape) == _dense_shape(value):
            return array
    shape = _dense_shape(value)
    values: list = []
    _fill(value, shape, dtype, values)
    return _to_array(values, shape, dtype)


def _instance_item(value: Any, dtype: int) -> tuple[list, list[int]]:
    shape = _dense_shape(value)
    values: list = []
    _fill(value, shape, dtype, values)
    return values, shape


def _shape_text(shape: list[int]) -> str:
    return "[" + ",".join(map(str, shape)) + "]"


def tensors_from_instances(
    instances: list, input_infos: Mapping[str, Any], fast: bool = False
) -> dict[str, np.ndarray]:
    """FillTensorMapFromInstancesList: each instance adds one row to every input."""
    names = sorted(input_infos)
    first = instances[0]
    if not isinstance(first, dict) and len(names) > 1:
        raise InvalidArgumentError(
            "instances is a plain list, but expecting list of objects as multiple input "
            "tensors required as per tensorinfo_map"
        )
    named = isinstance(first, dict) and not _is_b64_object(first)
    if not named:
        dtype = input_infos[names[0]].dtype
        if fast and dtype not in (types_pb2.DT_STRING, types_pb2.DT_BOOL, types_pb2.DT_HALF):
            array = _fast_array(instances, dtype)
            if array is not None and array.ndim >= 1 and array.shape[0] == len(instances):
                return {names[0]: array}
    columns: dict[str, list] = {}
    sizes: dict[str, int] = {}
    shapes: dict[str, list[int]] = {}
    for index, element in enumerate(instances):
        element_named = isinstance(element, dict) and not _is_b64_object(element)
        if named:
            if not element_named:
                raise InvalidArgumentError(
                    f"Expecting object but got list at item {index} of input list"
                )
            keys = set()
            for key, item in members(element):
                keys.add(key)
                try:
                    _add_instance_item(item, key, input_infos, columns, sizes, shapes)
                except (InvalidArgumentError, UnimplementedError) as error:
                    raise InvalidArgumentError(
                        f"Failed to process element: {index} key: {key} of 'instances' list. "
                        f"Error: {error.code.name}: {error.message}"
                    ) from None
            if keys != set(names):
                raise InvalidArgumentError(
                    f"Failed to process element: {index} of 'instances' list. JSON object: "
                    f"{debug_string(element)} keys must be equal to: {','.join(names)}"
                )
        else:
            if element_named:
                raise InvalidArgumentError(
                    f"Expecting value/list but got object at item {index} of input list"
                )
            try:
                _add_instance_item(element, names[0], input_infos, columns, sizes, shapes)
            except (InvalidArgumentError, UnimplementedError) as error:
                raise InvalidArgumentError(
                    f"Failed to process element: {index} of 'instances' list. Error: "
                    f"{error.code.name}: {error.message}"
                ) from None
    return {
        name: _to_array(values, [len(instances), *shapes[name]], input_infos[name].dtype)
        for name, values in columns.items()
    }


def _add_instance_item(
    item: Any,
    name: str,
    input_infos: Mapping[str, Any],
    columns: dict[str, list],
    sizes: dict[str, int],
    shapes: dict[str, list[int]],
) -> None:
    """AddInstanceItem: one instance's value of one input, consistent with the others."""
    if name not in input_infos:
        raise InvalidArgumentError(f"JSON object: does not have named input: {name}")
    values, shape = _instance_item(item, input_infos[name].dtype)
    if name not in sizes:
        sizes[name] = len(values)
        shapes[name] = shape
    elif sizes[name] != len(values):
        raise InvalidArgumentError(f"Expecting tensor size: {sizes[name]} but got: {len(values)}")
    elif shapes[name] != shape:
        raise InvalidArgumentError(
            f"Expecting shape {_shape_text(shapes[name])} but got: {_shape_text(shape)}"
        )
    columns.setdefault(name, []).extend(values)


def parse_predict_body(body: bytes) -> dict:
    """ParseJson and FillSignature: the request object, its signature_name checked."""
    document = parse_document(body)
    if "signature_name" in document and not isinstance(document["signature_name"], str):
        raise InvalidArgumentError(
            f"JSON Value: {debug_string(document)} not formatted correctly. "
            "'signature_name' key must be a string value."
        )
    return document


def json_request_inputs(
    document: dict, input_infos: Mapping[str, Any], signature_name: str = "", fast: bool = False
) -> tuple[dict[str, np.ndarray], bool]:
    """FillPredictRequestFromJson after the signature is known: (inputs, row_format).

    `fast` allows the numpy path; pass `literals_absent(body)` (tests pass False to check
    that both paths agree)."""
    if not input_infos:
        raise InvalidArgumentError(
            f"Failed to get input map for signature: {signature_name or 'DEFAULT'}"
        )
    has_instances, has_inputs = "instances" in document, "inputs" in document
    if has_instances and has_inputs:
        raise _format_error(
            document,
            "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist ",
        )
    if has_instances:
        instances = document["instances"]
        if not isinstance(instances, list):
            raise _format_error(document, "Expecting 'instances' to be an list/array")
        if not instances:
            raise _format_error(document, "No values in 'instances' array")
        return tensors_from_instances(instances, input_infos, fast), True
    if has_inputs:
        value = document["inputs"]
        names = sorted(input_infos)
        if not isinstance(value, dict) or _is_b64_object(value):
            if len(names) > 1:
                raise InvalidArgumentError(
                    "inputs is a plain value/list, but expecting an object as multiple input "
                    "tensors required as per tensorinfo_map"
                )
            return {names[0]: tensor_from_json(value, input_infos[names[0]].dtype, fast)}, False
        inputs = {}
        for name in names:
            if name not in value:
                raise InvalidArgumentError(f"Missing named input: {name} in 'inputs' object.")
            inputs[name] = tensor_from_json(value[name], input_infos[name].dtype, fast)
        return inputs, False
    raise InvalidArgumentError("Missing 'inputs' or 'instances' key")


# -------------------------------------------------------------------------------------
# Tensors -> response (MakeJsonFromTensors)
# -------------------------------------------------------------------------------------


def _scalar_token(value: Any, kind: str) -> str:
    if kind == "f32":
        return write_decimal(float(value), True)
    if kind == "f64":
        return write_decimal(float(value), False)
    if kind == "b":
        return "true" if value else "false"
    if kind == "s":
        data = value if isinstance(value, bytes) else str(value).encode()
        return json_string(data.decode("utf-8", "surrogateescape"))
    return str(int(value))


def _kind(array: np.ndarray) -> str:
    """How AddSingleValueAndAdvance writes the array's dtype; UNIMPLEMENTED-like refusal
    (TF Serving: 'Failed to write JSON value') for dtypes it cannot write."""
    dtype = array.dtype
    if dtype == np.float32:
        return "f32"
    if dtype == np.float64:
        return "f64"
    if dtype == np.bool_:
        return "b"
    if dtype.kind in "OSU":
        return "s"
    if dtype in (np.int32, np.int16, np.int8, np.uint8, np.int64, np.uint32, np.uint64):
        return "i"
    enum = {np.dtype(np.float16): types_pb2.DT_HALF, np.dtype(np.uint16): types_pb2.DT_UINT16}
    name = dtype_name(enum[dtype]) if dtype in enum else str(dtype)
    raise InvalidArgumentError(f"Failed to write JSON value for tensor type: {name}")


def _write_tensor(writer: PrettyWriter, array: np.ndarray, alias: str, start_dim: int, row=None):
    """AddTensorValues from `start_dim` (1 for one row of a batch, 0 for a whole tensor)."""
    kind = _kind(array)
    as_bytes = kind == "s" and alias.endswith(BYTES_SUFFIX)
    # Python scalars, fast to walk (a slice keeps an object array's row an array).
    values = array.tolist() if row is None else array[row : row + 1].tolist()[0]

    def write(item: Any, depth: int) -> None:
        if depth == array.ndim:
            if as_bytes:  # { "b64": ... }, an object at the writer's current indent
                writer.start(False)
                writer.raw(json_string(BASE64_KEY))
                data = item if isinstance(item, bytes) else str(item).encode()
                writer.raw(json_string(base64.b64encode(data).decode()))
                writer.end(False)
            else:
                writer.raw(_scalar_token(item, kind))
            return
        writer.start(True)
        for child in item:
            write(child, depth + 1)
        writer.end(True)

    write(values, start_dim)


def _check_batch(outputs: dict[str, np.ndarray], names: list[str]) -> None:
    """MakeRowFormatJsonFromTensors' checks: every output has a batch dimension, the same."""
    batch = -1
    for name in names:
        array = outputs[name]
        if array.ndim == 0:
            raise InvalidArgumentError(f"Tensor name: {name} has no shape information ")
        if batch >= 0 and batch != array.shape[0]:
            raise InvalidArgumentError(
                f"Tensor name: {name} has inconsistent batch size: {array.shape[0]} "
                f"expecting: {batch}"
            )
        batch = array.shape[0]


def _decimal_tokens(flat: np.ndarray, is_float32: bool) -> list[str]:
    """WriteDecimal over a whole array: %g for all values at once, the round-trip test
    vectorised, and the few values that fail it (or are not finite) redone one by one."""
    values = flat.astype(np.float64).tolist()
    texts = [f"{value:g}" for value in values]
    parsed = np.array(texts, dtype=np.float64)
    exact = (parsed.astype(np.float32) if is_float32 else parsed) == flat
    exact &= np.isfinite(flat)
    if not exact.all():
        # Nine (or seventeen) digits where six do not round-trip: most softmax outputs.
        digits = "{:.9g}" if is_float32 else "{:.17g}"
        finite = np.isfinite(flat).tolist()
        for index in np.flatnonzero(~exact).tolist():
            value = values[index]
            texts[index] = digits.format(value) if finite[index] else write_decimal(value, True)
    return [
        text if "." in text or "e" in text or text[-1] in "Ny" else text + ".0" for text in texts
    ]


def _nested_tokens(array: np.ndarray) -> Any:
    """The array as nested lists of JSON tokens (a bare token for a scalar)."""
    kind = _kind(array)
    if array.size == 0:
        return array.tolist()  # nested empty lists: no value to write
    flat = array.ravel()
    if kind == "f32" or kind == "f64":
        tokens = _decimal_tokens(flat, kind == "f32")
    elif kind == "b":
        tokens = ["true" if value else "false" for value in flat.tolist()]
    else:
        tokens = [str(value) for value in flat.tolist()]
    for size in reversed(array.shape[1:]):
        tokens = [tokens[i : i + size] for i in range(0, len(tokens), size)]
    return tokens[0] if array.ndim == 0 else tokens


def _single_line(value: Any) -> str:
    """A value as PrettyWriter writes it under kFormatSingleLineArray."""
    if not isinstance(value, list):
        return value
    return "[" + ", ".join(_single_line(item) for item in value) + "]"


def _pretty(value: Any, level: int) -> str:
    """A value as PrettyWriter writes it in its default format, `level` deep."""
    if not isinstance(value, list):
        return value
    if not value:
        return "[]"
    indent = "\n" + "    " * level
    body = ",".join(indent + _pretty(item, level + 1) for item in value)
    return "[" + body + "\n" + "    " * (level - 1) + "]"


def _fast_outputs_json(outputs: dict[str, np.ndarray], names: list[str], row_format: bool):
    """MakeJsonFromTensors' text built directly, for numeric and boolean outputs (a test
    checks it against the PrettyWriter path); None when an output holds strings."""
    if any(outputs[name].dtype.kind in "OSU" for name in names):
        return None
    tokens = {name: _nested_tokens(outputs[name]) for name in names}
    objects = len(names) > 1
    if not row_format:
        if not objects:
            return '{\n    "outputs": ' + _pretty(tokens[names[0]], 2) + "\n}"
        members = ",".join(
            "\n        " + json_string(name) + ": " + _pretty(tokens[name], 3) for name in names
        )
        return '{\n    "outputs": {' + members + "\n    }\n}"
    batch = outputs[names[0]].shape[0]
    if objects:
        rows = ",".join(
            "\n        {"
            + ",".join(
                "\n            " + json_string(name) + ": " + _single_line(tokens[name][i])
                for name in names
            )
            + "\n        }"
            for i in range(batch)
        )
    else:
        rows = ", ".join(_single_line(row) for row in tokens[names[0]])
    return '{\n    "predictions": [' + rows + ("\n    ]" if batch else "]") + "\n}"


def outputs_to_json(outputs: dict[str, np.ndarray], row_format: bool, fast: bool = True) -> str:
    """MakeJsonFromTensors: the response body, as tensorflow_model_server writes it.

    Outputs are written in alias order (TF Serving follows its protobuf map's order, which
    is not specified; sorted is the stable choice). `fast=False` takes the token-by-token
    PrettyWriter path for every output (tests compare the two).
    """
    if not outputs:
        raise InvalidArgumentError("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    if row_format:
        _check_batch(outputs, names)
    if fast:
        text = _fast_outputs_json(outputs, names, row_format)
        if text is not None:
            return text
    writer = PrettyWriter()
    objects = len(names) > 1
    if not row_format:
        writer.start(False)
        writer.raw('"outputs"')
        if objects:
            writer.start(False)
        for name in names:
            if objects:
                writer.raw(json_string(name))
            _write_tensor(writer, outputs[name], name, 0)
        if objects:
            writer.end(False)
        writer.end(False)
        return writer.text()
    batch = outputs[names[0]].shape[0]
    writer.start(False)
    writer.raw('"predictions"')
    writer.start(True)
    for item in range(batch):
        if objects:
            writer.start(False)
        writer.single_line = True
        for name in names:
            if objects:
                writer.raw(json_string(name))
            _write_tensor(writer, outputs[name], name, 1, row=item)
        writer.single_line = False
        if objects:
            writer.end(False)
    writer.end(True)
    writer.end(False)
    return writer.text()


# -------------------------------------------------------------------------------------
# Classify / Regress
# -------------------------------------------------------------------------------------


def _feature_kind_error(name: str, kind: str | None) -> InvalidArgumentError:
    label = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64"}.get(
        kind or "", "UNKNOWN"
    )
    return InvalidArgumentError(
        f"Unexpected element type in feature: {name} expecting type: {label}"
    )


def _add_feature_value(value: Any, name: str, feature) -> None:
    """AddValueToFeature."""
    kind = feature.WhichOneof("kind")

    def want(expected: str) -> None:
        if kind not in (None, expected):
            raise _feature_kind_error(name, kind)

    if (
        value is None
        or isinstance(value, list)
        or (isinstance(value, dict) and not _is_b64_object(value))
    ):
        raise InvalidArgumentError(
            f"Feature: {name} has element with unexpected JSON type: {json_type_string(value)}"
        )
    if isinstance(value, bool):
        want("int64_list")
        feature.int64_list.value.append(1 if value else 0)
    elif isinstance(value, dict):
        want("bytes_list")
        feature.bytes_list.value.append(_decode_b64_object(value))
    elif isinstance(value, str):
        want("bytes_list")
        feature.bytes_list.value.append(value.encode("utf-8", "surrogateescape"))
    elif isinstance(value, float):
        want("float_list")
        feature.float_list.value.append(value)
    else:
        want("int64_list")
        if value > INT64_MAX:
            raise InvalidArgumentError(
                f"Feature: {name} has uint64_t element. Only int64_t is supported."
            )
        feature.int64_list.value.append(value)


def _example_from_json(value: Any) -> bytes:
    """MakeExampleFromJsonObject, serialized."""
    from tensorflow.core.example import example_pb2, feature_pb2

    if not isinstance(value, dict):
        raise InvalidArgumentError(
            f"Example must be JSON object but got JSON {json_type_string(value)}"
        )
    example = example_pb2.Example()
    for name, content in members(value):
        feature = feature_pb2.Feature()
        for item in content if isinstance(content, list) else [content]:
            _add_feature_value(item, name, feature)
        example.features.feature[name].CopyFrom(feature)
    return example.SerializeToString()


def parse_examples_body(body: bytes) -> tuple[list[bytes], str]:
    """FillClassifyRegressRequestFromJson: (serialized examples with context merged in,
    signature name)."""
    document = parse_predict_body(body)
    context = b""
    if "context" in document:
        context = _example_from_json(document["context"])
    if "examples" not in document:
        raise _format_error(
            document, "When method is classify, key 'examples' is expected and was not found"
        )
    examples = document["examples"]
    if not isinstance(examples, list):
        raise _format_error(document, "Expecting 'examples' value to be an list/array")
    if not examples:
        raise _format_error(document, "'examples' value is an empty array")
    serialized = [context + _example_from_json(example) for example in examples]
    return serialized, document.get("signature_name", "")


def classification_json(classifications: list[list[tuple[bytes | None, float | None]]]) -> str:
    """MakeJsonFromClassificationResult."""
    if not classifications:
        raise InvalidArgumentError("Cannot convert empty ClassificationResults to JSON")
    writer = PrettyWriter()
    writer.start(False)
    writer.raw('"results"')
    writer.start(True)
    for classes in classifications:
        writer.single_line = True
        writer.start(True)
        for label, score in classes:
            writer.start(True)
            writer.raw(json_string((label or b"").decode("utf-8", "surrogateescape")))
            writer.raw(write_decimal(float(np.float32(score or 0.0)), True))
            writer.end(True)
        writer.end(True)
        writer.single_line = False
    writer.end(True)
    writer.end(False)
    return writer.text()


def regression_json(values: list[float]) -> str:
    """MakeJsonFromRegressionResult."""
    if not values:
        raise InvalidArgumentError("Cannot convert empty RegressionResults to JSON")
    writer = PrettyWriter()
    writer.start(False)
    writer.raw('"results"')
    writer.single_line = True
    writer.start(True)
    for value in values:
        writer.raw(write_decimal(float(np.float32(value)), True))
    writer.end(True)
    writer.end(False)
    return writer.text()
