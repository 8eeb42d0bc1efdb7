"""The model server's ModelService over gRPC: version states and config reloads.

TF Serving and the embedded server both answer it on the gRPC port. The controller asks
whether a version is AVAILABLE before any traffic is sent to it, and sends the config it
wrote with HandleReloadConfigRequest so a change applies at once rather than at the next
config poll.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc

from rollout.errors import ServingUnavailableError
from rollout.protos import GET_MODEL_STATUS_METHOD, RELOAD_CONFIG_METHOD, load_messages


@dataclass(frozen=True)
class VersionStatus:
    """One version's state as the model server reports it."""

    version: int
    state: str  # START, LOADING, AVAILABLE, UNLOADING, END
    error: str  # empty when the load succeeded


class ServingClient:
    """A ModelService client on one channel."""

    def __init__(self, target: str, timeout_seconds: float) -> None:
        self.target = target
        self.timeout = timeout_seconds
        self.messages = load_messages()
        self._channel = grpc.insecure_channel(target)
        self._status = self._channel.unary_unary(
            GET_MODEL_STATUS_METHOD,
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=self.messages.GetModelStatusResponse.FromString,
        )
        self._reload = self._channel.unary_unary(
            RELOAD_CONFIG_METHOD,
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=self.messages.ReloadConfigResponse.FromString,
        )

    def version_states(self, model: str) -> dict[int, VersionStatus]:
        """Every version the server knows of `model` (empty when it knows none)."""
        request = self.messages.GetModelStatusRequest()
        request.model_spec.name = model
        try:
            response = self._status(request, timeout=self.timeout)
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return {}
            raise ServingUnavailableError(
                f"GetModelStatus({model}) at {self.target}: {error.code().name} {error.details()}"
            ) from None
        states = {}
        for item in response.model_version_status:
            error = item.status.error_message if item.status.error_code else ""
            states[item.version] = VersionStatus(
                item.version, self.messages.state_name(item.state), error
            )
        return states

    def reload(self, config: Any) -> None:
        """Apply `config` now (HandleReloadConfigRequest). ServingUnavailableError when the
        server refuses or cannot be reached; the config poll applies the file later."""
        request = self.messages.ReloadConfigRequest()
        request.config.CopyFrom(config)
        try:
            response = self._reload(request, timeout=self.timeout)
        except grpc.RpcError as error:
            raise ServingUnavailableError(
                f"HandleReloadConfigRequest at {self.target}: {error.code().name} {error.details()}"
            ) from None
        if response.status.error_code:
            raise ServingUnavailableError(
                f"the model server refused the config: {response.status.error_message}"
            )

    def close(self) -> None:
        self._channel.close()
