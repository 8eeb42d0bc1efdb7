"""The Open Inference Protocol's gRPC messages (package `inference`), without generated code.

`make serving-protos` compiles KServe's grpc_predict_v2.proto (vendored unchanged under
serving/protos/kserve/) into a descriptor set; the classes are built from it here, in a
private descriptor pool. Private, because KServe's and Triton's Python clients register
their own `inference.*` messages in the default pool: a process that holds one of them
beside the server (a test, a tool) would otherwise fail with a duplicate symbol.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

DESCRIPTOR_SET = Path(__file__).resolve().parents[1] / "_proto" / "grpc_predict_v2.binpb"
PACKAGE = "inference"
SERVICE_NAME = f"{PACKAGE}.GRPCInferenceService"


@functools.cache
def service_descriptor():
    """The ServiceDescriptor of inference.GRPCInferenceService."""
    return _pool().FindServiceByName(SERVICE_NAME)


@functools.cache
def message_class(short_name: str) -> Any:
    """The class of `inference.<short_name>` (nested names with dots, e.g.
    "ModelInferResponse.InferOutputTensor")."""
    descriptor = _pool().FindMessageTypeByName(f"{PACKAGE}.{short_name}")
    return message_factory.GetMessageClass(descriptor)


@functools.cache
def _pool() -> descriptor_pool.DescriptorPool:
    if not DESCRIPTOR_SET.exists():
        # An OSError: `python -m serving` reports it as a start-up failure (exit status 1).
        raise FileNotFoundError(
            f"{DESCRIPTOR_SET} is missing: run `make serving-protos` (or `make install`)"
        )
    files = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file_proto in files.file:
        pool.Add(file_proto)
    return pool
