"""ModelService calls reach every model server a headless Service names."""

from __future__ import annotations

import pytest

from rollout.errors import ServingUnavailableError
from rollout.serving_client import resolve_addresses


def test_a_plain_target_is_used_as_it_is() -> None:
    assert resolve_addresses("127.0.0.1:8500") == ["127.0.0.1:8500"]


def test_a_dns_target_names_every_address_it_resolves_to() -> None:
    assert resolve_addresses("dns:///localhost:8500") in (
        ["127.0.0.1:8500"],
        ["127.0.0.1:8500", "[::1]:8500"],
        ["[::1]:8500"],
    )


def test_an_unresolvable_target_is_a_serving_error_not_a_crash() -> None:
    with pytest.raises(ServingUnavailableError, match="cannot resolve"):
        resolve_addresses("dns:///no-such-host.invalid:8500")


def test_a_version_is_only_as_far_along_as_its_slowest_server() -> None:
    from rollout.serving_client import ServingClient

    client = ServingClient("dns:///unused:8500", timeout_seconds=1)
    messages = client.messages

    def server(*versions: tuple[int, int, str]):
        def status(request, timeout):
            response = messages.GetModelStatusResponse()
            for version, state, error in versions:
                item = response.model_version_status.add(version=version, state=state)
                if error:
                    item.status.error_code = 3
                    item.status.error_message = error
            return response

        return status

    available, loading = 30, 20
    client._stubs = lambda: [
        ("a:8500", server((1, available, ""), (2, available, "")), None),
        ("b:8500", server((1, available, ""), (3, loading, "no such file")), None),
    ]
    states = {v: (s.state, s.error) for v, s in client.version_states("mnist").items()}
    assert states == {
        1: ("AVAILABLE", ""),
        2: ("START", ""),  # server b has not started it
        3: ("START", "no such file"),
    }
