"""json_tensor.cc in Python: the numpy fast path decides exactly as the element-by-element
port does, and responses are written byte for byte as TF Serving writes them.

(Request-level cases with TF Serving's expected texts live in the conformance corpus,
tests/serving/tfs_corpus/; these check the codec's own invariants.)"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from serving.errors import ServingError
from serving.protocol import rapidjson, tfs_json

NUMERIC = [
    types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE, types_pb2.DT_INT32, types_pb2.DT_INT16,
    types_pb2.DT_INT8, types_pb2.DT_UINT8, types_pb2.DT_INT64, types_pb2.DT_UINT32,
    types_pb2.DT_UINT64,
]  # fmt: skip
EDGES = [0, 1, -1, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**32 - 1, 2**32, 2**63 - 1,
         2**63, 2**64 - 1, 300, -300, 0.5, -1.0, 1e30, 3.4e38, 1e-45,
         True, False, None]  # fmt: skip


def _info(dtype: int) -> meta_graph_pb2.TensorInfo:
    return meta_graph_pb2.TensorInfo(dtype=dtype)


def _decode(document: dict, infos: dict, fast: bool):
    try:
        inputs, row = tfs_json.json_request_inputs(document, infos, fast=fast)
    except ServingError as error:
        return ("error", type(error).__name__, error.message)
    return ("ok", row, {k: (v.dtype.str, v.shape, v.tolist()) for k, v in inputs.items()})


def _random_value(rng: random.Random, shape: list[int]):
    if not shape:
        return rng.choice([*EDGES, rng.randint(-100, 100), rng.random()])
    return [_random_value(rng, shape[1:]) for _ in range(shape[0])]


@pytest.mark.parametrize("dtype", NUMERIC, ids=lambda d: types_pb2.DataType.Name(d))
def test_the_fast_path_decides_as_the_exact_port(dtype):
    """Random rectangular and ragged values, in both formats, through JSON text: the numpy
    path either agrees with json_tensor.cc's element-by-element rules or steps aside."""
    rng = random.Random(dtype)
    infos = {"x": _info(dtype)}
    for _ in range(150):
        shape = [rng.randint(1, 3) for _ in range(rng.randint(0, 3))]
        value = _random_value(rng, shape)
        if shape and rng.random() < 0.2 and isinstance(value, list) and value:
            value[-1] = [value[-1], value[-1]]  # ragged
        if rng.random() < 0.5:
            value = [rng.choice(EDGES) for _ in range(4)]  # one kind of value per tensor
        for key in ("inputs", "instances"):
            if key == "instances" and not isinstance(value, list):
                continue
            body = json.dumps({key: value}).encode()
            document = rapidjson.parse(body)
            fast = tfs_json.literals_absent(body)
            assert _decode(document, infos, fast) == _decode(document, infos, False), value


def _tensor(document: str, dtype: int):
    body = document.encode()
    fast = tfs_json.literals_absent(body)
    inputs, _ = tfs_json.json_request_inputs(rapidjson.parse(body), {"x": _info(dtype)}, fast=fast)
    return inputs["x"]


def test_values_are_type_and_range_checked_for_their_dtype():
    assert _tensor('{"inputs": [2147483647]}', types_pb2.DT_INT32).tolist() == [2147483647]
    for document, dtype in [
        ('{"inputs": [2147483648]}', types_pb2.DT_INT32),
        ('{"inputs": [1, true]}', types_pb2.DT_FLOAT),
        ('{"inputs": [1.0]}', types_pb2.DT_INT64),
        ('{"inputs": [-1]}', types_pb2.DT_UINT32),
        ('{"inputs": ["1"]}', types_pb2.DT_DOUBLE),
    ]:
        with pytest.raises(ServingError, match="is not of expected type"):
            _tensor(document, dtype)
    # int8/16 and uint8 take any int32 and narrow it, as TensorFlow's cast does.
    assert _tensor('{"inputs": [300, -1]}', types_pb2.DT_UINT8).tolist() == [44, 255]
    with pytest.raises(ServingError, match="Conversion of JSON Value: 1 to type: half"):
        _tensor('{"inputs": [1]}', types_pb2.DT_HALF)


def test_float_outputs_are_written_with_write_decimal():
    values = np.array([[9e6, 999999.0, 0.5], [0.0003, 3e-5, 555557.5]], np.float32)
    assert tfs_json.outputs_to_json({"x": values}, row_format=True) == (
        '{\n    "predictions": [[9e+06, 999999.0, 0.5], [0.0003, 3e-05, 555557.5]\n    ]\n}'
    )
    assert tfs_json.write_decimal(float(np.float32(2.55)), True) == "2.55"
    assert tfs_json.write_decimal(float(np.float32(1435774380)), True) == "1.43577434e+09"
    assert tfs_json.write_decimal(0.1 + 0.2, False) == "0.30000000000000004"
    assert tfs_json.write_decimal(float("-inf"), True) == "-Infinity"


def test_several_outputs_are_one_object_per_row_and_bytes_aliases_are_b64():
    outputs = {
        "classes": np.array([3, 4], np.int64),
        "raw_bytes": np.array([b"hi", b"yo"], dtype=object),
    }
    text = tfs_json.outputs_to_json(outputs, row_format=True)
    assert json.loads(text) == {
        "predictions": [
            {"classes": 3, "raw_bytes": {"b64": "aGk="}},
            {"classes": 4, "raw_bytes": {"b64": "eW8="}},
        ]
    }
    with pytest.raises(ServingError, match="has no shape information"):
        tfs_json.outputs_to_json({"scalar": np.array(1.0, np.float32)}, row_format=True)
    assert json.loads(tfs_json.outputs_to_json({"s": np.array(2.5, np.float32)}, False)) == {
        "outputs": 2.5
    }


def _random_output(rng: np.random.Generator, batch: int) -> np.ndarray:
    shape = (batch, *rng.integers(0, 3, size=rng.integers(0, 3)))
    kind = rng.integers(5)
    if kind == 0:
        values = rng.choice([0.5, 1e-5, 9e6, 2.55, 1435774380.0, -0.0, np.nan, np.inf, 7.0], shape)
        return values.astype(np.float32)
    if kind == 1:
        return rng.choice([0.1 + 0.2, 1e22, -3.25, np.nan, -np.inf], shape).astype(np.float64)
    if kind == 2:
        return rng.integers(-(2**62), 2**62, shape, dtype=np.int64)
    if kind == 3:
        return rng.integers(0, 255, shape).astype(np.uint8)
    return rng.integers(0, 2, shape).astype(bool)


def test_the_direct_writer_writes_the_pretty_writers_bytes():
    rng = np.random.default_rng(3)
    for _ in range(300):
        batch = int(rng.integers(0, 4))
        outputs = {f"o{i}": _random_output(rng, batch) for i in range(int(rng.integers(1, 4)))}
        if rng.random() < 0.2:
            outputs = {"scalar": np.array(rng.random(), np.float32)}
        for row_format in (True, False):
            try:
                slow = tfs_json.outputs_to_json(outputs, row_format, fast=False)
            except ServingError as error:
                with pytest.raises(type(error)):
                    tfs_json.outputs_to_json(outputs, row_format)
                continue
            assert tfs_json.outputs_to_json(outputs, row_format) == slow, (outputs, row_format)
