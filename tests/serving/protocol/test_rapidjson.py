"""The rapidjson port: Python's json fast path and the port agree, errors read as rapidjson's,
and the writer lays out bytes as rapidjson's PrettyWriter does."""

from __future__ import annotations

import json
import math
import random

import pytest

from serving.errors import InvalidArgumentError
from serving.protocol import rapidjson


def _random_document(rng: random.Random, depth: int = 0):
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return rng.randint(-(2**40), 2**40)
    if kind == 1:
        return rng.choice([0.5, -2.25, 1e-7, 3.0e21, 123.456, -0.0, 7.0])
    if kind == 2:
        return rng.choice(["", "a", "é ü", 'q"uote', "back\\slash", "tab\t", "\u2028"])
    if kind == 3:
        return rng.choice([True, False, None])
    if kind in (4, 5):
        return rng.randint(0, 2**64 - 1) if kind == 4 else -rng.randint(0, 2**63)
    if kind in (6, 7):
        return [_random_document(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {f"k{i}": _random_document(rng, depth + 1) for i in range(rng.randrange(4))}


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and str(a) == str(b))
    if type(a) is not type(b) and not (isinstance(a, dict) and isinstance(b, dict)):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return a == b


def test_the_fast_path_and_the_port_read_documents_alike():
    rng = random.Random(1)
    for _ in range(300):
        document = {"instances": _random_document(rng)}
        body = json.dumps(document, ensure_ascii=rng.random() < 0.5).encode()
        fast = rapidjson.parse(body)
        exact = rapidjson.parse(body, fast=False)
        assert _same(fast, exact), body


@pytest.mark.parametrize(
    "body",
    [
        b'{"instances": [1], "instances": [2]}',
        b'{"inputs": {"x": [1], "x": [2]}, "signature_name": "s"}',
        b'{"instances": [{"x": 1, "x": 2}]}',
        b'{"inputs": [{"b64": "aA==", "b64": "aQ=="}]}',
        b'{"context": {"f": [1], "f": [2]}, "examples": []}',
        b'{"signature_name": "a", "signature_name": 1, "instances": [1]}',
        b'[{"a": 1, "a": 2}]',
    ],
)
def test_duplicate_keys_read_as_rapidjson_reads_them_on_every_path(body):
    fast, exact = rapidjson.parse(body), rapidjson.parse(body, fast=False)
    assert _same(fast, exact)
    assert rapidjson.debug_string(fast) == rapidjson.debug_string(exact)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "JSON Parse error: The document is empty"),
        (b"   ", "JSON Parse error: The document is empty. at offset: 3"),
        (b"{", "JSON Parse error: Missing a name for object member. at offset: 1"),
        (b'{"a" 1}', "JSON Parse error: Missing a colon after a name of object member. "
         "at offset: 5"),
        (b'{"a": 1 "b"}', "JSON Parse error: Missing a comma or '}' after an object member. "
         "at offset: 8"),
        (b"[1 2]", "JSON Parse error: Missing a comma or ']' after an array element. at offset: 3"),
        (b"[1,]", "JSON Parse error: Invalid value. at offset: 3"),
        (b"nul", "JSON Parse error: Invalid value. at offset: 3"),
        (b"[1.]", "JSON Parse error: Miss fraction part in number. at offset: 3"),
        (b"[1e]", "JSON Parse error: Miss exponent in number. at offset: 3"),
        (b"[0, 1e400]", "JSON Parse error: Number too big to be stored in double. at offset: 4"),
        (b'["\\x"]', "JSON Parse error: Invalid escape character in string. at offset: 2"),
        (b'["\\u12G4"]', "JSON Parse error: Incorrect hex digit after \\u escape in string. "
         "at offset: 2"),
        (b'["\\ud800"]', "JSON Parse error: The surrogate pair in string is invalid. at offset: 2"),
        (b'["abc', "JSON Parse error: Missing a closing quotation mark in string. at offset: 5"),
        (b'["a\x01"]', "JSON Parse error: Invalid encoding in string. at offset: 3"),
    ],
)  # fmt: skip
def test_parse_errors_are_rapidjsons(body, message):
    with pytest.raises(InvalidArgumentError) as refused:
        rapidjson.parse(body)
    assert refused.value.message == message


def test_what_rapidjson_accepts_beyond_plain_json():
    assert rapidjson.parse(b'{"a": 1} trailing {garbage') == {"a": 1}  # kParseStopWhenDoneFlag
    values = rapidjson.parse(b"[NaN, Inf, -Inf, Infinity, -Infinity]")
    assert math.isnan(values[0]) and values[1:] == [math.inf, -math.inf, math.inf, -math.inf]
    duplicated = rapidjson.parse(b'{"x": 1, "x": 2}')
    assert duplicated["x"] == 1  # FindMember finds the first
    assert rapidjson.members(duplicated) == [("x", 1), ("x", 2)]  # iteration sees both
    deep = b"[" * 100_000 + b"1" + b"]" * 100_000  # kParseIterativeFlag: no depth limit
    value = rapidjson.parse(deep)
    for _ in range(100_000):
        value = value[0]
    assert value == 1


def test_nesting_is_bounded_beyond_what_tf_serving_is_tested_with():
    rapidjson.parse(b"[" * 500_000 + b"]" * 500_000)  # json_tensor_test DeeplyNestedWellFormed
    too_deep = b"[" * (rapidjson.MAX_NESTING + 1)
    with pytest.raises(InvalidArgumentError, match="nests deeper than 1000000"):
        rapidjson.parse(too_deep)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.5, "0.5"), (1e16, "10000000000000000.0"), (1e22, "1e22"), (1.5e-7, "1.5e-7"),
        (0.001234, "0.001234"), (-0.0, "-0.0"), (123.0, "123.0"), (1.2345e30, "1.2345e30"),
    ],
)  # fmt: skip
def test_doubles_are_written_as_rapidjson_writes_them(value, text):
    assert rapidjson.shortest_double(value) == text


def test_the_pretty_writer_lays_out_single_line_arrays_as_rapidjson():
    writer = rapidjson.PrettyWriter()
    writer.start(False)
    writer.raw('"predictions"')
    writer.start(True)
    for row in ([1, 2], [3, 4]):
        writer.single_line = True
        writer.start(True)
        for item in row:
            writer.raw(str(item))
        writer.end(True)
        writer.single_line = False
    writer.end(True)
    writer.end(False)
    assert writer.text() == '{\n    "predictions": [[1, 2], [3, 4]\n    ]\n}'


def test_debug_strings_are_cut_after_256_bytes_and_stop_at_nan():
    long = rapidjson.debug_string(list(range(200)))
    assert long.startswith("[0, 1, 2") and 256 <= len(long) < 270 and not long.endswith("]")
    assert rapidjson.debug_string([1.0, math.nan, 2.0]) == "[1.0, "
    assert rapidjson.debug_string({"b64": "x"}) == '{\n    "b64": "x"\n}'
    assert rapidjson.debug_string("a\u0001") == '"a\\u0001"'
