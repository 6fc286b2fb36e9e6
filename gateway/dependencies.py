"""Litestar dependencies: the bus client, the settings, the caller's verified claims.

Each takes the request, not ``state: State``: Litestar copies the app state into a new
State (and a new lock) for every parameter so annotated, on every request.
"""

from litestar import Request
from litestar.datastructures import State
from litestar.di import Provide

from gateway.resilience import ResilientBusClient
from gateway.settings import GatewaySettings
from gateway.state import gateway_of
from gateway.tokens import Claims, bearer_token


def provide_bus(request: Request[object, object, State]) -> ResilientBusClient:
    """The process's request-reply client (every request under its service's resilience policy)."""
    return gateway_of(request.app.state).bus


def provide_settings(request: Request[object, object, State]) -> GatewaySettings:
    """The gateway's settings."""
    return gateway_of(request.app.state).settings


async def provide_claims(request: Request[object, object, State]) -> Claims:
    """The caller, from a valid bearer token; 401 otherwise."""
    token = bearer_token(request.headers.get("authorization"))
    return await gateway_of(request.app.state).verifier.verify(token)


DEPENDENCIES = {
    "bus": Provide(provide_bus, sync_to_thread=False),
    "settings": Provide(provide_settings, sync_to_thread=False),
    "claims": Provide(provide_claims),
}
