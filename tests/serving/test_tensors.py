"""Tensor conversions agree with TensorFlow's own, and JSON follows TF Serving's rules."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from serving import tensors
from serving.errors import InvalidArgumentError


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.float32).reshape(3, 4) / 7,
        np.arange(6, dtype=np.int64).reshape(2, 3) - 3,
        np.arange(6, dtype=np.int32),
        np.array([[1, 2]], dtype=np.uint8),
        np.array([1.5, -2.25], dtype=np.float64),
        np.array([True, False]),
        np.array([1.5, 2.5], dtype=np.float16),
        np.array([b"a", b"bc"], dtype=object),
        np.zeros((0, 28, 28), dtype=np.float32),
    ],
    ids=["float", "int64", "int32", "uint8", "double", "bool", "half", "string", "empty"],
)
def test_round_trip_matches_tensorflow(array):
    # Our decoder reads TensorFlow's encoding (tensor_content for numerics) ...
    decoded = tensors.make_ndarray(tf.make_tensor_proto(array))
    np.testing.assert_array_equal(decoded, array)
    # ... and TensorFlow reads ours (typed *_val fields, as TF Serving responds).
    np.testing.assert_array_equal(tf.make_ndarray(tensors.make_tensor_proto(array)), array)


def test_typed_fields_with_one_value_fill_the_tensor():
    proto = tf.make_tensor_proto(0.0, dtype=tf.float32, shape=[2, 2])
    proto.ClearField("tensor_content")
    proto.float_val[:] = [3.0]
    np.testing.assert_array_equal(tensors.make_ndarray(proto), np.full((2, 2), 3.0, np.float32))


def test_inconsistent_tensor_content_is_a_parsing_error():
    proto = tf.make_tensor_proto(np.zeros((2, 2), np.float32))
    proto.tensor_content = proto.tensor_content[:-1]
    with pytest.raises(InvalidArgumentError, match="tensor parsing error: images"):
        tensors.make_ndarray(proto, "images")


def test_too_many_typed_values_is_a_parsing_error():
    proto = tensors.make_tensor_proto(np.zeros(2, np.float32))
    proto.float_val.append(1.0)
    with pytest.raises(InvalidArgumentError):
        tensors.make_ndarray(proto, "x")


def test_json_numbers_convert_to_the_signature_dtype():
    array = tensors.json_to_ndarray([[1, 2.5]], types_pb2.DT_FLOAT, "x")
    assert array.dtype == np.float32
    np.testing.assert_array_equal(array, [[1.0, 2.5]])


@pytest.mark.parametrize(
    ("value", "dtype"),
    [
        ([["1.0"]], types_pb2.DT_FLOAT),
        ([[True]], types_pb2.DT_FLOAT),
        ([[1, 2], [3]], types_pb2.DT_FLOAT),
        ([1.5], types_pb2.DT_INT64),
    ],
    ids=["string-for-float", "bool-for-float", "ragged", "fraction-for-int"],
)
def test_json_values_of_the_wrong_kind_are_refused(value, dtype):
    with pytest.raises(InvalidArgumentError, match="x"):
        tensors.json_to_ndarray(value, dtype, "x")


def test_b64_strings_decode():
    array = tensors.json_to_ndarray([{"b64": "aGk="}, "text"], types_pb2.DT_STRING, "s")
    assert array.tolist() == [b"hi", b"text"]


def test_request_formats():
    images = meta_graph_pb2.TensorInfo(dtype=types_pb2.DT_FLOAT)
    row = tensors.parse_predict_body(b'{"instances": [[1, 2], [3, 4]]}')
    inputs, row_format = tensors.json_request_inputs(row, {"images": images})
    assert row_format and inputs["images"].shape == (2, 2)
    named = tensors.parse_predict_body(b'{"instances": [{"images": [1, 2]}]}')
    assert tensors.json_request_inputs(named, {"images": images})[0]["images"].shape == (1, 2)
    columnar = tensors.parse_predict_body(b'{"inputs": {"images": [[1, 2]]}}')
    inputs, row_format = tensors.json_request_inputs(columnar, {"images": images})
    assert not row_format and inputs["images"].shape == (1, 2)
    with pytest.raises(InvalidArgumentError, match="alias not found"):
        tensors.json_request_inputs(
            tensors.parse_predict_body(b'{"inputs": {"pixels": [1]}}'), {"images": images}
        )


@pytest.mark.parametrize(
    "body",
    [b"[1, 2]", b'{"instances": [], "inputs": []}', b'{"x": 1}', b"{", b'{"instances": 3}'],
)
def test_malformed_bodies_are_invalid_argument(body):
    with pytest.raises(InvalidArgumentError):
        request = tensors.parse_predict_body(body)
        tensors.json_request_inputs(request, {})


def test_response_json_shapes():
    probabilities = np.full((2, 3), 0.5, np.float32)
    classes = np.array([1, 2], np.int64)
    both = {"probabilities": probabilities, "classes": classes}
    rows = tensors.outputs_to_json(both, row_format=True)["predictions"]
    assert rows == [
        {"probabilities": [0.5] * 3, "classes": 1},
        {"probabilities": [0.5] * 3, "classes": 2},
    ]
    assert tensors.outputs_to_json({"classes": classes}, row_format=True) == {"predictions": [1, 2]}
    columns = tensors.outputs_to_json(both, row_format=False)["outputs"]
    assert columns["classes"] == [1, 2]
    assert tensors.outputs_to_json({"classes": classes}, row_format=False) == {"outputs": [1, 2]}
