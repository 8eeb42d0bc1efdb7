"""TF Serving's messages and method paths, without TensorFlow.

`make protos` compiles the subset under `gateway/protos/` with grpcio-tools into one
descriptor set, `gateway/_proto/tensorflow_serving_subset.binpb`. The message classes are
built from it in a private descriptor pool, not the process-wide default one: the messages
keep upstream's full names (`tensorflow.TensorProto`, ...) so they are wire-identical, and a
private pool lets them live beside the official `tensorflow_serving.apis` classes in one
process (tests, tools) without a "duplicate symbol" clash.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

DESCRIPTOR_SET = Path(__file__).resolve().parent / "_proto" / "tensorflow_serving_subset.binpb"

PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"
GET_MODEL_METADATA_METHOD = "/tensorflow.serving.PredictionService/GetModelMetadata"
GET_MODEL_STATUS_METHOD = "/tensorflow.serving.ModelService/GetModelStatus"


@dataclass(frozen=True)
class Messages:
    """The message classes the gateway uses, by their short names."""

    pool: descriptor_pool.DescriptorPool
    ModelSpec: Any
    TensorProto: Any
    TensorShapeProto: Any
    PredictRequest: Any
    PredictResponse: Any
    GetModelStatusRequest: Any
    GetModelStatusResponse: Any
    ModelVersionStatus: Any
    GetModelMetadataRequest: Any
    GetModelMetadataResponse: Any
    SignatureDefMap: Any
    DataType: Any

    def state_name(self, state: int) -> str:
        """Name of a ModelVersionStatus.State value, e.g. 30 -> "AVAILABLE"."""
        enum = self.pool.FindEnumTypeByName("tensorflow.serving.ModelVersionStatus.State")
        value = enum.values_by_number.get(state)
        return value.name if value else str(state)

    def dtype_name(self, dtype: int) -> str:
        """Name of a tensorflow.DataType value, e.g. 1 -> "DT_FLOAT"."""
        value = self.pool.FindEnumTypeByName("tensorflow.DataType").values_by_number.get(dtype)
        return value.name if value else str(dtype)


class ProtosNotBuiltError(RuntimeError):
    """The compiled descriptor set is missing: run `make protos`."""


@functools.cache
def load_messages(path: Path = DESCRIPTOR_SET) -> Messages:
    """Build the message classes from the compiled descriptor set (once per process)."""
    if not path.exists():
        raise ProtosNotBuiltError(f"{path} is missing; build it with `make protos`")
    file_set = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    # --include_imports orders dependencies first, so each Add finds its imports.
    for file_proto in file_set.file:
        pool.Add(file_proto)

    def message(name: str) -> Any:
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))

    return Messages(
        pool=pool,
        ModelSpec=message("tensorflow.serving.ModelSpec"),
        TensorProto=message("tensorflow.TensorProto"),
        TensorShapeProto=message("tensorflow.TensorShapeProto"),
        PredictRequest=message("tensorflow.serving.PredictRequest"),
        PredictResponse=message("tensorflow.serving.PredictResponse"),
        GetModelStatusRequest=message("tensorflow.serving.GetModelStatusRequest"),
        GetModelStatusResponse=message("tensorflow.serving.GetModelStatusResponse"),
        ModelVersionStatus=message("tensorflow.serving.ModelVersionStatus"),
        GetModelMetadataRequest=message("tensorflow.serving.GetModelMetadataRequest"),
        GetModelMetadataResponse=message("tensorflow.serving.GetModelMetadataResponse"),
        SignatureDefMap=message("tensorflow.serving.SignatureDefMap"),
        DataType=pool.FindEnumTypeByName("tensorflow.DataType"),
    )
