"""KServe's own v2 clients (InferenceRESTClient, InferenceGRPCClient) against a server.

Run by `make bench-peers` in KServe's environment (.cache/kserve), pointed at the embedded
model server: one more client the project did not write. Prints one JSON line with each
client's predicted classes for the same images, or the error it met.

    .cache/kserve/bin/python benchmarks/kserve_clients.py REST_URL GRPC_TARGET MODEL
"""

from __future__ import annotations

import asyncio
import json
import sys

import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, RESTConfig
from kserve.protocol.infer_type import InferInput, InferRequest


def _request(model: str, images: np.ndarray) -> InferRequest:
    tensor = InferInput(name="images", shape=list(images.shape), datatype="FP32")
    tensor.set_data_from_numpy(images, binary_data=False)
    return InferRequest(model_name=model, infer_inputs=[tensor], request_id="bench-peers")


def _classes(response) -> list[int]:
    for output in response.outputs:
        if output.name == "classes":
            return [int(value) for value in output.as_numpy().reshape(-1)]
    raise KeyError("no 'classes' output")


async def main(rest_url: str, grpc_target: str, model: str) -> dict:
    images = np.random.default_rng(0).random((3, 28, 28), dtype=np.float32)
    result: dict = {}
    rest = InferenceRESTClient(RESTConfig(protocol="v2", retries=1, timeout=30))
    try:
        response = await rest.infer(rest_url, _request(model, images), model_name=model)
        result["rest"] = _classes(response)
    except Exception as error:  # reported, not raised: the benchmark prints it
        result["rest"] = f"{type(error).__name__}: {error}"
    finally:
        await rest.close()
    # KServe's default retries (3): it turns retries=1 into maxAttempts 1, which grpc refuses.
    grpc_client = InferenceGRPCClient(grpc_target, timeout=30)
    try:
        response = await grpc_client.infer(_request(model, images))
        result["grpc"] = _classes(response)
    except Exception as error:  # reported, not raised
        result["grpc"] = f"{type(error).__name__}: {error}"
    finally:
        await grpc_client.close()
    return result


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(*sys.argv[1:4]))))
