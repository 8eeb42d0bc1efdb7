"""Open Inference Protocol (v2) tensors <-> numpy arrays, for both v2 adapters.

- Datatypes: the v2 names (FP32, INT64, BYTES...) and the numpy dtypes a SavedModel
  signature feeds (TensorFlow's DT_FLOAT, DT_INT64, DT_STRING...).
- Raw bytes, as gRPC's raw_input_contents / raw_output_contents and REST's binary_data
  extension carry them: little-endian, row-major, no padding; BOOL one byte (0 or 1); BYTES
  each element a 4-byte little-endian length, then its bytes.
- JSON `data`, as REST carries it: a nested or flat array, row-major.
- Typed contents, as gRPC's InferTensorContents carries them: one repeated field per
  datatype family (FP16 has none: it travels raw only).

v2 requires a tensor's data to hold exactly as many elements as its declared shape: every
decoder checks that before it allocates anything. Whether the shape suits the signature is
TensorFlow's business, as on TF Serving's own APIs (which check no declared shapes).
"""

from __future__ import annotations

import contextlib
import math
import struct
from collections.abc import Sequence

import numpy as np
from tensorflow.core.framework import types_pb2

from serving.errors import InvalidArgumentError, UnimplementedError

DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
_NUMERIC_DATATYPE = {dtype: name for name, dtype in DATATYPES.items() if name != "BYTES"}
_TF_DATATYPE = {
    types_pb2.DT_BOOL: "BOOL",
    types_pb2.DT_UINT8: "UINT8",
    types_pb2.DT_UINT16: "UINT16",
    types_pb2.DT_UINT32: "UINT32",
    types_pb2.DT_UINT64: "UINT64",
    types_pb2.DT_INT8: "INT8",
    types_pb2.DT_INT16: "INT16",
    types_pb2.DT_INT32: "INT32",
    types_pb2.DT_INT64: "INT64",
    types_pb2.DT_HALF: "FP16",
    types_pb2.DT_FLOAT: "FP32",
    types_pb2.DT_DOUBLE: "FP64",
    types_pb2.DT_STRING: "BYTES",
}
# A numpy object array keeps one pointer per element, whatever the strings hold.
_POINTER_BYTES = 8
_LENGTH = struct.Struct("<I")


def numpy_dtype(name: str, datatype: str) -> np.dtype:
    """The numpy dtype of a v2 datatype; InvalidArgumentError naming the ones there are."""
    dtype = DATATYPES.get(datatype)
    if dtype is None:
        raise InvalidArgumentError(
            f"input '{name}': datatype {datatype!r} is not supported; use one of "
            f"{', '.join(DATATYPES)}"
        )
    return dtype


def tf_datatype(enum: int) -> str:
    """The v2 datatype of a TensorFlow DataType; TensorFlow's own name ("DT_COMPLEX64") for
    the dtypes v2 has no datatype for (such tensors cannot be sent or received over v2)."""
    return _TF_DATATYPE.get(enum) or types_pb2.DataType.Name(enum)


def array_datatype(name: str, array: np.ndarray) -> str:
    """The v2 datatype of an output array; UnimplementedError when v2 has none."""
    if array.dtype.kind in "OS":
        return "BYTES"
    datatype = _NUMERIC_DATATYPE.get(array.dtype)
    if datatype is None:
        raise UnimplementedError(
            f"output '{name}' has dtype {array.dtype}, which the Open Inference Protocol "
            "cannot represent; name the other outputs in the request's `outputs`"
        )
    return datatype


def element_count(name: str, shape: Sequence) -> int:
    """The number of elements a declared shape holds; InvalidArgumentError unless every
    dimension is a non-negative integer."""
    for dim in shape:
        if type(dim) is not int or dim < 0:
            raise InvalidArgumentError(
                f"input '{name}': shape {list(shape)} must be a list of non-negative integers"
            )
    return math.prod(shape)


def _count_mismatch(name: str, shape: Sequence[int], got: int, what: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"input '{name}': shape {list(shape)} holds {math.prod(shape)} elements but {what} "
        f"holds {got}"
    )


def decoded_bytes(datatype: str, count: int, raw_size: int | None = None) -> int:
    """Bytes the decoded array of `count` elements takes: of a raw tensor of `raw_size`
    bytes (BYTES: pointers plus payload), or of JSON or typed values (BYTES: pointers; the
    values are in memory already, bounded by the message or body size)."""
    if raw_size is not None:
        return raw_size + (count * _POINTER_BYTES if datatype == "BYTES" else 0)
    return count * DATATYPES.get(datatype, DATATYPES["BYTES"]).itemsize


# -- raw bytes -------------------------------------------------------------------------------


def decode_raw(name: str, datatype: str, shape: Sequence[int], raw: bytes) -> np.ndarray:
    """A raw tensor as an array of `shape`; InvalidArgumentError when its size disagrees."""
    dtype = numpy_dtype(name, datatype)
    count = element_count(name, shape)
    if datatype == "BYTES":
        values = _split_bytes(name, raw)
        if len(values) != count:
            raise _count_mismatch(name, shape, len(values), "its BYTES data")
        array = np.empty(count, dtype=object)
        array[:] = values
        return array.reshape(shape)
    if len(raw) != count * dtype.itemsize:
        raise InvalidArgumentError(
            f"input '{name}': shape {list(shape)} of {datatype} takes "
            f"{count * dtype.itemsize} bytes but its raw data has {len(raw)}"
        )
    array = np.frombuffer(raw, dtype=dtype.newbyteorder("<"))
    if datatype == "BOOL" and count and np.frombuffer(raw, dtype=np.uint8).max() > 1:
        raise InvalidArgumentError(f"input '{name}': BOOL raw data must be bytes 0 or 1")
    if not array.dtype.isnative:
        array = array.astype(dtype)
    return array.reshape(shape)


def _split_bytes(name: str, raw: bytes) -> list[bytes]:
    values = []
    offset, end = 0, len(raw)
    view = memoryview(raw)
    while offset < end:
        if offset + 4 > end:
            raise InvalidArgumentError(
                f"input '{name}': BYTES raw data ends inside an element's 4-byte length"
            )
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > end:
            raise InvalidArgumentError(
                f"input '{name}': a BYTES element declares {length} bytes but only "
                f"{end - offset} remain"
            )
        values.append(bytes(view[offset : offset + length]))
        offset += length
    return values


def encode_raw(array: np.ndarray) -> bytes:
    """An array's raw bytes (the inverse of decode_raw)."""
    if array.dtype.kind in "OS":
        parts = []
        for value in array.ravel().tolist():
            value = value if isinstance(value, bytes) else str(value).encode()
            parts.append(_LENGTH.pack(len(value)))
            parts.append(value)
        return b"".join(parts)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return np.ascontiguousarray(array).tobytes()


# -- JSON data -------------------------------------------------------------------------------


def decode_json(
    name: str, datatype: str, shape: Sequence[int], data, may_hold_bools: bool = True
) -> np.ndarray:
    """A JSON `data` array (nested or flat) as an array of `shape`.

    Values must suit the datatype, as Triton checks them: integers in range for INT*/UINT*,
    numbers for FP* (finite ones within range), true/false for BOOL, strings (UTF-8
    encoded) for BYTES; anything else is a 400. `may_hold_bools` False (the document has no
    `true`/`false` at all) spares looking for booleans that numpy would turn into numbers.
    """
    dtype = numpy_dtype(name, datatype)
    count = element_count(name, shape)
    if not isinstance(data, list):
        raise InvalidArgumentError(f"input '{name}': `data` must be a JSON array")
    parsed = None
    if datatype != "BYTES":
        # Ragged nesting raises: the element-by-element path reads it, row-major still.
        with contextlib.suppress(ValueError):
            parsed = np.asarray(data)
    if (
        parsed is None
        or (parsed.size and not _kind_fits(parsed.dtype.kind, dtype))
        or (may_hold_bools and dtype.kind != "b" and parsed.size and _holds_bool(data))
    ):
        values = _flatten(data)
        if len(values) != count:
            raise _count_mismatch(name, shape, len(values), "`data`")
        _check_values(name, datatype, values)
        if datatype == "BYTES":
            array = np.empty(count, dtype=object)
            array[:] = [value.encode("utf-8", "surrogatepass") for value in values]
            return array.reshape(shape)
        source = values
        try:
            with np.errstate(over="ignore"):
                array = np.array(values, dtype=dtype)
        except OverflowError:  # an integer beyond float64
            raise _out_of_range(name, datatype, max(values, key=abs)) from None
    else:
        if parsed.size != count:
            raise _count_mismatch(name, shape, parsed.size, "`data`")
        source = parsed.reshape(-1)
        if dtype.kind in "iu" and source.size:
            info = np.iinfo(dtype)
            low, high = source.min(), source.max()
            if low < info.min or high > info.max:
                raise _out_of_range(name, datatype, low if low < info.min else high)
        with np.errstate(over="ignore"):
            array = source.astype(dtype)
    if dtype.kind == "f" and count:
        _check_finite(name, datatype, source, array.reshape(-1))
    return array.reshape(shape)


def _holds_bool(data: list) -> bool:
    """Whether a numeric array's data holds a true/false (numpy reads it as 1 or 0)."""
    return any(type(value) is bool for value in _flatten(data))


def _check_finite(name: str, datatype: str, source, array: np.ndarray) -> None:
    """Refuse finite values that overflowed to infinity in a narrower float."""
    if np.isfinite(array).all():
        return
    overflow = np.isfinite(np.asarray(source, dtype=np.float64)) & ~np.isfinite(array)
    if overflow.any():
        raise _out_of_range(name, datatype, np.asarray(source)[overflow.argmax()].item())


def _out_of_range(name: str, datatype: str, value) -> InvalidArgumentError:
    dtype = DATATYPES[datatype]
    if dtype.kind == "f":
        return InvalidArgumentError(f"input '{name}': {value} is out of the range of {datatype}")
    info = np.iinfo(dtype)
    return InvalidArgumentError(
        f"input '{name}': {value} is out of the range of {datatype} [{info.min}, {info.max}]"
    )


def _kind_fits(kind: str, dtype: np.dtype) -> bool:
    """Whether values numpy inferred as `kind` convert to `dtype` without loss of meaning."""
    if dtype.kind == "b":
        return kind == "b"
    if dtype.kind in "iu":
        return kind in "iu"
    return kind in "iuf"


def _check_values(name: str, datatype: str, values: list) -> None:
    """Element by element, for data numpy could not type at once (mixed or huge values)."""
    dtype = DATATYPES[datatype]
    for value in values:
        if dtype.kind == "O":
            ok = isinstance(value, str)
        elif dtype.kind == "b":
            ok = type(value) is bool
        elif dtype.kind in "iu":
            ok = type(value) is int
        else:
            ok = type(value) in (int, float)
        if not ok:
            raise _wrong_value(name, datatype, value)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        for value in values:
            if not info.min <= value <= info.max:
                raise _out_of_range(name, datatype, value)


def _wrong_value(name: str, datatype: str, value) -> InvalidArgumentError:
    wanted = {
        "b": "true or false",
        "i": "integers",
        "u": "non-negative integers",
        "f": "numbers",
        "O": "strings",
    }[DATATYPES[datatype].kind]
    return InvalidArgumentError(
        f"input '{name}': {datatype} data must be {wanted}, got {_json_text(value)}"
    )


def _json_text(value) -> str:
    if value is True or value is False:
        return "true" if value else "false"
    if value is None:
        return "null"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _flatten(data: list) -> list:
    """Nested lists in row-major order, without recursion (any depth)."""
    flat: list = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def encode_json(name: str, array: np.ndarray) -> list:
    """An output as a flat JSON array; BYTES as UTF-8 strings (InvalidArgumentError, asking
    for binary data, when an element is not UTF-8)."""
    values = array.ravel().tolist()
    if array.dtype.kind not in "OS":
        return values
    try:
        return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]
    except UnicodeDecodeError:
        raise InvalidArgumentError(
            f"output '{name}' holds bytes that are not UTF-8, which JSON cannot carry; ask "
            'for it as binary data (output parameter "binary_data": true)'
        ) from None


# -- typed contents (gRPC) -------------------------------------------------------------------

# datatype -> InferTensorContents field (narrow integers travel in the 32-bit fields).
CONTENTS_FIELDS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def decode_contents(name: str, datatype: str, shape: Sequence[int], contents) -> np.ndarray:
    """An InferTensorContents as an array of `shape`: its datatype's field must hold exactly
    the shape's element count, narrow integers within their range."""
    dtype = numpy_dtype(name, datatype)
    count = element_count(name, shape)
    field = CONTENTS_FIELDS.get(datatype)
    if field is None:
        raise InvalidArgumentError(
            f"input '{name}': {datatype} has no typed contents field; send it in raw_input_contents"
        )
    values = getattr(contents, field)
    if len(values) != count:
        raise _count_mismatch(name, shape, len(values), field)
    if datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return array.reshape(shape)
    if field in ("int_contents", "uint_contents") and dtype.itemsize < 4:
        wide = np.array(values, dtype=np.int64)
        info = np.iinfo(dtype)
        if count and (wide.min() < info.min or wide.max() > info.max):
            bad = wide.min() if wide.min() < info.min else wide.max()
            raise InvalidArgumentError(
                f"input '{name}': {bad} is out of the range of {datatype} [{info.min}, {info.max}]"
            )
        return wide.astype(dtype).reshape(shape)
    return np.array(values, dtype=dtype).reshape(shape)


def fill_contents(array: np.ndarray, contents) -> None:
    """Write an array into an InferTensorContents (not FP16, which has no field)."""
    field = CONTENTS_FIELDS[array_datatype("", array)]
    values = array.ravel().tolist()
    if field == "bytes_contents":
        values = [v if isinstance(v, bytes) else str(v).encode() for v in values]
    getattr(contents, field).extend(values)
