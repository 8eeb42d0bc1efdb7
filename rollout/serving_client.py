"""The model server's ModelService over gRPC: version states and config reloads.

TF Serving and the embedded server both answer it on the gRPC port. The controller asks
whether a version is AVAILABLE before any traffic is sent to it, and sends the config it
wrote with HandleReloadConfigRequest so a change applies at once rather than at the next
config poll.

A `dns:///` target (Kubernetes' headless Service) names every model-server pod: each call
goes to every address it resolves to, because the gateways spread traffic over all of
them. A version counts as AVAILABLE only when every pod has it.
"""

from __future__ import annotations

import socket
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


# Worst first: a version is only as far along as its slowest pod.
STATE_ORDER = ("END", "UNLOADING", "START", "LOADING", "AVAILABLE")


def resolve_addresses(target: str) -> list[str]:
    """Every host:port a target names: a `dns:///host:port` target resolved now (one per
    pod behind a headless Service), any other target as it is."""
    if not target.startswith("dns:///"):
        return [target]
    host, _, port = target.removeprefix("dns:///").rpartition(":")
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except (OSError, ValueError) as error:
        raise ServingUnavailableError(f"cannot resolve {target}: {error}") from None
    ips = sorted({info[4][0] for info in infos})
    return [f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}" for ip in ips]


class ServingClient:
    """ModelService calls to every model server a target names."""

    def __init__(self, target: str, timeout_seconds: float) -> None:
        self.target = target
        self.timeout = timeout_seconds
        self.messages = load_messages()
        self._channels: dict[str, tuple[grpc.Channel, Any, Any]] = {}

    def _stubs(self) -> list[tuple[str, Any, Any]]:
        addresses = resolve_addresses(self.target)
        for gone in set(self._channels) - set(addresses):
            self._channels.pop(gone)[0].close()
        for address in addresses:
            if address not in self._channels:
                channel = grpc.insecure_channel(address)
                status = channel.unary_unary(
                    GET_MODEL_STATUS_METHOD,
                    request_serializer=lambda message: message.SerializeToString(),
                    response_deserializer=self.messages.GetModelStatusResponse.FromString,
                )
                reload = channel.unary_unary(
                    RELOAD_CONFIG_METHOD,
                    request_serializer=lambda message: message.SerializeToString(),
                    response_deserializer=self.messages.ReloadConfigResponse.FromString,
                )
                self._channels[address] = (channel, status, reload)
        return [(address, *self._channels[address][1:]) for address in addresses]

    def version_states(self, model: str) -> dict[int, VersionStatus]:
        """Every version of `model` the servers know, each at its least advanced state
        across them (a server that does not list it has not started it), with the first
        load error any reported. Empty when a server does not know the model."""
        reports: list[dict[int, tuple[str, str]]] = []
        request = self.messages.GetModelStatusRequest()
        request.model_spec.name = model
        for address, status_stub, _ in self._stubs():
            try:
                response = status_stub(request, timeout=self.timeout)
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.NOT_FOUND:
                    return {}
                raise ServingUnavailableError(
                    f"GetModelStatus({model}) at {address}: {error.code().name} {error.details()}"
                ) from None
            reports.append(
                {
                    item.version: (
                        self.messages.state_name(item.state),
                        item.status.error_message if item.status.error_code else "",
                    )
                    for item in response.model_version_status
                }
            )
        merged = {}
        for version in set().union(*reports):
            seen = [report.get(version, ("START", "")) for report in reports]
            state = min((state for state, _ in seen), key=_rank)
            error = next((error for _, error in seen if error), "")
            merged[version] = VersionStatus(version, state, error)
        return merged

    def reload(self, config: Any) -> None:
        """Apply `config` now on every server (HandleReloadConfigRequest). After trying
        them all, ServingUnavailableError names those that refused or did not answer;
        their config poll applies the file later."""
        request = self.messages.ReloadConfigRequest()
        request.config.CopyFrom(config)
        failures = []
        for address, _, reload_stub in self._stubs():
            try:
                response = reload_stub(request, timeout=self.timeout)
            except grpc.RpcError as error:
                failures.append(f"{address}: {error.code().name} {error.details()}")
                continue
            if response.status.error_code:
                failures.append(f"{address} refused the config: {response.status.error_message}")
        if failures:
            raise ServingUnavailableError("HandleReloadConfigRequest: " + "; ".join(failures))

    def close(self) -> None:
        for channel, _, _ in self._channels.values():
            channel.close()
        self._channels.clear()


def _rank(state: str) -> int:
    return STATE_ORDER.index(state) if state in STATE_ORDER else 0
