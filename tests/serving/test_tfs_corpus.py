"""Conformance corpus: TF Serving's own tests and docs, replayed as requests.

Every case in `tests/serving/tfs_corpus/*.yaml` names the TF Serving source (test, doc or
code) its expectation comes from; see that folder's README. One server per backend serves
TF Serving's testdata models (vendored in `tests/serving/testdata/`) and the corpus's own
`tfs_corpus` model (built here, `tfs_corpus_model.py`), with the same model config file:
the embedded server always, the real `tensorflow_model_server` when `TFSERVING_BIN` names
one (as `test_conformance.py`). Both run with default flags: TF Serving's behaviour is what
its defaults give.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from google.protobuf import json_format, text_format

from tests.fixtures.processes import ManagedProcess
from tests.fixtures.serving import launch_model_server, launch_tensorflow_model_server
from tests.serving.tfs_corpus_cases import (
    TESTDATA_DIR,
    Case,
    load_corpus,
    parse_json,
    parse_json_tokens,
    request_body,
    strip_whitespace_outside_strings,
)
from tests.serving.tfs_corpus_model import build_corpus_model

pytestmark = pytest.mark.slow

BACKENDS = ["embedded", "tensorflow_model_server"]
CASES = load_corpus()
RPC_TIMEOUT = 30.0

# name -> (base path relative to testdata, model config extras). Names follow the TF Serving
# tests that serve them: "default" (tensorflow_model_server_test.py), "half_plus_two"
# (README quickstart), "saved_model_half_plus_two_2_versions" with only version 123 and the
# label Version_Label (http_rest_api_handler_test.cc), "saved_model_half_plus_three"
# (api_rest.md), "saved_model_counter" (predict_util_test.cc).
TESTDATA_MODELS = {
    "default": ("saved_model_half_plus_two_cpu", ""),
    "half_plus_two": ("saved_model_half_plus_two_cpu", ""),
    "saved_model_half_plus_two_2_versions": (
        "saved_model_half_plus_two_2_versions",
        "model_version_policy { specific { versions: 123 } }\n"
        'version_labels { key: "Version_Label" value: 123 }\n',
    ),
    "saved_model_half_plus_three": ("saved_model_half_plus_three", ""),
    "half_plus_two_tf2": ("saved_model_half_plus_two_tf2_cpu", ""),
    "saved_model_counter": ("saved_model_counter", ""),
}
CORPUS_MODEL = "tfs_corpus"


@dataclasses.dataclass
class Backend:
    """A running server: where to reach it, and the process to stop (None if not ours)."""

    name: str
    rest_url: str
    channel: grpc.Channel
    process: ManagedProcess | None = None


@pytest.fixture(scope="session")
def tfs_corpus_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """models.config for every model the corpus names; `tfs_corpus` is built here."""
    root = tmp_path_factory.mktemp("tfs-corpus")
    build_corpus_model(root / CORPUS_MODEL / "1")
    entries = [(CORPUS_MODEL, root / CORPUS_MODEL, "")]
    entries += [
        (name, TESTDATA_DIR / path, extra) for name, (path, extra) in TESTDATA_MODELS.items()
    ]
    text = "model_config_list {\n"
    for name, base_path, extra in entries:
        text += (
            "  config {\n"
            f'    name: "{name}"\n'
            f'    base_path: "{base_path.resolve()}"\n'
            '    model_platform: "tensorflow"\n'
            + "".join(f"    {line}\n" for line in extra.splitlines())
            + "  }\n"
        )
    config = root / "models.config"
    config.write_text(text + "}\n")
    return config


@pytest.fixture(scope="session", params=BACKENDS)
def tfs_backend(request, tfs_corpus_config: Path, tmp_path_factory) -> Iterator[Backend]:
    """A running server of each backend on the corpus's model config."""
    log_dir = tmp_path_factory.mktemp(f"tfs-corpus-{request.param}")
    if request.param == "embedded":
        server = launch_model_server(log_dir, config_file=tfs_corpus_config)
        channel = grpc.insecure_channel(server.grpc_target)
        backend = Backend("embedded", server.rest_url, channel, server.process)
    else:
        binary = os.environ.get("TFSERVING_BIN")
        if not binary:
            pytest.skip("TFSERVING_BIN not set: no tensorflow_model_server binary to compare")
        server = launch_tensorflow_model_server(binary, log_dir, tfs_corpus_config)
        channel = grpc.insecure_channel(server.grpc_target)
        backend = Backend("tensorflow_model_server", server.rest_url, channel, server.process)
    yield backend
    backend.channel.close()
    if backend.process is not None:
        backend.process.stop()


# --- REST -------------------------------------------------------------------------------


def _describe_text_mismatch(got: str, want: str) -> str:
    if strip_whitespace_outside_strings(got) == strip_whitespace_outside_strings(want):
        return "differs only in whitespace outside strings"
    try:
        if parse_json_tokens(got) == parse_json_tokens(want):
            return "same tokens (numbers as text), different layout or member order"
        if parse_json(got) == parse_json(want):
            return "same parsed JSON, different number text and layout"
    except ValueError:
        pass
    return "different content"


def _parsed(text: str, parser):
    try:
        return parser(text)
    except ValueError:
        pytest.fail(f"body is not JSON: {text[:800]!r}")


def _error_message(response: httpx.Response) -> str:
    try:
        body = json.loads(response.text)
    except ValueError:
        pytest.fail(f"HTTP {response.status_code}, body is not JSON: {response.text[:500]!r}")
    if not (isinstance(body, dict) and set(body) == {"error"} and isinstance(body["error"], str)):
        pytest.fail(f"HTTP {response.status_code}, body is not {{'error': str}}: {body!r}")
    return body["error"]


def run_rest(backend: Backend, case: Case) -> None:
    request, expect = case.request, case.expect
    response = httpx.request(
        request["method"],
        backend.rest_url + request["path"],
        content=request_body(request),
        headers=request.get("headers"),
        timeout=RPC_TIMEOUT,
    )
    got = response.text
    assert response.status_code == expect["status"], (
        f"HTTP {response.status_code} (want {expect['status']}): {got[:800]!r}"
    )
    if "body_text" in expect:
        want = expect["body_text"]
        assert got == want, f"{_describe_text_mismatch(got, want)}\n got: {got!r}\nwant: {want!r}"
    elif "body_json_tokens" in expect:
        want = expect["body_json_tokens"]
        assert _parsed(got, parse_json_tokens) == parse_json_tokens(want), (
            f"\n got: {got!r}\nwant: {want!r}"
        )
    elif "body_json" in expect:
        assert _parsed(got, parse_json) == parse_json(expect["body_json"]), f"\n got: {got!r}"
    elif "body_json_file" in expect:
        want = (TESTDATA_DIR / expect["body_json_file"]).read_text()
        assert _parsed(got, parse_json) == parse_json(want), f"\n got: {got[:2000]!r}"
    elif "body_empty" in expect:
        assert got == "", f"want an empty body, got {got[:800]!r}"
    else:
        message = _error_message(response)
        if "error" in expect:
            assert message == expect["error"], f"\n got: {message!r}\nwant: {expect['error']!r}"
        elif "error_prefix" in expect:
            assert message.startswith(expect["error_prefix"]), f"\n got: {message!r}"
        else:
            assert message in expect["error_one_of"], f"\n got: {message!r}"


# --- gRPC -------------------------------------------------------------------------------


def _grpc_method(backend: Backend, rpc: str):
    """(callable, request class, response class) of one TF Serving RPC."""
    from tensorflow_serving.apis import (
        classification_pb2,
        get_model_metadata_pb2,
        get_model_status_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_service_pb2_grpc,
        regression_pb2,
    )

    prediction = prediction_service_pb2_grpc.PredictionServiceStub(backend.channel)
    models = model_service_pb2_grpc.ModelServiceStub(backend.channel)
    return {
        "Predict": (prediction.Predict, predict_pb2.PredictRequest, predict_pb2.PredictResponse),
        "Classify": (
            prediction.Classify,
            classification_pb2.ClassificationRequest,
            classification_pb2.ClassificationResponse,
        ),
        "Regress": (
            prediction.Regress,
            regression_pb2.RegressionRequest,
            regression_pb2.RegressionResponse,
        ),
        "GetModelMetadata": (
            prediction.GetModelMetadata,
            get_model_metadata_pb2.GetModelMetadataRequest,
            get_model_metadata_pb2.GetModelMetadataResponse,
        ),
        "GetModelStatus": (
            models.GetModelStatus,
            get_model_status_pb2.GetModelStatusRequest,
            get_model_status_pb2.GetModelStatusResponse,
        ),
    }[rpc]


def _metadata_as_rest_json(response) -> dict:
    """GetModelMetadataResponse as TF Serving's REST API writes it (http_rest_api_util.cc
    ToJsonString: model_spec, and the unpacked SignatureDefMap under metadata)."""
    from tensorflow_serving.apis import get_model_metadata_pb2

    options = {"preserving_proto_field_name": True, "always_print_fields_with_no_presence": True}
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_map)
    return {
        "model_spec": json_format.MessageToDict(response.model_spec, **options),
        "metadata": {"signature_def": json_format.MessageToDict(signature_map, **options)},
    }


def run_grpc(backend: Backend, case: Case) -> None:
    call, request_class, response_class = _grpc_method(backend, case.request["rpc"])
    request = text_format.Parse(case.request["message"], request_class())
    expect = case.expect
    try:
        response = call(request, timeout=RPC_TIMEOUT)
    except grpc.RpcError as error:
        assert error.code().name == expect["code"], f"{error.code().name}: {error.details()!r}"
        if "message" in expect:
            assert error.details() == expect["message"], (
                f"\n got: {error.details()!r}\nwant: {expect['message']!r}"
            )
        else:
            assert error.details().startswith(expect["message_prefix"]), repr(error.details())
        return
    assert expect["code"] == "OK", (
        f"OK, want {expect['code']}: {text_format.MessageToString(response)}"
    )
    if "response_json_file" in expect:
        want = json.loads((TESTDATA_DIR / expect["response_json_file"]).read_text())
        assert _metadata_as_rest_json(response) == want
    else:
        want = text_format.Parse(expect["response"], response_class())
        assert response == want, (
            f"\n got: {text_format.MessageToString(response, as_one_line=True)}"
            f"\nwant: {text_format.MessageToString(want, as_one_line=True)}"
        )


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_tfs_case(tfs_backend: Backend, case: Case) -> None:
    """One request from TF Serving's tests, and TF Serving's answer to it."""
    if case.protocol == "rest":
        run_rest(tfs_backend, case)
    else:
        run_grpc(tfs_backend, case)
