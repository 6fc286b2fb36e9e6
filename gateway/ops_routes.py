"""/health, /ready and /metrics for operators and orchestrators."""

from typing import Any

from litestar import Response, get
from litestar.handlers import HTTPRouteHandler

from bus.heartbeat import live_instances
from gateway.metrics import MEDIA_TYPE
from gateway.state import Gateway
from schemas import streams
from schemas.commands import Ping
from schemas.replies import Pong


def routes(gateway: Gateway) -> list[HTTPRouteHandler]:
    """The operators' routes of ``gateway`` (see ``gateway.app`` on why routes close over it)."""

    @get("/health", summary="Liveness", include_in_schema=True)
    async def health() -> dict[str, str]:
        """200 while the process serves requests."""
        return {"status": "ok"}

    @get("/ready", summary="Readiness: Redis and live handler instances")
    async def ready() -> Response[dict[str, Any]]:
        """200 when Redis answers and every service has a live instance; 503 otherwise."""
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
        # The breaker says how this gateway sees each service, beside what the heartbeats say.
        checks["services"] = {
            name: {
                "instances": found,
                "breaker": gateway.downstreams.service(name).state,
                "in_flight": gateway.downstreams.service(name).in_flight,
            }
            for name, found in services.items()
        }
        ok = checks["redis"] == "ok" and all(services.get(n) for n in gateway.settings.ready_services)
        return Response({"status": "ready" if ok else "not ready", **checks}, status_code=200 if ok else 503)

    @get("/v1/ping", summary="A round trip through the bus to the users service")
    async def ping() -> Pong:
        """Pong from a users instance: the gateway, Redis and a handler all work."""
        return await gateway.bus.request(streams.USERS_PING, Ping(), Pong)

    @get("/metrics", summary="Prometheus metrics", media_type=MEDIA_TYPE, cache_control=None)
    async def metrics() -> Response[bytes]:
        """HTTP requests, bus calls per service, circuit breakers and in-flight calls (text format 0.0.4)."""
        return Response(gateway.metrics.render(), media_type=MEDIA_TYPE)

    return [health, ready, ping, metrics]
