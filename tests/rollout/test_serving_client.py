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
