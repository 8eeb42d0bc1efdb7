"""numpy arrays <-> TensorProto, without TensorFlow."""

from __future__ import annotations

from typing import Any

import numpy as np

from gateway.errors import UpstreamError

# tensorflow.DataType numbers (types.proto) for the dtypes the gateway meets.
DT_FLOAT, DT_DOUBLE, DT_INT32, DT_INT64 = 1, 2, 3, 9
_NUMPY_DTYPES = {
    DT_FLOAT: np.float32,
    DT_DOUBLE: np.float64,
    DT_INT32: np.int32,
    DT_INT64: np.int64,
}
_REPEATED_FIELDS = {
    DT_FLOAT: "float_val",
    DT_DOUBLE: "double_val",
    DT_INT32: "int_val",
    DT_INT64: "int64_val",
}


def fill_float_tensor(tensor: Any, array: np.ndarray) -> None:
    """Write a float32 array into `tensor` as raw `tensor_content` bytes.

    One bytes copy instead of a repeated float field: far cheaper to build and to parse.
    """
    array = np.ascontiguousarray(array, dtype="<f4")
    tensor.dtype = DT_FLOAT
    for size in array.shape:
        tensor.tensor_shape.dim.add().size = size
    tensor.tensor_content = array.tobytes()


def to_numpy(tensor: Any) -> np.ndarray:
    """Read a TensorProto (tensor_content or the typed repeated field) into numpy."""
    dtype = _NUMPY_DTYPES.get(tensor.dtype)
    if dtype is None:
        raise UpstreamError(f"the model returned an unsupported tensor dtype {tensor.dtype}")
    shape = tuple(dim.size for dim in tensor.tensor_shape.dim)
    if tensor.tensor_content:
        flat = np.frombuffer(tensor.tensor_content, dtype=np.dtype(dtype).newbyteorder("<"))
    else:
        flat = np.asarray(getattr(tensor, _REPEATED_FIELDS[tensor.dtype]), dtype=dtype)
    count = int(np.prod(shape)) if shape else 1
    if flat.size == 1 and count > 1:  # TF Serving's compact form: one value fills the tensor
        flat = np.full(count, flat[0], dtype=dtype)
    if flat.size != count:
        raise UpstreamError(f"the model returned {flat.size} values for shape {shape}")
    return flat.reshape(shape)
