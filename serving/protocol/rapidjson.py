"""rapidjson, as TF Serving's json_tensor.cc configures it, reproduced over Python values.

- Reading (`parse`): kParseIterativeFlag | kParseNanAndInfFlag | kParseStopWhenDoneFlag.
  Parsing stops after the root value (trailing data is ignored), `NaN`/`Inf`/`Infinity`
  are numbers, a number too big for a double is an error, there is no depth limit, and
  errors carry rapidjson's English message and byte offset. Objects keep duplicate keys
  (lookups find the first, as FindMember does); numbers keep the int / double distinction
  that rapidjson's IsInt/IsUint/IsInt64/IsUint64/IsDouble draw.
- Writing (`PrettyWriter`): rapidjson's PrettyWriter with 4-space indent and its
  kFormatSingleLineArray option, byte for byte; `Writer::Double`'s shortest form; and
  `debug_string`, json_tensor.cc's JsonValueToDebugString (cut after 256 bytes).

Python's json module reads the common document (it is C, and agrees with rapidjson on
plain JSON); whatever it reads differently or refuses is re-read by `_RapidJsonReader`, a
port of rapidjson's reader, which also produces the error messages.
"""

from __future__ import annotations

import decimal
import json
import math
import re
from typing import Any

import orjson

from serving.errors import InvalidArgumentError

MAX_DEBUG_STRING_BYTES = 256  # json_tensor.cc kMaxJsonDebugStringBytes
UINT64_MAX = 2**64 - 1
# Embedded-server limit: rapidjson's iterative parser has none, and TF Serving's own test
# (json_tensor_test DeeplyNestedWellFormed) nests 500,000 levels; past a million, a body
# of brackets would only cost memory (about 200 MB per million levels here).
MAX_NESTING = 1_000_000


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
# Documents Python's json module reads differently from rapidjson: huge exponents
# (rapidjson refuses the overflow), runs of 20+ digits (rapidjson keeps 17 significant
# digits, and reads a huge integer as a double), and \u escapes of surrogates (rapidjson
# refuses a lone one, Python keeps it). They go to the port instead.
_JSON_MODULE_UNSAFE = re.compile(rb"[eE][+]?0*[1-9][0-9]{2}|[0-9]{20}|\\u[dD][89abcdefABCDEF]")


def _pairs_hook(pairs: list[tuple[str, Any]]) -> dict:
    if len(pairs) < 2:
        return dict(pairs)
    result = dict(pairs)
    if len(result) == len(pairs):
        return result
    return JsonObject(pairs)


_DECODER = json.JSONDecoder(object_pairs_hook=_pairs_hook)


def parse(body: bytes, fast: bool = True) -> Any:
    """json_tensor.cc ParseJson: the document's root value; InvalidArgumentError with
    rapidjson's message and byte offset when it does not parse.

    Three readers, fastest first, each used only where it reads as rapidjson would:
    orjson (refuses NaN, Inf, trailing data and overflows, so those fall through, and
    cannot show duplicate keys, so `_orjson_is_exact` checks there are none); Python's
    json module with a hook that keeps duplicates; the port of rapidjson's reader.
    """
    if not body:
        raise InvalidArgumentError("JSON Parse error: The document is empty")
    if fast and b"Inf" not in body:
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
        else:
            if _orjson_is_exact(value, body):
                return value
        if not _JSON_MODULE_UNSAFE.search(body):
            try:
                text = body.decode("utf-8")
                start = len(text) - len(text.lstrip(" \n\r\t"))
                value, _end = _DECODER.raw_decode(text, start)
                return value
            except (ValueError, UnicodeDecodeError, RecursionError):
                pass
    return _RapidJsonReader(body).parse()


def _orjson_is_exact(document: Any, body: bytes) -> bool:
    """True when orjson's value of `body` is rapidjson's: no object in it had a duplicate
    key (orjson keeps the last, rapidjson's lookups find the first).

    Cheap for the usual request: the objects that matter are the document and its
    "inputs" object, and each of their keys must appear exactly once in the body. Rows
    that are objects (named instances), objects nested deeper, and {"b64": ...} values are
    left to the reader that sees duplicates."""
    if not isinstance(document, dict) or b'"b64"' in body:
        return False
    inputs = document.get("inputs")
    instances = document.get("instances")
    if isinstance(instances, list) and instances and isinstance(instances[0], dict):
        return False
    for key, value in document.items():
        if isinstance(value, dict) and key != "inputs":
            return False
        if not _appears_once(key, body):
            return False
    if isinstance(inputs, dict):
        for key, value in inputs.items():
            if isinstance(value, dict) or not _appears_once(key, body):
                return False
    return True


def _appears_once(key: str, body: bytes) -> bool:
    return body.count(b'"' + key.encode("utf-8", "surrogateescape") + b'"') == 1


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
            if char in (ord("{"), ord("[")) and len(stack) >= MAX_NESTING:
                raise _ParseError(
                    f"The document nests deeper than {MAX_NESTING} arrays and objects "
                    "(an embedded-server limit).",
                    self.pos,
                )
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


def members(value: dict) -> list[tuple[str, Any]]:
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
    for key, item in members(value):
        if not writer.raw(json_string(key)) or not _write_value(writer, item):
            return False
    return writer.end(False)


def debug_string(value: Any) -> str:
    """JsonValueToDebugString: single-line arrays, cut after 256 bytes."""
    writer = PrettyWriter(limit=MAX_DEBUG_STRING_BYTES)
    writer.single_line = True
    _write_value(writer, value)
    return writer.text()
