"""The v2 tensor codec on its own: datatypes, raw bytes, JSON data and typed contents, and
the refusals (element counts, ranges, value types) that make client mistakes 400s."""

from __future__ import annotations

import numpy as np
import pytest

from serving.errors import InvalidArgumentError, UnimplementedError
from serving.protocol import v2_codec
from serving.protocol.v2_messages import message_class

NUMERIC = [name for name in v2_codec.DATATYPES if name != "BYTES"]


def _sample(datatype: str) -> np.ndarray:
    dtype = v2_codec.DATATYPES[datatype]
    if datatype == "BYTES":
        return np.array([b"a", b"", b"\xff\x00", "✓".encode()], dtype=object).reshape(2, 2)
    if datatype == "BOOL":
        return np.array([[True, False], [False, True]])
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.array([[info.min, info.max], [0, 1]], dtype=dtype)
    return np.array([[1.5, -0.25], [np.finfo(dtype).max, 0.0]], dtype=dtype)


@pytest.mark.parametrize("datatype", list(v2_codec.DATATYPES))
def test_raw_round_trips_every_datatype(datatype):
    array = _sample(datatype)
    raw = v2_codec.encode_raw(array)
    decoded = v2_codec.decode_raw("x", datatype, [2, 2], raw)
    assert decoded.dtype == v2_codec.DATATYPES[datatype]
    np.testing.assert_array_equal(decoded, array)
    assert v2_codec.array_datatype("x", decoded) == datatype


def test_raw_bytes_are_length_prefixed_little_endian():
    raw = v2_codec.encode_raw(np.array([b"ab", b""], dtype=object))
    assert raw == b"\x02\x00\x00\x00ab\x00\x00\x00\x00"
    assert v2_codec.encode_raw(np.array([1], np.int32)) == b"\x01\x00\x00\x00"


@pytest.mark.parametrize(
    ("datatype", "shape", "raw", "message"),
    [
        ("FP32", [2], b"\0" * 4, "takes 8 bytes but its raw data has 4"),
        ("BYTES", [2], b"\x01\x00\x00\x00a", "holds 2 elements but its BYTES data holds 1"),
        ("BYTES", [1], b"\x05\x00\x00\x00ab", "declares 5 bytes but only 2 remain"),
        ("BYTES", [1], b"\x01\x00", "ends inside an element's 4-byte length"),
        ("BOOL", [2], b"\x01\x02", "BOOL raw data must be bytes 0 or 1"),
        ("BF16", [1], b"\0\0", "datatype 'BF16' is not supported"),
        ("FP32", [-1], b"", "list of non-negative integers"),
    ],
)
def test_raw_refusals(datatype, shape, raw, message):
    with pytest.raises(InvalidArgumentError, match=message):
        v2_codec.decode_raw("x", datatype, shape, raw)


@pytest.mark.parametrize("datatype", list(v2_codec.DATATYPES))
def test_json_round_trips_every_datatype(datatype):
    array = _sample(datatype)
    if datatype == "BYTES":
        array = np.array([b"a", b"", "é".encode(), "✓".encode()], dtype=object).reshape(2, 2)
    data = v2_codec.encode_json("x", array)
    assert len(data) == 4  # flat, row-major
    decoded = v2_codec.decode_json("x", datatype, [2, 2], data)
    np.testing.assert_array_equal(decoded, array)
    nested = v2_codec.decode_json("x", datatype, [2, 2], [data[:2], data[2:]])
    np.testing.assert_array_equal(nested, array)


def test_json_reads_ragged_nesting_in_row_major_order():
    decoded = v2_codec.decode_json("x", "INT32", [2, 2], [[1], [2, [3, 4]]])
    np.testing.assert_array_equal(decoded, [[1, 2], [3, 4]])


def test_json_uint64_keeps_every_bit():
    decoded = v2_codec.decode_json("x", "UINT64", [2], [2**64 - 1, 1])
    assert decoded.tolist() == [2**64 - 1, 1]


@pytest.mark.parametrize(
    ("datatype", "data", "message"),
    [
        ("FP32", [1.0, 2.0, 3.0], "shape \\[2, 2\\] holds 4 elements but `data` holds 3"),
        ("FP32", [1.0, "2", 3.0, 4.0], "FP32 data must be numbers, got '2'"),
        ("FP32", [1.0, True, 3.0, 4.0], "FP32 data must be numbers, got true"),
        ("FP32", [1.0, None, 3.0, 4.0], "got null"),
        ("FP32", [1e39, 0, 0, 0], "1e\\+39 is out of the range of FP32"),
        ("FP16", [70000, 0, 0, 0], "70000 is out of the range of FP16"),
        ("INT32", [1, 2.5, 3, 4], "INT32 data must be integers, got 2.5"),
        ("INT8", [1, 2, 3, 128], "128 is out of the range of INT8 \\[-128, 127\\]"),
        ("UINT8", [1, 2, 3, -1], "-1 is out of the range of UINT8"),
        ("INT64", [1, 2, 3, 2**63], "out of the range of INT64"),
        ("UINT64", [0, 0, 0, 2**70], "out of the range of UINT64"),
        ("BOOL", [True, 1, False, True], "BOOL data must be true or false, got 1"),
        ("BYTES", ["a", 1, "b", "c"], "BYTES data must be strings, got 1"),
        ("INT32", {"a": 1}, "`data` must be a JSON array"),
    ],
)
def test_json_refusals(datatype, data, message):
    with pytest.raises(InvalidArgumentError, match=message):
        v2_codec.decode_json("x", datatype, [2, 2], data)


def test_outputs_v2_cannot_carry_are_unimplemented():
    with pytest.raises(UnimplementedError, match="complex64"):
        v2_codec.array_datatype("z", np.zeros(2, np.complex64))
    with pytest.raises(InvalidArgumentError, match='"binary_data": true'):
        v2_codec.encode_json("s", np.array([b"\xff"], dtype=object))


@pytest.mark.parametrize("datatype", [d for d in v2_codec.DATATYPES if d != "FP16"])
def test_typed_contents_round_trip(datatype):
    array = _sample(datatype)
    contents = message_class("InferTensorContents")()
    v2_codec.fill_contents(array, contents)
    decoded = v2_codec.decode_contents("x", datatype, [2, 2], contents)
    np.testing.assert_array_equal(decoded, array)
    assert decoded.dtype == v2_codec.DATATYPES[datatype]


def test_typed_contents_refusals():
    contents = message_class("InferTensorContents")(int_contents=[1, 200])
    with pytest.raises(InvalidArgumentError, match="200 is out of the range of INT8"):
        v2_codec.decode_contents("x", "INT8", [2], contents)
    with pytest.raises(InvalidArgumentError, match="holds 3 elements but int_contents holds 2"):
        v2_codec.decode_contents("x", "INT32", [3], contents)
    with pytest.raises(InvalidArgumentError, match="send it in raw_input_contents"):
        v2_codec.decode_contents("x", "FP16", [2], contents)


def test_tensorflow_dtypes_map_to_v2_datatypes():
    from tensorflow.core.framework import types_pb2

    assert v2_codec.tf_datatype(types_pb2.DT_FLOAT) == "FP32"
    assert v2_codec.tf_datatype(types_pb2.DT_STRING) == "BYTES"
    assert v2_codec.tf_datatype(types_pb2.DT_HALF) == "FP16"
    assert v2_codec.tf_datatype(types_pb2.DT_COMPLEX64) == "DT_COMPLEX64"
    for datatype in NUMERIC:
        assert v2_codec.array_datatype("x", np.zeros(1, v2_codec.DATATYPES[datatype])) == datatype
