"""Which address the gateway takes for the client's, and the rate-limit settings it refuses."""

from typing import Any

import pytest
from litestar.connection import ASGIConnection
from pydantic import ValidationError

from gateway.limits import client_ip
from gateway.settings import GatewaySettings


def connection(peer: str, forwarded: list[str] | None = None) -> ASGIConnection[Any, Any, Any, Any]:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded or []]
    return ASGIConnection({"type": "http", "client": (peer, 5000), "headers": headers})  # type: ignore[arg-type]


TRUSTED = GatewaySettings(trusted_proxies=["10.0.0.0/8", "192.0.2.1"])  # type: ignore[arg-type]


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    assert client_ip(connection("10.1.1.1", ["203.0.113.9"]), GatewaySettings()) == "10.1.1.1"


def test_an_untrusted_peer_cannot_forge_x_forwarded_for() -> None:
    assert client_ip(connection("198.51.100.4", ["203.0.113.9"]), TRUSTED) == "198.51.100.4"


def test_behind_trusted_proxies_the_right_most_untrusted_hop_is_the_client() -> None:
    # The client forged the first entry; 203.0.113.9 is who reached our first proxy.
    chain = ["6.6.6.6, 203.0.113.9", "10.2.2.2"]
    assert client_ip(connection("10.1.1.1", chain), TRUSTED) == "203.0.113.9"


def test_a_malformed_chain_falls_back_to_the_peer() -> None:
    assert client_ip(connection("10.1.1.1", ["203.0.113.9, not-an-ip"]), TRUSTED) == "10.1.1.1"


def test_unknown_rate_limited_routes_are_refused() -> None:
    with pytest.raises(ValidationError, match="unknown routes"):
        GatewaySettings(rate_limits={"regsiter": 5})
    assert GatewaySettings(rate_limits={"register": 5}).route_rate_limit("register") == 5
    assert GatewaySettings(rate_limit=7).route_rate_limit("login") == 7
