"""/health and /ready for operators and orchestrators."""

from typing import Any

from litestar import Response, get
from litestar.datastructures import State
from litestar.di import NamedDependency

from bus.heartbeat import live_instances
from bus.rpc import BusClient
from gateway.state import gateway_of
from schemas import streams
from schemas.commands import Ping
from schemas.replies import Pong


@get("/health", summary="Liveness", include_in_schema=True)
async def health() -> dict[str, str]:
    """200 while the process serves requests."""
    return {"status": "ok"}


@get("/ready", summary="Readiness: Redis and live handler instances")
async def ready(state: State) -> Response[dict[str, Any]]:
    """200 when Redis answers and every service has a live instance; 503 otherwise."""
    gateway = gateway_of(state)
    checks: dict[str, Any] = {}
    try:
        await gateway.redis.ping()
        checks["redis"] = "ok"
        services = {
            name: await live_instances(gateway.redis, gateway.settings.bus, name)
            for name in gateway.settings.ready_services
        }
    except Exception as exc:  # any Redis failure means not ready, with the reason
        checks["redis"] = f"unreachable: {type(exc).__name__}"
        services = {}
    checks["services"] = {name: {"instances": found} for name, found in services.items()}
    ok = checks["redis"] == "ok" and all(services.get(n) for n in gateway.settings.ready_services)
    return Response({"status": "ready" if ok else "not ready", **checks}, status_code=200 if ok else 503)


@get("/v1/ping", summary="A round trip through the bus to the users service")
async def ping(bus: NamedDependency[BusClient]) -> Pong:
    """Pong from a users instance: the gateway, Redis and a handler all work."""
    return await bus.request(streams.USERS_PING, Ping(), Pong)


ROUTES = [health, ready, ping]
