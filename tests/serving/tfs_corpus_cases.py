"""Load, validate and check the TF Serving conformance corpus (`tests/serving/tfs_corpus/`).

Each YAML file holds the cases taken from one TF Serving source file; the schema is in
`tests/serving/tfs_corpus/README.md`. Loading fails with a clear error on an unknown key, a
missing key or a duplicate id, so a typo never turns a case into a silent no-op.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import yaml

CORPUS_DIR = Path(__file__).parent / "tfs_corpus"
TESTDATA_DIR = Path(__file__).parent / "testdata"

FILE_KEYS = {"source", "cases"}
REQUIRED_CASE_KEYS = {"id", "test", "model", "protocol", "request", "expect"}
OPTIONAL_CASE_KEYS = {"source", "signature", "derivation"}
REST_REQUEST_KEYS = {"method", "path", "body", "body_parts", "headers"}
GRPC_REQUEST_KEYS = {"rpc", "message"}
GRPC_RPCS = {"Predict", "Classify", "Regress", "GetModelMetadata", "GetModelStatus"}
# Exactly one body expectation per REST case.
REST_BODY_KEYS = {
    "body_text",  # the exact response text (json_tensor.cc's writer output)
    "body_json_tokens",  # JSON with numbers compared as their text; object order free
    "body_json",  # parsed JSON
    "body_json_file",  # parsed JSON equal to a vendored testdata file
    "error",  # {"error": <exactly this>}
    "error_prefix",  # {"error": <starts with this>} (only where the rest is unpinned)
    "error_one_of",  # {"error": <one of these>} (where the source leaves a choice)
    "body_empty",  # no body at all
}
# gRPC: a message expectation for errors, a response expectation for OK.
GRPC_EXPECT_KEYS = {"message", "message_prefix", "response", "response_json_file"}


class CorpusError(ValueError):
    """A case file that does not follow the corpus schema."""


@dataclasses.dataclass(frozen=True)
class Case:
    """One corpus case: a request and what TF Serving answers to it."""

    id: str
    source: str
    test: str
    model: str
    signature: str | None
    protocol: str
    request: dict[str, Any]
    expect: dict[str, Any]
    derivation: str | None
    file: str


def _check_keys(where: str, mapping: Any, allowed: set[str], required: set[str]) -> None:
    if not isinstance(mapping, dict):
        raise CorpusError(f"{where}: expected a mapping, got {type(mapping).__name__}")
    unknown = set(mapping) - allowed
    if unknown:
        raise CorpusError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    missing = required - set(mapping)
    if missing:
        raise CorpusError(f"{where}: missing key(s) {sorted(missing)}")


def _validate_rest(where: str, request: dict, expect: dict) -> None:
    _check_keys(f"{where}.request", request, REST_REQUEST_KEYS, {"method", "path"})
    if "body" in request and "body_parts" in request:
        raise CorpusError(f"{where}.request: give body or body_parts, not both")
    for part in request.get("body_parts", []):
        if not (isinstance(part, list) and len(part) == 2 and isinstance(part[1], int)):
            raise CorpusError(f"{where}.request.body_parts: each part is [text, count]")
    _check_keys(f"{where}.expect", expect, REST_BODY_KEYS | {"status"}, {"status"})
    bodies = set(expect) & REST_BODY_KEYS
    if len(bodies) != 1:
        raise CorpusError(f"{where}.expect: give exactly one of {sorted(REST_BODY_KEYS)}")
    if "body_json_file" in expect and not (TESTDATA_DIR / expect["body_json_file"]).is_file():
        raise CorpusError(f"{where}.expect.body_json_file: no such testdata file")


def _validate_grpc(where: str, request: dict, expect: dict) -> None:
    _check_keys(f"{where}.request", request, GRPC_REQUEST_KEYS, {"rpc", "message"})
    if request["rpc"] not in GRPC_RPCS:
        raise CorpusError(f"{where}.request.rpc: {request['rpc']!r} not in {sorted(GRPC_RPCS)}")
    _check_keys(f"{where}.expect", expect, GRPC_EXPECT_KEYS | {"code"}, {"code"})
    given = set(expect) & GRPC_EXPECT_KEYS
    if len(given) != 1:
        raise CorpusError(f"{where}.expect: give exactly one of {sorted(GRPC_EXPECT_KEYS)}")
    ok = expect["code"] == "OK"
    if ok != bool(given & {"response", "response_json_file"}):
        raise CorpusError(f"{where}.expect: OK takes a response, an error code a message")


def load_file(path: Path) -> list[Case]:
    """The validated cases of one corpus file."""
    data = yaml.safe_load(path.read_text())
    _check_keys(path.name, data, FILE_KEYS, FILE_KEYS)
    cases = []
    for index, raw in enumerate(data["cases"]):
        where = f"{path.name}: case {raw.get('id', index) if isinstance(raw, dict) else index}"
        _check_keys(where, raw, REQUIRED_CASE_KEYS | OPTIONAL_CASE_KEYS, REQUIRED_CASE_KEYS)
        if raw["protocol"] == "rest":
            _validate_rest(where, raw["request"], raw["expect"])
        elif raw["protocol"] == "grpc":
            _validate_grpc(where, raw["request"], raw["expect"])
        else:
            raise CorpusError(f"{where}.protocol: {raw['protocol']!r} is not rest or grpc")
        cases.append(
            Case(
                id=raw["id"],
                source=raw.get("source", data["source"]),
                test=raw["test"],
                model=raw["model"],
                signature=raw.get("signature"),
                protocol=raw["protocol"],
                request=raw["request"],
                expect=raw["expect"],
                derivation=raw.get("derivation"),
                file=path.name,
            )
        )
    return cases


def load_corpus(directory: Path = CORPUS_DIR) -> list[Case]:
    """Every case of every `*.yaml` file in `directory`; ids must be unique."""
    cases: list[Case] = []
    seen: dict[str, str] = {}
    for path in sorted(directory.glob("*.yaml")):
        for case in load_file(path):
            if case.id in seen:
                raise CorpusError(
                    f"{path.name}: duplicate id {case.id!r} (also in {seen[case.id]})"
                )
            seen[case.id] = path.name
            cases.append(case)
    return cases


def request_body(request: dict) -> bytes | None:
    """The exact bytes a REST case sends."""
    if "body_parts" in request:
        return "".join(text * count for text, count in request["body_parts"]).encode()
    if "body" in request:
        return request["body"].encode()
    return None


# --- JSON comparisons -------------------------------------------------------------------


class _Token(str):
    """A JSON number (or NaN/Infinity) kept as the text the server wrote."""


def parse_json_tokens(text: str) -> Any:
    """Parse JSON keeping every number as its source text, as TF Serving's own
    `CompareJsonAllValuesAsStrings` does (rapidjson kParseNumbersAsStringsFlag)."""
    return json.loads(text, parse_float=_Token, parse_int=_Token, parse_constant=_Token)


def _nan_safe(value: Any) -> Any:
    """Replace NaN by a marker so parsed JSON with NaN compares equal to itself."""
    if isinstance(value, float) and math.isnan(value):
        return "<NaN>"
    if isinstance(value, list):
        return [_nan_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: _nan_safe(v) for k, v in value.items()}
    return value


def parse_json(text: str) -> Any:
    """Parse JSON (NaN and Infinity allowed, as in TF Serving's REST API) for comparison."""
    return _nan_safe(json.loads(text))


def strip_whitespace_outside_strings(text: str) -> str:
    """`text` without the whitespace between JSON tokens (used only to explain a mismatch)."""
    out, in_string, escaped = [], False, False
    for char in text:
        if in_string:
            out.append(char)
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
            out.append(char)
        elif not char.isspace():
            out.append(char)
    return "".join(out)
