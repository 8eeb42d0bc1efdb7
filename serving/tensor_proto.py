"""TensorProto <-> numpy, with TensorFlow's decoding rules and a bound on what decoding costs.

tf.make_ndarray / tf.make_tensor_proto cost tens of microseconds per call; these numpy-only
converters take the `tensor_content` fast path and cover the dtypes a SavedModel signature
exposes. Responses use the typed `*_val` fields, as TF Serving's Predict does (or
`tensor_content` with --enable_serialization_as_tensor_content).

Decoding follows Tensor::FromProto: fewer typed values than elements repeat the last value,
and none at all means zeros. TF Serving inherits that rule, and with it a request of a few
bytes that declares a huge shape and no values. `decoded_size` computes what a request will
allocate before anything is allocated, so the data plane can refuse it (--max_request_tensor_bytes)
and move expensive decodes off the event loop.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

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
    # Complex values are (real, imaginary) pairs in the typed fields.
    types_pb2.DT_COMPLEX64: (np.dtype(np.complex64), "scomplex_val"),
    types_pb2.DT_COMPLEX128: (np.dtype(np.complex128), "dcomplex_val"),
}
_NUMPY_TO_DTYPE: dict[np.dtype, int] = {
    dtype: enum for enum, (dtype, _) in _DTYPES.items() if dtype != np.dtype(object)
}
# A numpy object array keeps one pointer per element, whatever the strings hold.
_POINTER_BYTES = 8

SUPPORTED_DTYPES = frozenset(_DTYPES)


def dtype_enum(dtype: np.dtype) -> int | None:
    """The DataType enum of a numpy dtype (None for dtypes a tensor cannot hold)."""
    if dtype == np.dtype(object) or dtype.kind == "S":
        return types_pb2.DT_STRING
    return _NUMPY_TO_DTYPE.get(dtype)


def dtype_name(enum: int) -> str:
    """TensorFlow's DataTypeString ("float", "int64", "string")."""
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


def decoded_size(proto: tensor_pb2.TensorProto) -> tuple[int, bool]:
    """(bytes the decoded array will hold, whether decoding costs time per element).

    `tensor_content` is wrapped, not converted: cheap at any size. Typed values and the
    fill rule convert or write every element.
    """
    entry = _DTYPES.get(proto.dtype)
    elements = math.prod(max(dim.size, 0) for dim in proto.tensor_shape.dim)
    if entry is None:
        return 0, False
    dtype = entry[0]
    if proto.dtype == types_pb2.DT_STRING:
        payload = sum(len(value) for value in proto.string_val)
        return elements * _POINTER_BYTES + payload, True
    if proto.tensor_content:
        return len(proto.tensor_content), False
    return elements * dtype.itemsize, True


def check_decoded_size(protos: Mapping[str, tensor_pb2.TensorProto], limit: int) -> int:
    """Bytes the decoded inputs will take (of those costing time per element: the second
    value); InvalidArgumentError naming the limit when the total is above it (0 = none)."""
    total = slow = 0
    for proto in protos.values():
        size, per_element = decoded_size(proto)
        total += size
        if per_element:
            slow += size
    if limit and total > limit:
        raise InvalidArgumentError(
            f"Request input tensors would take {total} bytes once decoded, more than this "
            f"server's limit of {limit} bytes (--max_request_tensor_bytes)"
        )
    return slow


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
    # Tensor::FromProto: extra values are ignored, missing ones repeat the last (or zeros).
    count = min(len(values), size)
    if count < len(values):
        values = values[:count]
    if proto.dtype == types_pb2.DT_HALF:
        array = np.array(values, dtype=np.uint16).view(np.float16)
    elif dtype.kind == "c":  # pairs: count is in parts, two per element
        parts = np.array(getattr(proto, field), dtype=dtype.type(0).real.dtype)
        count = min(len(parts) // 2, size)
        array = parts[: 2 * count].view(dtype)
    elif proto.dtype == types_pb2.DT_STRING:
        array = np.empty(count, dtype=object)
        array[:] = list(values)
    elif field == "int_val" and dtype.itemsize < 4:
        # int_val holds int32s; narrower integer tensors take them with a C cast (wrapping).
        array = np.array(values, dtype=np.int32).astype(dtype)
    else:
        array = np.array(values, dtype=dtype)
    if count == size:
        return array.reshape(shape)
    filled = np.empty(size, dtype=dtype)
    filled[:] = array[-1] if count else (b"" if dtype == np.dtype(object) else 0)
    filled[:count] = array
    return filled.reshape(shape)


def fill_tensor_proto(
    array: np.ndarray, proto: tensor_pb2.TensorProto, as_content: bool = False
) -> None:
    """Write an array into `proto`: typed `*_val` fields (Tensor::AsProtoField), or raw
    `tensor_content` for numeric dtypes when `as_content` (Tensor::AsProtoTensorContent)."""
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
        if as_content:
            proto.tensor_content = np.ascontiguousarray(array).tobytes()
        else:
            flat = array.ravel()
            if enum == types_pb2.DT_HALF:
                proto.half_val.extend(flat.view(np.uint16).tolist())
            elif array.dtype.kind == "c":
                getattr(proto, _DTYPES[enum][1]).extend(flat.view(flat.real.dtype).tolist())
            else:
                getattr(proto, _DTYPES[enum][1]).extend(flat.tolist())
    proto.tensor_shape.SetInParent()  # Tensor::AsProtoField sets it, scalars included
    dims = proto.tensor_shape.dim
    for size in array.shape:
        dims.add().size = size


def make_tensor_proto(array: np.ndarray) -> tensor_pb2.TensorProto:
    """A new TensorProto holding `array` (see fill_tensor_proto)."""
    proto = tensor_pb2.TensorProto()
    fill_tensor_proto(array, proto)
    return proto
