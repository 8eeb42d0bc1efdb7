"""TF Serving's REST JSON <-> numpy, as util/json_tensor.cc does it, text for text.

Requests are read with rapidjson's rules as json_tensor.cc configures them: parsing stops
after the root value (trailing data is ignored), `NaN`/`Inf`/`Infinity` are numbers, a
number too big for a double is an error, duplicate keys stay (lookups find the first), and
numbers keep rapidjson's int / uint / int64 / uint64 / double distinction, which decides
what a typed tensor accepts (`1.0` is not an int32; `2147483648` is not one either).

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
import binascii
import decimal
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from tensorflow.core.framework import types_pb2

from serving.errors import InvalidArgumentError, UnimplementedError
from serving.tensor_proto import dtype_name, numpy_dtype

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
UINT32_MAX = 2**32 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
UINT64_MAX = 2**64 - 1
MAX_DEBUG_STRING_BYTES = 256  # kMaxJsonDebugStringBytes
BASE64_KEY = "b64"
BYTES_SUFFIX = "_bytes"


class JsonObject(dict):
    """A JSON object: lookups find the first of duplicate keys (rapidjson FindMember);
    `members` keeps every (key, value) in document order (rapidjson member iteration)."""

    __slots__ = ("members",)

    def __init__(self, members: list[tuple[str, Any]]) -> None:
        super().__init__()
        for key, value in members:
            if key not in self:
                self[key] = value
        self.members = members


class _Inf(float):
    """A float read from an `Inf`/`Infinity` token (not from an overflowing number)."""


# -------------------------------------------------------------------------------------
# Parsing
# -------------------------------------------------------------------------------------

_WHITESPACE = b" \n\r\t"
# Fast path off for documents Python's json reads differently from rapidjson: huge
# exponents (rapidjson refuses an overflow), bare Inf (Python has only Infinity).
_FAST_PATH_UNSAFE = re.compile(rb"[eE][+]?0*[1-9][0-9]{2}|Inf(?!inity)|-?[0-9]{300}")


def _pairs_hook(pairs: list[tuple[str, Any]]) -> dict:
    if len(pairs) < 2:
        return dict(pairs)
    result = dict(pairs)
    if len(result) == len(pairs):
        return result
    return JsonObject(pairs)


_DECODER = json.JSONDecoder(object_pairs_hook=_pairs_hook)


def parse_json(body: bytes) -> Any:
    """json_tensor.cc ParseJson: the document's root value; InvalidArgumentError with
    rapidjson's message and byte offset when it does not parse."""
    if not body:
        raise InvalidArgumentError("JSON Parse error: The document is empty")
    if not _FAST_PATH_UNSAFE.search(body):
        try:
            text = body.decode("utf-8")
            start = len(text) - len(text.lstrip(" \n\r\t"))
            value, _end = _DECODER.raw_decode(text, start)
            return value
        except (ValueError, UnicodeDecodeError, RecursionError):
            pass
    return _RapidJsonReader(body).parse()


def parse_document(body: bytes) -> dict:
    """ParseJson plus its check that the root is an object."""
    document = parse_json(body)
    if not isinstance(document, dict):
        raise InvalidArgumentError(f"JSON Value: {debug_string(document)} Is not object")
    return document


class _ParseError(Exception):
    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


class _RapidJsonReader:
    """rapidjson's Reader with kParseIterativeFlag | kParseNanAndInfFlag |
    kParseStopWhenDoneFlag, over bytes (offsets are byte offsets, as rapidjson's)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def parse(self) -> Any:
        try:
            self._skip()
            if self.pos >= len(self.data):
                raise _ParseError("The document is empty.", self.pos)
            return self._value_iterative()
        except _ParseError as error:
            raise InvalidArgumentError(
                f"JSON Parse error: {error.message} at offset: {error.offset}"
            ) from None

    def _peek(self) -> int:
        return self.data[self.pos] if self.pos < len(self.data) else 0

    def _skip(self) -> None:
        data, pos = self.data, self.pos
        while pos < len(data) and data[pos] in _WHITESPACE:
            pos += 1
        self.pos = pos

    def _consume(self, char: int) -> bool:
        if self._peek() == char:
            self.pos += 1
            return True
        return False

    def _value_iterative(self) -> Any:
        """An explicit stack instead of recursion: rapidjson's iterative parser has no depth
        limit either."""
        stack: list[tuple[list | None, list | None]] = []  # (array items | None, object pairs)
        root: Any = None
        while True:
            self._skip()
            char = self._peek()
            if char == ord("{"):
                self.pos += 1
                self._skip()
                if self._consume(ord("}")):
                    value: Any = {}
                else:
                    stack.append((None, []))
                    self._member_name(stack[-1][1])
                    continue
            elif char == ord("["):
                self.pos += 1
                self._skip()
                if self._consume(ord("]")):
                    value = []
                else:
                    stack.append(([], None))
                    continue
            else:
                value = self._scalar()
            # A value is complete: attach it to its container, closing containers as needed.
            while True:
                if not stack:
                    return value
                items, pairs = stack[-1]
                if items is not None:
                    items.append(value)
                    self._skip()
                    if self._consume(ord(",")):
                        break
                    if self._consume(ord("]")):
                        stack.pop()
                        value = items
                        continue
                    raise _ParseError("Missing a comma or ']' after an array element.", self.pos)
                pairs[-1] = (pairs[-1][0], value)
                self._skip()
                if self._consume(ord(",")):
                    self._skip()
                    self._member_name(pairs)
                    break
                if self._consume(ord("}")):
                    stack.pop()
                    value = _pairs_hook(pairs)
                    continue
                raise _ParseError("Missing a comma or '}' after an object member.", self.pos)
        return root  # pragma: no cover - the loop returns

    def _member_name(self, pairs: list) -> None:
        if self._peek() != ord('"'):
            raise _ParseError("Missing a name for object member.", self.pos)
        name = self._string()
        self._skip()
        if not self._consume(ord(":")):
            raise _ParseError("Missing a colon after a name of object member.", self.pos)
        pairs.append((name, None))

    def _scalar(self) -> Any:
        char = self._peek()
        if char == ord('"'):
            return self._string()
        if char == ord("n"):
            return self._literal(b"null", None)
        if char == ord("t"):
            return self._literal(b"true", True)
        if char == ord("f"):
            return self._literal(b"false", False)
        return self._number()

    def _literal(self, word: bytes, value: Any) -> Any:
        self.pos += 1
        for char in word[1:]:
            if not self._consume(char):
                raise _ParseError("Invalid value.", self.pos)
        return value

    def _string(self) -> str:
        data = self.data
        self.pos += 1  # opening quote
        out = bytearray()
        escapes = {
            ord('"'): b'"', ord("\\"): b"\\", ord("/"): b"/", ord("b"): b"\b",
            ord("f"): b"\f", ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t",
        }  # fmt: skip
        while True:
            if self.pos >= len(data):
                raise _ParseError("Missing a closing quotation mark in string.", self.pos)
            char = data[self.pos]
            if char == ord("\\"):
                escape_offset = self.pos
                self.pos += 1
                code = self._peek()
                if code in escapes:
                    out += escapes[code]
                    self.pos += 1
                elif code == ord("u"):
                    self.pos += 1
                    unit = self._hex4(escape_offset)
                    if 0xDC00 <= unit <= 0xDFFF:
                        raise _ParseError("The surrogate pair in string is invalid.", escape_offset)
                    if 0xD800 <= unit <= 0xDBFF:
                        if not (self._consume(ord("\\")) and self._consume(ord("u"))):
                            raise _ParseError(
                                "The surrogate pair in string is invalid.", escape_offset
                            )
                        low = self._hex4(escape_offset)
                        if not 0xDC00 <= low <= 0xDFFF:
                            raise _ParseError(
                                "The surrogate pair in string is invalid.", escape_offset
                            )
                        unit = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
                    out += chr(unit).encode("utf-8", "surrogatepass")
                else:
                    raise _ParseError("Invalid escape character in string.", escape_offset)
            elif char == ord('"'):
                self.pos += 1
                return out.decode("utf-8", "surrogateescape")
            elif char < 0x20:
                if char == 0:
                    raise _ParseError("Missing a closing quotation mark in string.", self.pos)
                raise _ParseError("Invalid encoding in string.", self.pos)
            else:
                out.append(char)
                self.pos += 1

    def _hex4(self, escape_offset: int) -> int:
        digits = self.data[self.pos : self.pos + 4]
        value = 0
        for char in digits:
            if chr(char) not in "0123456789abcdefABCDEF":
                raise _ParseError("Incorrect hex digit after \\u escape in string.", escape_offset)
            value = value * 16 + int(chr(char), 16)
            self.pos += 1
        if len(digits) < 4:
            raise _ParseError("Incorrect hex digit after \\u escape in string.", escape_offset)
        return value

    def _number(self) -> Any:
        """Reader::ParseNumber (normal precision), including NaN and Inf[inity]."""
        data = self.data
        start = self.pos
        minus = self._consume(ord("-"))
        char = self._peek()
        digits_start = self.pos
        if char == ord("0"):
            self.pos += 1
        elif ord("1") <= char <= ord("9"):
            while ord("0") <= self._peek() <= ord("9"):
                self.pos += 1
        elif char in (ord("I"), ord("N")):
            value = None
            if self._consume(ord("N")):
                if self._consume(ord("a")) and self._consume(ord("N")):
                    value = math.nan
            elif self._consume(ord("I")) and self._consume(ord("n")) and self._consume(ord("f")):
                value = _Inf(-math.inf if minus else math.inf)
                if self._peek() == ord("i") and not all(self._consume(ord(c)) for c in "inity"):
                    raise _ParseError("Invalid value.", self.pos)
            if value is None:
                raise _ParseError("Invalid value.", self.pos)
            return value
        else:
            raise _ParseError("Invalid value.", self.pos)
        integer_digits = data[digits_start : self.pos]
        fraction = b""
        is_double = False
        if self._consume(ord(".")):
            fraction_start = self.pos
            if not ord("0") <= self._peek() <= ord("9"):
                raise _ParseError("Miss fraction part in number.", self.pos)
            while ord("0") <= self._peek() <= ord("9"):
                self.pos += 1
            fraction = data[fraction_start : self.pos]
            is_double = True
        exponent = 0
        if self._consume(ord("e")) or self._consume(ord("E")):
            is_double = True
            exp_minus = False
            if self._consume(ord("+")):
                pass
            elif self._consume(ord("-")):
                exp_minus = True
            if not ord("0") <= self._peek() <= ord("9"):
                raise _ParseError("Miss exponent in number.", self.pos)
            exp_start = self.pos
            while ord("0") <= self._peek() <= ord("9"):
                self.pos += 1
            exponent = int(data[exp_start : self.pos])
            if not exp_minus and exponent > 308 + len(fraction):
                raise _ParseError("Number too big to be stored in double.", start)
            if exp_minus:
                exponent = -exponent
        integer = int(integer_digits)
        if not is_double:
            if (minus and integer <= 2**63) or (not minus and integer <= UINT64_MAX):
                return -integer if minus else integer
            value = _big_integer_to_double(integer_digits, minus)
        else:
            value = _strtod_normal_precision(integer_digits + fraction, exponent - len(fraction))
        if value > 1.7976931348623157e308:
            raise _ParseError("Number too big to be stored in double.", start)
        return -value if minus else value


_POW10 = [float(f"1e{n}") for n in range(309)]


def _big_integer_to_double(digits: bytes, minus: bool) -> float:
    """An integer beyond (u)int64, as ParseNumber reads it: exact while it fits in 64 bits,
    then every further digit accumulated in a double."""
    limit, last = (0x0CCCCCCCCCCCCCCC, 8) if minus else (0x1999999999999999, 5)
    accumulated = 0
    index = 0
    while index < len(digits):
        digit = digits[index] - 48
        if accumulated >= limit and (accumulated != limit or digit > last):
            break
        accumulated = accumulated * 10 + digit
        index += 1
    value = float(accumulated)
    for char in digits[index:]:
        value = value * 10.0 + (char - 48)
    return value


def _strtod_normal_precision(digits: bytes, exponent: int) -> float:
    """rapidjson without kParseFullPrecisionFlag: up to 17 significant digits accumulated in
    a double, then one multiplication or division by a power of ten."""
    significand = 0.0
    significant = 0
    dropped = 0
    for char in digits:
        if significant < 17:
            significand = significand * 10.0 + (char - 48)
            if significand > 0:
                significant += 1
        else:
            dropped += 1
    power = exponent + dropped
    if power < -308:
        significand = _fast_path(significand, -308)
        return _fast_path(significand, power + 308)
    return _fast_path(significand, power)


def _fast_path(significand: float, power: int) -> float:
    if power < -308:
        return 0.0
    if power >= 0:
        return significand * _POW10[power] if power <= 308 else math.inf
    return significand / _POW10[-power]


# -------------------------------------------------------------------------------------
# rapidjson values: types, debug strings, the PrettyWriter
# -------------------------------------------------------------------------------------


def json_type_string(value: Any) -> str:
    """json_tensor.cc JsonTypeString."""
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def _is_int(value: Any) -> bool:
    return type(value) is int


def _members(value: dict) -> list[tuple[str, Any]]:
    return value.members if isinstance(value, JsonObject) else list(value.items())


def shortest_double(value: float) -> str:
    """rapidjson Writer::Double: shortest round-trip digits, laid out by its Prettify."""
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    sign = "-" if value < 0 else ""
    digits_tuple, exponent = decimal.Decimal(repr(abs(value))).normalize().as_tuple()[1:]
    digits = "".join(map(str, digits_tuple))
    length = len(digits)
    kk = length + exponent  # 10^(kk-1) <= value < 10^kk
    if exponent >= 0 and kk <= 21:
        text = digits + "0" * exponent + ".0"
    elif 0 < kk <= 21:
        text = digits[:kk] + "." + digits[kk:]
    elif -6 < kk <= 0:
        text = "0." + "0" * -kk + digits
    elif length == 1:
        text = digits + "e" + str(kk - 1)
    else:
        text = digits[0] + "." + digits[1:] + "e" + str(kk - 1)
    return sign + text


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


_ESCAPES = {i: f"\\u{i:04X}" for i in range(0x20)}
_ESCAPES.update({0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r"})
_ESCAPES.update({ord('"'): '\\"', ord("\\"): "\\\\"})


def json_string(text: str) -> str:
    """rapidjson Writer::String: quotes, and escapes only '"', '\\' and control characters."""
    return '"' + text.translate(_ESCAPES) + '"'


class PrettyWriter:
    """rapidjson's PrettyWriter (4-space indent), including kFormatSingleLineArray, so the
    bytes written are tensorflow_model_server's."""

    def __init__(self, limit: int | None = None) -> None:
        self.parts: list[str] = []
        self.size = 0
        self.limit = limit  # JsonWriterWithLimit: refuse tokens once this many bytes are out
        self.single_line = False
        self._stack: list[list] = []  # [in_array, value_count]
        self.stopped = False

    def _put(self, text: str) -> None:
        self.parts.append(text)
        self.size += len(text.encode("utf-8", "surrogateescape"))

    def _in_limit(self) -> bool:
        if self.stopped or (self.limit is not None and self.size >= self.limit):
            self.stopped = True
            return False
        return True

    def _prefix(self) -> None:
        if not self._stack:
            return
        level = self._stack[-1]
        in_array, count = level
        if in_array:
            if count > 0:
                self._put(", " if self.single_line else ",")
            if not self.single_line:
                self._put("\n" + "    " * len(self._stack))
        else:
            if count > 0:
                self._put(",\n" if count % 2 == 0 else ": ")
            else:
                self._put("\n")
            if count % 2 == 0:
                self._put("    " * len(self._stack))
        level[1] = count + 1

    def raw(self, text: str) -> bool:
        """A scalar token already formatted (numbers, literals, quoted strings)."""
        if not self._in_limit():
            return False
        self._prefix()
        self._put(text)
        return True

    def double(self, value: float) -> bool:
        """Writer::Double: refuses NaN and infinities (after writing its prefix)."""
        if not self._in_limit():
            return False
        self._prefix()
        if math.isnan(value) or math.isinf(value):
            self.stopped = True
            return False
        self._put(shortest_double(value))
        return True

    def start(self, is_array: bool) -> bool:
        if not self._in_limit():
            return False
        self._prefix()
        self._stack.append([is_array, 0])
        self._put("[" if is_array else "{")
        return True

    def end(self, is_array: bool) -> bool:
        if not self._in_limit():
            return False
        _in_array, count = self._stack.pop()
        if count and (not is_array or not self.single_line):
            self._put("\n" + "    " * len(self._stack))
        self._put("]" if is_array else "}")
        return True

    def text(self) -> str:
        return "".join(self.parts)


def _write_value(writer: PrettyWriter, value: Any) -> bool:
    """rapidjson Value::Accept into `writer` (stops where the writer refuses)."""
    if value is None:
        return writer.raw("null")
    if value is True or value is False:
        return writer.raw("true" if value else "false")
    if isinstance(value, str):
        return writer.raw(json_string(value))
    if isinstance(value, float):
        return writer.double(value)
    if isinstance(value, int):
        return writer.raw(str(value))
    if isinstance(value, list):
        if not writer.start(True):
            return False
        for item in value:
            if not _write_value(writer, item):
                return False
        return writer.end(True)
    if not writer.start(False):
        return False
    for key, item in _members(value):
        if not writer.raw(json_string(key)) or not _write_value(writer, item):
            return False
    return writer.end(False)


def debug_string(value: Any) -> str:
    """JsonValueToDebugString: single-line arrays, cut after 256 bytes."""
    writer = PrettyWriter(limit=MAX_DEBUG_STRING_BYTES)
    writer.single_line = True
    _write_value(writer, value)
    return writer.text()


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
        and len(_members(value)) == 1
        and isinstance(value.get(BASE64_KEY), str)
    )


def _b64decode(text: str) -> bytes:
    """absl::Base64Unescape: standard alphabet; padding optional, but all or nothing."""
    data = text.encode("utf-8", "surrogateescape")
    stripped = data.rstrip(b"=")
    padding = len(data) - len(stripped)
    if padding and (len(data) % 4 or padding > 2):
        raise InvalidArgumentError("Unable to base64 decode")
    if len(stripped) % 4 == 1:
        raise InvalidArgumentError("Unable to base64 decode")
    try:
        return base64.b64decode(stripped + b"=" * (-len(stripped) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgumentError("Unable to base64 decode") from None


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
    if not (_is_int(value) and bounds[0] <= value <= bounds[1]):
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


def _has_special_tokens(value: Any) -> bool:
    """Booleans and nulls read as numbers by numpy: only the exact path may see them."""
    # Cheap for the usual nested lists of numbers: look at the leaves of the first row.
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif item is None or isinstance(item, bool):
            return True
    return False


def tensor_from_json(value: Any, dtype: int) -> np.ndarray:
    """One tensor from its JSON value (the "inputs" form): shape from the first elements,
    every element checked for its level and type."""
    if (
        dtype not in (types_pb2.DT_STRING, types_pb2.DT_BOOL, types_pb2.DT_HALF)
        and isinstance(value, list)
        and not _has_special_tokens(value)
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
    instances: list, input_infos: Mapping[str, Any]
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
        if dtype not in (
            types_pb2.DT_STRING,
            types_pb2.DT_BOOL,
            types_pb2.DT_HALF,
        ) and not _has_special_tokens(instances):
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
            for key, item in _members(element):
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
    document: dict, input_infos: Mapping[str, Any], signature_name: str = ""
) -> tuple[dict[str, np.ndarray], bool]:
    """FillPredictRequestFromJson after the signature is known: (inputs, row_format)."""
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
        return tensors_from_instances(instances, input_infos), True
    if has_inputs:
        value = document["inputs"]
        names = sorted(input_infos)
        if not isinstance(value, dict) or _is_b64_object(value):
            if len(names) > 1:
                raise InvalidArgumentError(
                    "inputs is a plain value/list, but expecting an object as multiple input "
                    "tensors required as per tensorinfo_map"
                )
            return {names[0]: tensor_from_json(value, input_infos[names[0]].dtype)}, False
        inputs = {}
        for name in names:
            if name not in value:
                raise InvalidArgumentError(f"Missing named input: {name} in 'inputs' object.")
            inputs[name] = tensor_from_json(value[name], input_infos[name].dtype)
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
    values = array if row is None else array[row]

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


def outputs_to_json(outputs: dict[str, np.ndarray], row_format: bool) -> str:
    """MakeJsonFromTensors: the response body, as tensorflow_model_server writes it.

    Outputs are written in alias order (TF Serving follows its protobuf map's order, which
    is not specified; sorted is the stable choice).
    """
    if not outputs:
        raise InvalidArgumentError("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
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
    for name, content in _members(value):
        feature = feature_pb2.Feature()
        for item in content if isinstance(content, list) else [content]:
            _add_feature_value(item, name, feature)
        example.features.feature[name].CopyFrom(feature)
    return example.SerializeToString()


def parse_examples_body(body: bytes, method: str) -> tuple[list[bytes], str]:
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
