"""Drive a server with tritonclient, NVIDIA's Open Inference Protocol client (a client this
project did not write), and print what it saw as one JSON document.

Runs in tritonclient's own venv (`make tritonclient`): tests/serving/test_v2_tritonclient.py
starts it as a subprocess and asserts on the output. It imports only tritonclient, what
tritonclient brings (numpy, grpc) and the standard library.

Usage: python tritonclient_probe.py --http HOST:PORT --grpc HOST:PORT --inputs INPUTS.npz
INPUTS.npz holds `images` (FP32 [N,28,28] for `mnist`) and `dtype_<signature>` arrays, one
per identity signature of the `tfs_corpus` model (input and output alias `default`).
"""

from __future__ import annotations

import argparse
import base64
import json

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

MNIST_OUTPUTS = ("classes", "probabilities")


def describe(array: np.ndarray) -> dict:
    """An array as JSON: dtype, shape and values (BYTES base64-encoded; tritonclient gives
    the elements of a BYTES output read from JSON as str, UTF-8 here)."""
    if array.dtype.kind in "OS":
        elements = [v if isinstance(v, bytes) else v.encode() for v in array.ravel().tolist()]
        values = [base64.b64encode(v).decode() for v in elements]
        return {"dtype": "bytes", "shape": list(array.shape), "data": values}
    return {"dtype": array.dtype.str, "shape": list(array.shape), "data": array.ravel().tolist()}


def failure(call) -> dict:
    """The status and message of a call expected to fail (the call's result if it did not)."""
    try:
        return {"unexpected_success": str(call())}
    except InferenceServerException as error:
        return {"status": error.status(), "message": error.message()}


def metadata_of(message) -> dict:
    """A gRPC ModelMetadataResponse as the REST JSON reads (int64 shapes as numbers)."""

    def tensors(items):
        return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in items]

    return {
        "name": message.name,
        "versions": list(message.versions),
        "platform": message.platform,
        "inputs": tensors(message.inputs),
        "outputs": tensors(message.outputs),
    }


def input_of(module, name: str, array: np.ndarray, **kwargs):
    tensor = module.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
    tensor.set_data_from_numpy(array, **kwargs)
    return tensor


def probe_health(client, metadata) -> dict:
    return {
        "is_server_live": client.is_server_live(),
        "is_server_ready": client.is_server_ready(),
        "is_model_ready": client.is_model_ready("mnist"),
        "is_model_ready_by_label": client.is_model_ready("mnist", "stable"),
        "is_model_ready_unloaded_version": client.is_model_ready("mnist", "2"),
        "model_metadata": metadata("mnist", ""),
        "model_metadata_version_1": metadata("mnist", "1"),
    }


def probe_http(url: str, inputs) -> dict:
    client = httpclient.InferenceServerClient(url)
    result = probe_health(client, client.get_model_metadata)
    result["server_metadata"] = client.get_server_metadata()
    images = inputs["images"]
    for form, binary in (("json", False), ("binary", True)):
        outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in MNIST_OUTPUTS]
        tensor = input_of(httpclient, "images", images, binary_data=binary)
        response = client.infer("mnist", [tensor], outputs=outputs, request_id=f"http-{form}")
        body = response.get_response()
        result[f"infer_{form}"] = {
            "id": body.get("id"),
            "model_version": body["model_version"],
            **{name: describe(response.as_numpy(name)) for name in MNIST_OUTPUTS},
        }
    # No `outputs`: tritonclient asks for all of them as binary data (binary_data_output).
    response = client.infer("mnist", [input_of(httpclient, "images", images)])
    result["infer_all_outputs"] = {n: describe(response.as_numpy(n)) for n in MNIST_OUTPUTS}
    response = client.infer(
        "mnist",
        [input_of(httpclient, "images", images.reshape(len(images), 784))],
        parameters={"signature_name": "predict_images"},
    )
    result["infer_predict_images"] = describe(response.as_numpy("scores"))
    result["datatypes"] = {}
    for key, array in dtype_inputs(inputs).items():
        seen = {}
        for form, binary in (("json", False), ("binary", True)):
            response = client.infer(
                "tfs_corpus",
                [input_of(httpclient, "default", array, binary_data=binary)],
                outputs=[httpclient.InferRequestedOutput("default", binary_data=binary)],
                parameters={"signature_name": key},
            )
            seen[form] = describe(response.as_numpy("default"))
        result["datatypes"][key] = seen
    result["errors"] = errors(httpclient, client, images)
    return result


def probe_grpc(url: str, inputs) -> dict:
    client = grpcclient.InferenceServerClient(url)
    result = probe_health(client, lambda n, v: metadata_of(client.get_model_metadata(n, v)))
    server = client.get_server_metadata()
    result["server_metadata"] = {
        "name": server.name,
        "version": server.version,
        "extensions": list(server.extensions),
    }
    images = inputs["images"]
    # tritonclient's gRPC InferInput always sends raw_input_contents.
    response = client.infer(
        "mnist", [input_of(grpcclient, "images", images)], request_id="grpc-raw"
    )
    body = response.get_response()
    result["infer_raw"] = {
        "id": body.id,
        "model_version": body.model_version,
        **{name: describe(response.as_numpy(name)) for name in MNIST_OUTPUTS},
    }
    result["infer_typed"] = infer_typed(url, images)
    result["datatypes"] = {}
    for key, array in dtype_inputs(inputs).items():
        response = client.infer(
            "tfs_corpus",
            [input_of(grpcclient, "default", array)],
            parameters={"signature_name": key},
        )
        result["datatypes"][key] = {"raw": describe(response.as_numpy("default"))}
    result["errors"] = errors(grpcclient, client, images)
    return result


def infer_typed(url: str, images: np.ndarray) -> dict:
    """ModelInfer with typed contents, built with tritonclient's own generated messages and
    stub (its InferInput has no typed form)."""
    request = service_pb2.ModelInferRequest(model_name="mnist", id="grpc-typed")
    tensor = request.inputs.add(name="images", datatype="FP32", shape=list(images.shape))
    tensor.contents.fp32_contents.extend(images.ravel().tolist())
    with grpc.insecure_channel(url) as channel:
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    outputs = {output.name: output for output in response.outputs}
    classes = outputs["classes"]
    probabilities = outputs["probabilities"]
    return {
        "id": response.id,
        "raw_output_contents": len(response.raw_output_contents),
        "classes": describe(
            np.array(classes.contents.int64_contents, np.int64).reshape(list(classes.shape))
        ),
        "probabilities": describe(
            np.array(probabilities.contents.fp32_contents, np.float32).reshape(
                list(probabilities.shape)
            )
        ),
    }


def errors(module, client, images: np.ndarray) -> dict:
    """Client mistakes: what status and message tritonclient reports for each."""
    as_fp64 = images.astype(np.float64)
    return {
        "wrong_datatype": failure(
            lambda: client.infer("mnist", [input_of(module, "images", as_fp64)])
        ),
        "unknown_model": failure(
            lambda: client.infer("no_such_model", [input_of(module, "images", images)])
        ),
        "unknown_version": failure(
            lambda: client.infer("mnist", [input_of(module, "images", images)], model_version="9")
        ),
        "unknown_input": failure(
            lambda: client.infer("mnist", [input_of(module, "pixels", images)])
        ),
    }


def dtype_inputs(inputs) -> dict[str, np.ndarray]:
    return {
        name.removeprefix("dtype_"): inputs[name] for name in inputs if name.startswith("dtype_")
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http", required=True, help="HOST:PORT of the REST port")
    parser.add_argument("--grpc", required=True, help="HOST:PORT of the gRPC port")
    parser.add_argument("--inputs", required=True, help="the .npz of input arrays")
    args = parser.parse_args()
    with np.load(args.inputs) as archive:
        inputs = {name: archive[name] for name in archive.files}
    print(
        json.dumps({"http": probe_http(args.http, inputs), "grpc": probe_grpc(args.grpc, inputs)})
    )


if __name__ == "__main__":
    main()
