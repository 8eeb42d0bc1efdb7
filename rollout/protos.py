"""TF Serving's config and model-service messages, without TensorFlow.

`make rollout-protos` compiles upstream's .proto files under rollout/protos/ into one
descriptor set; the classes are built from it in a private descriptor pool, so they keep
upstream's full names (wire- and text-format-identical) and can live beside the official
`tensorflow_serving` classes in one process (the tests) without a duplicate-symbol clash.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from rollout.errors import ModelConfigError

DESCRIPTOR_SET = Path(__file__).resolve().parent / "_proto" / "tensorflow_serving_subset.binpb"
GET_MODEL_STATUS_METHOD = "/tensorflow.serving.ModelService/GetModelStatus"
RELOAD_CONFIG_METHOD = "/tensorflow.serving.ModelService/HandleReloadConfigRequest"


@dataclass(frozen=True)
class Messages:
    """The message classes the controller uses."""

    pool: descriptor_pool.DescriptorPool
    ModelServerConfig: Any
    ModelConfig: Any
    GetModelStatusRequest: Any
    GetModelStatusResponse: Any
    ReloadConfigRequest: Any
    ReloadConfigResponse: Any

    def state_name(self, state: int) -> str:
        """Name of a ModelVersionStatus.State value, e.g. 30 -> "AVAILABLE"."""
        enum = self.pool.FindEnumTypeByName("tensorflow.serving.ModelVersionStatus.State")
        value = enum.values_by_number.get(state)
        return value.name if value else str(state)


@functools.cache
def load_messages(path: Path = DESCRIPTOR_SET) -> Messages:
    """Build the message classes from the compiled descriptor set (once per process)."""
    if not path.exists():
        raise ModelConfigError(f"{path} is missing; build it with `make rollout-protos`")
    pool = descriptor_pool.DescriptorPool()
    # --include_imports orders dependencies first, so each Add finds its imports.
    for file_proto in descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes()).file:
        pool.Add(file_proto)

    def message(name: str) -> Any:
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))

    return Messages(
        pool=pool,
        ModelServerConfig=message("tensorflow.serving.ModelServerConfig"),
        ModelConfig=message("tensorflow.serving.ModelConfig"),
        GetModelStatusRequest=message("tensorflow.serving.GetModelStatusRequest"),
        GetModelStatusResponse=message("tensorflow.serving.GetModelStatusResponse"),
        ReloadConfigRequest=message("tensorflow.serving.ReloadConfigRequest"),
        ReloadConfigResponse=message("tensorflow.serving.ReloadConfigResponse"),
    )
