"""TensorProto <-> numpy agrees with TensorFlow's own; decoding is bounded before it allocates."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from serving import tensor_proto as tensors
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


def test_extra_typed_values_are_ignored_as_tensorflow_does():
    proto = tensors.make_tensor_proto(np.zeros(2, np.float32))
    proto.float_val.append(1.0)
    np.testing.assert_array_equal(tensors.make_ndarray(proto, "x"), [0.0, 0.0])
    # TensorFlow's C++ decoder agrees (Tensor::FromProto copies the first n values).
    parsed = tf.io.parse_tensor(proto.SerializeToString(), tf.float32)
    np.testing.assert_array_equal(parsed.numpy(), [0.0, 0.0])


def test_narrow_integers_take_int_val_with_a_c_cast():
    proto = tensors.make_tensor_proto(np.zeros(2, np.uint8))
    proto.ClearField("int_val")
    proto.int_val[:] = [300, -1]
    np.testing.assert_array_equal(tensors.make_ndarray(proto), np.array([44, 255], np.uint8))
    parsed = tf.io.parse_tensor(proto.SerializeToString(), tf.uint8)
    np.testing.assert_array_equal(parsed.numpy(), [44, 255])


def _declared(shape: list[int], dtype=tf.float32):
    """A TensorProto that declares `shape` and carries no values (TF fills zeros)."""
    proto = tf.make_tensor_proto(0.0, dtype=dtype, shape=[1])
    proto.ClearField("float_val")
    proto.tensor_shape.Clear()
    for size in shape:
        proto.tensor_shape.dim.add().size = size
    return proto


def test_decoded_size_is_known_before_anything_is_allocated():
    # 35 bytes on the wire, 1 GB once TensorFlow's fill rule has run.
    proto = _declared([16000, 16000])
    assert len(proto.SerializeToString()) < 40
    size, per_element = tensors.decoded_size(proto)
    assert (size, per_element) == (16000 * 16000 * 4, True)
    with pytest.raises(
        InvalidArgumentError, match=r"limit of 1024 bytes \(--max_request_tensor_bytes\)"
    ):
        tensors.check_decoded_size({"images": proto}, 1024)


def test_tensor_content_counts_as_cheap_and_the_limit_covers_every_input():
    content = tf.make_tensor_proto(np.zeros((4, 4), np.float32))
    assert tensors.decoded_size(content) == (64, False)
    small = _declared([8])
    assert tensors.check_decoded_size({"a": content, "b": small}, 96) == 32
    with pytest.raises(InvalidArgumentError):
        tensors.check_decoded_size({"a": content, "b": small}, 95)
    assert tensors.check_decoded_size({"a": _declared([10**6])}, 0) == 4 * 10**6  # 0: no limit
