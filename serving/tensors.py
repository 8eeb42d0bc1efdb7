"""Tensor conversions: TensorProto <-> numpy, and TF Serving's REST JSON <-> numpy.

tf.make_ndarray / tf.make_tensor_proto cost tens of microseconds per call; these numpy-only
converters take the `tensor_content` fast path and cover the dtypes a SavedModel signature
exposes. Responses use the typed `*_val` fields, as TF Serving's Predict does.
"""

from __future__ import annotations

import base64
import json
import math

import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

from serving.errors import InvalidArgumentError

# DataType -> (numpy dtype, TensorProto field holding typed values).
_DTYPES: dict[int, tuple[np.dtype, str]] = {
    types_pb2.DT_FLOAT: (np.dtype(np.float32), "float_val"),
    types_pb2.DT_DOUBLE: (np.dtype(np.float64), "double_val"),
    types_pb2.DT_INT32: (np.dtype(np.int32), "int_val"),
    types_pb2.DT_UINT8: (np.dtype(np.uint8), "int_val"),
    types_pb2.DT_INT16: (np.dtype(np.int16), "int_val"),
    types_pb2.DT_INT8: (np.dtype(np.int8), "int_val"),
    types_pb2.DT_UINT16: (np.dtype(np.uint16), "int_val"),
    types_pb2.DT_INT64: (np.dtype(np.int64), "int64_val"),
    types_pb2.DT_UINT32: (np.dtype(np.uint32), "uint32_val"),
    types_pb2.DT_UINT64: (np.dtype(np.uint64), "uint64_val"),
    types_pb2.DT_BOOL: (np.dtype(np.bool_), "bool_val"),
    types_pb2.DT_HALF: (np.dtype(np.float16), "half_val"),
    types_pb2.DT_STRING: (np.dtype(object), "string_val"),
}
_NUMPY_TO_DTYPE: dict[np.dtype, int] = {
    dtype: enum for enum, (dtype, _) in _DTYPES.items() if dtype != np.dtype(object)
}


SUPPORTED_DTYPES = frozenset(_DTYPES)


def dtype_enum(dtype: np.dtype) -> int | None:
    """The DataType enum of a numpy dtype (None for dtypes a tensor cannot hold)."""
    if dtype == np.dtype(object):
        return types_pb2.DT_STRING
    return _NUMPY_TO_DTYPE.get(dtype)


def dtype_name(enum: int) -> str:
    """TensorFlow's short name for a DataType enum ("float", "int64")."""
    name = types_pb2.DataType.Name(enum)
    return {"DT_FLOAT": "float", "DT_DOUBLE": "double", "DT_STRING": "string"}.get(
        name, name.removeprefix("DT_").lower()
    )


def numpy_dtype(enum: int) -> np.dtype:
    """The numpy dtype of a DataType enum; InvalidArgumentError when unsupported."""
    try:
        return _DTYPES[enum][0]
    except KeyError:
        raise InvalidArgumentError(f"unsupported dtype {types_pb2.DataType.Name(enum)}") from None


def shape_dims(shape: tensor_shape_pb2.TensorShapeProto) -> list[int] | None:
    """Dimension sizes of a TensorShapeProto (-1 unknown), or None for unknown rank."""
    if shape.unknown_rank:
        return None
    return [dim.size for dim in shape.dim]


def make_ndarray(proto: tensor_pb2.TensorProto, alias: str = "") -> np.ndarray:
    """Decode a TensorProto; an inconsistent one is InvalidArgumentError("tensor parsing error")."""
    entry = _DTYPES.get(proto.dtype)
    if entry is None:
        raise InvalidArgumentError(f"tensor parsing error: {alias}")
    dtype, field = entry
    shape = tuple([dim.size for dim in proto.tensor_shape.dim])
    if shape and min(shape) < 0:
        raise InvalidArgumentError(f"tensor parsing error: {alias}")
    size = math.prod(shape)
    content = proto.tensor_content  # the common, fast form: raw little-endian bytes
    if content and proto.dtype != types_pb2.DT_STRING:
        if len(content) != size * dtype.itemsize:
            raise InvalidArgumentError(f"tensor parsing error: {alias}")
        return np.frombuffer(content, dtype=dtype).reshape(shape)
    values = getattr(proto, field)
    count = len(values)
    if proto.dtype == types_pb2.DT_HALF:
        array = np.array(values, dtype=np.uint16).view(np.float16)
    elif proto.dtype == types_pb2.DT_STRING:
        array = np.empty(count, dtype=object)
        array[:] = list(values)
    else:
        array = np.array(values, dtype=dtype)
    if count == size:
        return array.reshape(shape)
    # TensorFlow's rule: fewer values than elements repeat the last one (or zeros if none).
    if count < size:
        filled = np.empty(size, dtype=dtype)
        filled[:] = array[-1] if count else (b"" if dtype == np.dtype(object) else 0)
        filled[:count] = array
        return filled.reshape(shape)
    raise InvalidArgumentError(f"tensor parsing error: {alias}")


def fill_tensor_proto(array: np.ndarray, proto: tensor_pb2.TensorProto) -> None:
    """Write an array into `proto` with typed `*_val` fields, as TF Serving's Predict does."""
    if array.dtype.kind in ("O", "S", "U"):
        proto.dtype = types_pb2.DT_STRING
        proto.string_val.extend(
            v if isinstance(v, bytes) else str(v).encode() for v in array.ravel().tolist()
        )
    else:
        enum = _NUMPY_TO_DTYPE.get(array.dtype)
        if enum is None:
            raise InvalidArgumentError(f"unsupported output dtype {array.dtype}")
        proto.dtype = enum
        flat = array.ravel()
        if enum == types_pb2.DT_HALF:
            proto.half_val.extend(flat.view(np.uint16).tolist())
        else:
            getattr(proto, _DTYPES[enum][1]).extend(flat.tolist())
    dims = proto.tensor_shape.dim
    for size in array.shape:
        dims.add().size = size


def make_tensor_proto(array: np.ndarray) -> tensor_pb2.TensorProto:
    """A new TensorProto holding `array` (see fill_tensor_proto)."""
    proto = tensor_pb2.TensorProto()
    fill_tensor_proto(array, proto)
    return proto


# ---------------------------------------------------------------------------------------
# REST JSON (TF Serving's json_tensor rules)
# ---------------------------------------------------------------------------------------


def _decode_b64(value: dict, alias: str) -> bytes:
    if set(value) != {"b64"} or not isinstance(value["b64"], str):
        raise InvalidArgumentError(
            f"JSON object: does not have named input: {alias} or is not a {{'b64': ...}} value"
        )
    try:
        return base64.b64decode(value["b64"], validate=True)
    except (ValueError, TypeError):
        raise InvalidArgumentError(f"Unable to base64 decode the value of input: {alias}") from None


def _strings_array(value, alias: str) -> np.ndarray:
    def convert(item):
        if isinstance(item, list):
            return [convert(x) for x in item]
        if isinstance(item, dict):
            return _decode_b64(item, alias)
        if isinstance(item, str):
            return item.encode()
        raise InvalidArgumentError(
            f"JSON Value: {item!r} Type: {type(item).__name__} is not of expected type: string"
        )

    converted = convert(value)
    try:
        nested = np.array(converted, dtype=object)
    except ValueError:
        raise InvalidArgumentError(
            f"Expecting a rectangular JSON array for input: {alias}"
        ) from None
    return nested


def json_to_ndarray(value, dtype_enum: int, alias: str) -> np.ndarray:
    """Convert one input's JSON value to an array of the signature's dtype.

    Like TF Serving, numbers are required for numeric inputs (no strings or booleans), whole
    numbers for integer inputs, and nested lists must be rectangular.
    """
    dtype = numpy_dtype(dtype_enum)
    if dtype == np.dtype(object):
        return _strings_array(value, alias)
    try:
        raw = np.array(value)
    except ValueError:
        raise InvalidArgumentError(
            f"Failed to process element: of input: {alias}: the JSON array is not rectangular "
            "(all rows must have the same length)"
        ) from None
    kind = raw.dtype.kind
    expected = dtype_name(dtype_enum)
    if dtype.kind == "b":
        ok = kind == "b"
    elif dtype.kind == "f":
        ok = kind in "iuf"
    else:
        ok = kind in "iu"
    if not ok:
        if kind == "O":
            detail = "the JSON array is not rectangular or mixes types"
        elif kind in "US":
            detail = "found a string"
        elif kind == "b":
            detail = "found a boolean"
        elif kind == "f":
            detail = "found a non-integer number"
        else:
            detail = f"found {raw.dtype}"
        raise InvalidArgumentError(
            f"Failed to process element of input: {alias}: {detail}; "
            f"the signature expects {expected} values"
        )
    return raw.astype(dtype, copy=False)


def _json_value(array: np.ndarray, alias: str):
    """An array as nested JSON lists; strings as UTF-8 text, or {"b64"} for *_bytes aliases."""
    if array.dtype == np.dtype(object) or array.dtype.kind == "S":
        as_b64 = alias.endswith("_bytes")

        def convert(item):
            if isinstance(item, list):
                return [convert(x) for x in item]
            data = item if isinstance(item, bytes) else str(item).encode()
            if as_b64:
                return {"b64": base64.b64encode(data).decode()}
            return data.decode("utf-8", errors="replace")

        return convert(array.tolist())
    # NaN and Infinity come out as bare tokens, as TF Serving writes them.
    return array.tolist()


def outputs_to_json(outputs: dict[str, np.ndarray], row_format: bool) -> dict:
    """TF Serving's response body: {"predictions": ...} for row requests, {"outputs": ...}
    for columnar ones; a single output is written without its name."""
    if not row_format:
        if len(outputs) == 1:
            ((alias, array),) = outputs.items()
            return {"outputs": _json_value(array, alias)}
        return {"outputs": {alias: _json_value(a, alias) for alias, a in outputs.items()}}
    if len(outputs) == 1:
        ((alias, array),) = outputs.items()
        return {"predictions": _json_value(array, alias)}
    batch = None
    for alias, array in outputs.items():
        size = array.shape[0] if array.ndim else None
        if size is None or (batch is not None and size != batch):
            raise InvalidArgumentError(
                f"Tensor name: {alias} has inconsistent batch size: {size} expecting: {batch}"
            )
        batch = size
    columns = {alias: _json_value(a, alias) for alias, a in outputs.items()}
    return {
        "predictions": [
            {alias: column[i] for alias, column in columns.items()} for i in range(batch or 0)
        ]
    }


def parse_predict_body(body: bytes) -> dict:
    """Parse a :predict body; it must be a JSON object with exactly one of instances/inputs."""
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidArgumentError(f"JSON Parse error: {error}") from None
    if not isinstance(request, dict):
        raise InvalidArgumentError("JSON Parse error: the request body must be a JSON object")
    has_instances, has_inputs = "instances" in request, "inputs" in request
    if has_instances == has_inputs:
        if has_instances:
            raise InvalidArgumentError("Not both 'instances' and 'inputs' keys can be specified")
        raise InvalidArgumentError("Missing 'inputs' or 'instances' key")
    signature_name = request.get("signature_name", "")
    if not isinstance(signature_name, str):
        raise InvalidArgumentError("'signature_name' key must be a string")
    return request


def json_request_inputs(request: dict, input_infos: dict) -> tuple[dict[str, np.ndarray], bool]:
    """Inputs of a parsed :predict body against the signature's TensorInfo map.

    Returns (inputs, row_format). Row format ("instances") stacks one value per instance;
    with several inputs each instance is an object naming them. Columnar format ("inputs")
    gives each input whole, or the value directly when the signature has one input.
    """
    names = sorted(input_infos)
    if "instances" in request:
        instances = request["instances"]
        if not isinstance(instances, list):
            raise InvalidArgumentError("'instances' must be a JSON array")
        if not instances:
            raise InvalidArgumentError("'instances' is an empty JSON array")
        named = isinstance(instances[0], dict) and set(instances[0]) != {"b64"}
        if named:
            columns: dict[str, list] = {name: [] for name in instances[0]}
            for index, instance in enumerate(instances):
                if not isinstance(instance, dict) or set(instance) != set(columns):
                    raise InvalidArgumentError(
                        f"Expecting object with the same keys at instance {index}: "
                        f"{{{','.join(sorted(columns))}}}"
                    )
                for name, value in instance.items():
                    columns[name].append(value)
        elif len(names) == 1:
            columns = {names[0]: instances}
        else:
            raise InvalidArgumentError(
                f"Expecting JSON object instances with named inputs {{{','.join(names)}}} "
                "since the signature has more than one input"
            )
        return _convert_columns(columns, input_infos), True
    inputs = request["inputs"]
    if isinstance(inputs, dict) and set(inputs) != {"b64"}:
        columns = dict(inputs)
    elif len(names) == 1:
        columns = {names[0]: inputs}
    else:
        raise InvalidArgumentError(
            f"Expecting a JSON object of named inputs {{{','.join(names)}}} "
            "since the signature has more than one input"
        )
    return _convert_columns(columns, input_infos), False


def _convert_columns(columns: dict, input_infos: dict) -> dict[str, np.ndarray]:
    converted = {}
    for name, value in columns.items():
        info = input_infos.get(name)
        if info is None:
            raise InvalidArgumentError(
                f"input tensor alias not found in signature: {name}. Inputs expected to be "
                f"in the set {{{','.join(sorted(input_infos))}}}."
            )
        converted[name] = json_to_ndarray(value, info.dtype, name)
    return converted
